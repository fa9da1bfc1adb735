"""Run :func:`engine.training.loop.train_loop_per_worker` on Ray Train (``TorchTrainer``, V2).

DDP-style data parallelism over gloo on CPU (NCCL with GPUs): Ray starts ``num_workers`` worker
processes, sets up the torch process group, and each worker runs the loop on its shard of owners.
Checkpoints land under ``<output>/ray_train/``; running again with the same output resumes.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def init_ray(address: str | None = None, dashboard: bool = True, num_cpus: int | None = None):
    """Start Ray embedded (no address) or join a cluster (``auto`` or ``HOST:PORT``).

    The dashboard is on by default because Ray's state API needs it: Train V2's placement-group
    cleaner queries it to free the CPUs of trials that ASHA stopped. It listens on 127.0.0.1."""
    import ray

    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Workers print the per-epoch line themselves; Train's print patch would echo it twice.
    env = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    kwargs = {"include_dashboard": dashboard, "dashboard_host": "127.0.0.1",
              "log_to_driver": True, "configure_logging": True, "logging_level": "WARNING",
              "runtime_env": {"env_vars": env}}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    return ray


def worker_resources(workers: int) -> tuple[float, int]:
    """CPUs per worker and torch threads per worker for ``workers`` workers on the CPUs Ray sees.

    More workers than CPUs get fractional CPUs (with a one-line warning) instead of waiting
    forever for resources that will never appear."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    if workers > cpus:
        per = cpus / workers
        print(f"warning: {workers} workers > {cpus:g} CPUs Ray sees; giving each worker "
              f"{per:.2f} CPU (expect them to share cores)", file=sys.stderr, flush=True)
        return per, 1
    return 1.0, max(1, int(cpus // workers))


def run_torch_trainer(config: dict, workers: int, output: str | Path, max_failures: int = 2,
                      use_gpu: bool = False, name: str = "ray_train") -> dict | None:
    """Launch the loop on ``workers`` Ray Train workers; return rank 0's result dict."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from engine.training.loop import train_loop_per_worker

    cpus, threads = worker_resources(workers)
    config = dict(config, context="ray_train")
    if not config.get("num_threads"):  # 0 = split the CPUs Ray sees among the workers
        config["num_threads"] = threads
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(
            name=name,
            storage_path=str(Path(output).resolve()),
            failure_config=FailureConfig(max_failures=max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
            checkpoint_config=CheckpointConfig(num_to_keep=3,
                                               checkpoint_score_attribute="val_recall@10",
                                               checkpoint_score_order="max"),
        ),
    )
    result = trainer.fit()
    return result.return_value

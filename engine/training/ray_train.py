"""Run :func:`engine.training.loop.train_loop_per_worker` on Ray Train (``TorchTrainer``, V2).

DDP-style data parallelism over gloo on CPU (NCCL with GPUs): Ray starts ``num_workers`` worker
processes, sets up the torch process group, and each worker runs the loop on its shard of owners.
Checkpoints land under ``<output>/ray_train/``; running again with the same output resumes.
:func:`run_torch_trainer` is the one place a ``TorchTrainer`` is built and run: the training jobs
(``jobs.common.launch``) and ``tune.search`` trials (with Tune's ``TuneReportCallback``) call it.

Starting or joining Ray goes through :func:`init_ray`, which pins the cluster's address for
everything Ray spawns (``RAY_ADDRESS``), binds an embedded Ray to 127.0.0.1, and sends Ray's own
log lines to a file instead of the console.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.errors import BadInput

KEEP_CHECKPOINTS = 3  # checkpoint folders a run keeps under <output>/ray_train
LOG_FILE = "ray.log"  # Ray's own driver-side log lines, in the run folder
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NODES_FILE = "worker_nodes.jsonl"  # one line per worker and attempt: where it ran
PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
# Env vars every Ray process of a run sees (Train copies them from the driver's environment to
# its controller and workers; the job's runtime_env carries them to every other actor).
QUIET_ENV = {
    # workers print the per-epoch line themselves; Train's print patch would echo it twice
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_DEDUP_LOGS": "1",
    # Train's worker logging resets each worker's root logger to INFO, which prints Train's own
    # "Reporting training result ..." line (its logger is named by file path, not ray.train)
    "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0",
}
# Embedded (single-machine) runs only: the preemption watcher follows cloud node drains, which
# do not happen on one machine, and its actor start logs a core_worker error on every run.
EMBEDDED_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Train V2's placement-group cleaner asks the state API (served by the dashboard) every second
# whether Train's controller is still alive, and logs a warning each time it cannot ask.
CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
_set_env: list[str] = []  # env vars init_ray set, removed again by shutdown_ray


START_TRIES = 3  # embedded Ray: starts of the local node before giving up (init_ray)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setenv(name: str, value: str, force: bool = True) -> None:
    if force or name not in os.environ:
        if name not in os.environ:
            _set_env.append(name)
        os.environ[name] = value


def route_ray_logs(log_dir: str | Path | None) -> Path | None:
    """Send the driver's ``ray`` log records (INFO and up: start-up notices, the token-auth
    warning, Train's progress notes) to ``<log_dir>/ray.log``; only errors stay on the console.
    Without ``log_dir`` the console shows warnings and errors."""
    log = logging.getLogger("ray")
    for h in list(log.handlers):
        log.removeHandler(h)
    log.propagate = False
    console = logging.StreamHandler(sys.stderr)
    path = None
    if log_dir is not None:
        path = Path(log_dir) / LOG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        log.addHandler(logging.FileHandler(path, encoding="utf-8"))
        console.setLevel(logging.ERROR)
    else:
        console.setLevel(logging.WARNING)
    log.addHandler(console)
    for h in log.handlers:
        h.setFormatter(logging.Formatter(LOG_FORMAT))
    log.setLevel(logging.INFO)
    return path


def _token_available() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").exists())


def _resolve_address(address: str) -> str:
    """HOST:PORT of the cluster ``address`` names (``auto`` is resolved by connecting once)."""
    import ray

    if address != "auto":
        return address
    # configure_logging=False would drop the handlers route_ray_logs set
    ray.init(address="auto", log_to_driver=False, configure_logging=True,
             logging_level=logging.INFO, logging_format=LOG_FORMAT)
    gcs = ray.get_runtime_context().gcs_address
    ray.shutdown()
    return gcs


def quiet_cleaner() -> None:
    """Ray's ``worker_process_setup_hook`` for an embedded Ray without a dashboard: the
    placement-group cleaner's "Failed to query Ray Train Controller actor state" warnings (one a
    second, on the console) are dropped. Its question has no use there: the embedded cluster
    ends with the driver, and every placement group with it."""
    logging.getLogger(CLEANER_LOGGER).setLevel(logging.ERROR)


def init_ray(address: str | None = None, dashboard: bool = True, num_cpus: float | None = None,
             log_dir: str | Path | None = None, dedup_logs: bool = True):
    """Start Ray embedded (no address) or join a cluster (``auto`` or ``HOST:PORT``).

    Whatever it starts or joins, the cluster's address goes into ``RAY_ADDRESS`` of this process
    and of every process Ray spawns for the job, so Ray's own actors (Train's placement-group
    cleaner uses the state API) never guess among several Ray instances on one machine.
    Embedded Ray binds its services to 127.0.0.1 on a port chosen here. The dashboard is on by
    default because the state API needs it; it listens on 127.0.0.1. Without it (embedded Ray only:
    a cluster's dashboard is the cluster's), Train's placement-group cleaner cannot ask the state
    API, and :func:`quiet_cleaner` keeps its warnings off the console (about 0.2 GB less:
    docs/benchmarks.md, round 8). With ``log_dir``, Ray's own log lines go to ``<log_dir>/ray.log``
    (see :func:`route_ray_logs`). ``dedup_logs=False`` turns off Ray's folding of alike lines from
    several processes (read when Ray is imported, so it takes effect when Ray is not imported yet):
    the lines of concurrent Tune trials differ only in their figures, and Ray would print one of
    them with a "[repeated 2x across cluster]" note."""
    if not dedup_logs:
        _setenv("RAY_DEDUP_LOGS", "0", force=False)
    if not address and "ray" not in sys.modules:
        # Ray's single-machine mode (its default on macOS/Windows): the node's address is
        # 127.0.0.1, so GCS, raylet, agents and workers listen on loopback only. Read once when
        # Ray is imported, by this process and by every process Ray starts.
        _setenv(LOOPBACK_ENV, "0", force=False)
    if address and _token_available():
        # `ray start` turns token auth on by default, but a driver that joins sends the token
        # only when told to (read when Ray is imported)
        _setenv("RAY_AUTH_MODE", "token", force=False)
    import ray

    if ray.is_initialized():
        return ray
    route_ray_logs(log_dir)
    env = dict(QUIET_ENV) if dedup_logs else {**QUIET_ENV, "RAY_DEDUP_LOGS": "0"}
    if address:
        try:
            gcs = _resolve_address(address)
        except ConnectionError as exc:  # auto: none running, or several and no RAY_ADDRESS
            raise BadInput(f"--address {address}: {str(exc).splitlines()[0]}") from None
    else:
        env.update(EMBEDDED_ENV)
        gcs = f"127.0.0.1:{_free_port()}"
        # read by Ray when it starts the head node (the port cannot be passed to ray.init)
        _setenv("RAY_GCS_SERVER_PORT", gcs.rsplit(":", 1)[1])
    for name, value in env.items():
        _setenv(name, value, force=False)  # a user's own setting wins
    _setenv("RAY_ADDRESS", gcs)
    # Worker processes log warnings and up (Ray's INFO notes stay in Ray's session logs); set
    # on the job only: ray.init(logging_config=...) would also print to this driver's console.
    job = ray.job_config.JobConfig()
    job.set_py_logging_config(ray.LoggingConfig(log_level="WARNING"))
    kwargs = {"include_dashboard": dashboard, "dashboard_host": "127.0.0.1",
              "log_to_driver": True, "job_config": job,
              # keeps the handlers set above (configure_logging=False would drop them)
              "configure_logging": True, "logging_level": logging.INFO,
              "logging_format": LOG_FORMAT,
              "runtime_env": {"env_vars": {**{k: os.environ[k] for k in env}, "RAY_ADDRESS": gcs}}}
    if not address and not dashboard:
        kwargs["runtime_env"]["worker_process_setup_hook"] = f"{__name__}.quiet_cleaner"
    if address:
        try:
            ray.init(address=gcs, **kwargs)
        except ConnectionError as exc:
            raise BadInput(f"--address {address}: no Ray cluster answers there "
                           f"({str(exc).splitlines()[0]})") from None
    else:
        for attempt in range(1, START_TRIES + 1):
            try:
                # "local": start a new instance even though RAY_ADDRESS is now set
                ray.init(address="local", num_cpus=num_cpus, _node_ip_address="127.0.0.1",
                         **kwargs)
                break
            except Exception as exc:  # Ray raises a bare Exception for this
                # Ray gives the raylet 30 s to register with the GCS, which a machine busy with
                # other work can miss: start again on a fresh port.
                if "timed out during startup" not in str(exc) or attempt == START_TRIES:
                    raise
                print(f"Ray's local node did not start within Ray's 30 s (a busy machine?); "
                      f"starting it again ({attempt + 1} of {START_TRIES})", file=sys.stderr)
                gcs = f"127.0.0.1:{_free_port()}"
                _setenv("RAY_GCS_SERVER_PORT", gcs.rsplit(":", 1)[1])
                _setenv("RAY_ADDRESS", gcs)
                kwargs["runtime_env"]["env_vars"]["RAY_ADDRESS"] = gcs
        os.environ.pop("RAY_GCS_SERVER_PORT", None)
    return ray


def shutdown_ray() -> None:
    """``ray.shutdown()`` and unset what :func:`init_ray` put in the environment."""
    import ray

    ray.shutdown()
    while _set_env:
        os.environ.pop(_set_env.pop(), None)


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


def record_worker_node(output: str | Path, rank: int) -> None:
    """Append where this Ray Train worker runs to ``<output>/worker_nodes.jsonl`` (every worker,
    every attempt); :func:`worker_nodes` reads it back."""
    import ray

    line = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname(), "pid": os.getpid()}
    Path(output).mkdir(parents=True, exist_ok=True)
    with open(Path(output) / NODES_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def worker_nodes(output: str | Path, workers: int) -> list[list[dict]]:
    """Per attempt (worker-group start), each rank's node, from ``worker_nodes.jsonl``."""
    path = Path(output) / NODES_FILE
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [sorted(rows[i:i + workers], key=lambda r: r["rank"])
            for i in range(0, len(rows) - workers + 1, workers)]


def run_torch_trainer(config: dict, workers: int, *, storage: str | Path | None = None,
                      name: str = "ray_train", callbacks: Sequence | None = None,
                      max_failures: int = 2, use_gpu: bool = False, placement: str = "PACK",
                      worker_cpus: float | None = None, num_threads: int | None = None,
                      keep_checkpoints: int | None = KEEP_CHECKPOINTS,
                      log_level: str = "ERROR", hooks: Sequence = ()) -> dict | None:
    """Build and run the one ``TorchTrainer`` of this project (Ray Train V2): the loop on
    ``workers`` workers; return rank 0's result dict. Used by the training jobs
    (``jobs.common.launch``) and by ``tune.search`` trials with several workers.

    ``config`` is the loop's config; the run folder is ``config["output"]``, where each worker
    notes its node (every attempt; merged into ``metrics.json["worker_nodes"]`` when the loop
    wrote one). Train's own state and checkpoints go to ``<storage>/<name>`` (``storage``
    defaults to the run folder). Options:

    - ``callbacks``: Ray Train ``UserCallback``s run by the controller, e.g. Tune's
      ``TuneReportCallback`` to hand each ``ray.train.report`` to the enclosing Tune trial.
    - ``max_failures``: worker-group restarts after a failure, each from the newest checkpoint.
    - ``placement``: the workers' placement-group strategy: PACK fills a node first, SPREAD
      puts workers on different nodes where it can.
    - ``worker_cpus`` / ``num_threads``: CPUs each worker reserves and torch threads it runs;
      by default the CPUs Ray sees are split among the workers (:func:`worker_resources`), and
      ``num_threads`` defaults to ``config["num_threads"]`` unless that is 0.
    - ``keep_checkpoints``: checkpoint folders kept (None: all).
    - ``log_level``: level of Train's own console lines (``ray.train.LoggingConfig``).
    - ``hooks``: loop observers (:func:`engine.training.loop.fit`) pickled to every worker;
      production runs pass none, tests their fault injection and probes.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from engine.training.loop import train_loop_per_worker

    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    out = Path(config["output"]).resolve()
    (out / NODES_FILE).unlink(missing_ok=True)  # this invocation's placements only
    config = dict(config, context="ray_train")
    if hooks:
        config["hooks"] = list(hooks)
    if num_threads is None and config.get("num_threads"):
        num_threads = config["num_threads"]
    if worker_cpus is None or num_threads is None:
        cpus, threads = worker_resources(workers)
        worker_cpus = cpus if worker_cpus is None else worker_cpus
        num_threads = threads if num_threads is None else num_threads
    config["num_threads"] = num_threads
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": worker_cpus},
                                     placement_strategy=placement),
        run_config=RunConfig(
            name=name,
            storage_path=str(out if storage is None else Path(storage).resolve()),
            callbacks=list(callbacks) if callbacks else None,
            failure_config=FailureConfig(max_failures=max_failures),
            # Train's own console lines. At ERROR (the jobs' level) its warnings (e.g. a
            # resource request that timed out on a busy machine, with a traceback) stay in
            # Ray's session logs.
            logging_config=LoggingConfig(log_level=log_level),
            # the jobs keep the newest 3 (a resume needs the newest; each carries the best
            # epoch's weights), not the best 3 by validation plus the latest, which kept 4
            checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
        ),
    )
    result = trainer.fit().return_value
    nodes = worker_nodes(out, workers)
    metrics = out / "metrics.json"
    if nodes and metrics.exists():
        result = result if result is not None else json.loads(metrics.read_text())
        result["worker_nodes"] = nodes
        tmp = metrics.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(metrics)
    return result

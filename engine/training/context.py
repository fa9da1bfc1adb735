"""Where the per-worker loop reports to: nowhere special (local), Ray Train, or Ray Tune.

The loop calls only ``ctx.rank``, ``ctx.world_size``, ``ctx.latest_checkpoint()`` and
``ctx.report(metrics, state)``; ``state`` is the checkpoint dict (rank 0 passes it, other ranks
pass None). Ray is imported lazily, so the loop runs in a plain Python process too.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from engine.training.checkpoint import STATE_FILE, load_state, save_state
from engine.training.sync import world


class _RayBar:
    """Rank 0's progress bar inside a Ray process. Ray forwards a worker's output to the driver
    line by line, so a plain tqdm bar would print a line per refresh; Ray's ``tqdm_ray`` sends
    its state instead (at most once a second) and the driver draws one bar in place."""

    def __init__(self, iterable, total: int, desc: str):
        from ray.experimental.tqdm_ray import tqdm

        self._it, self._desc = iterable, desc
        self._bar = tqdm(desc=desc, total=total)

    def __iter__(self):
        try:
            for item in self._it:
                yield item
                self._bar.update(1)
        finally:
            self._bar.close()

    def set_postfix(self, **values) -> None:
        self._bar.set_description(" ".join([self._desc, *(f"{k}={v}" for k, v in values.items())]))


def _local_bar(iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False)


class LocalContext:
    """Single process, or a torch.distributed group started by the caller. Checkpoints go to
    ``<output>/checkpoints/epoch_NNNN/state.pt``; the newest ``keep`` are kept."""

    def __init__(self, output: str | Path, keep: int = 3):
        self.dir = Path(output) / "checkpoints"
        self.keep = keep
        self.rank, self.world_size = world()

    def _epochs(self) -> list[Path]:
        return sorted(self.dir.glob("epoch_*/" + STATE_FILE))

    def progress(self, iterable, total: int, desc: str, enabled: bool):
        """The epoch's progress bar (an iterable with ``set_postfix``)."""
        return _local_bar(iterable, total, desc, enabled)

    def latest_checkpoint(self) -> dict | None:
        files = self._epochs()
        return load_state(files[-1]) if files else None

    def report(self, metrics: dict, state: dict | None) -> None:
        if state is None or self.rank != 0:
            return
        save_state(state, self.dir / f"epoch_{state['epoch']:04d}" / STATE_FILE)
        for old in self._epochs()[: -self.keep]:
            shutil.rmtree(old.parent, ignore_errors=True)


class _RayContextBase:
    """Shared by Ray Train and Ray Tune: both hand checkpoints over as directories."""

    def _module(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def progress(self, iterable, total: int, desc: str, enabled: bool):
        return _RayBar(iterable, total, desc) if enabled else _local_bar(iterable, total, desc,
                                                                          False)

    def latest_checkpoint(self) -> dict | None:
        ckpt = self._module().get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return load_state(Path(d) / STATE_FILE)

    def report(self, metrics: dict, state: dict | None) -> None:
        mod = self._module()
        if state is None:
            mod.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            save_state(state, Path(d) / STATE_FILE)
            mod.report(metrics, checkpoint=mod.Checkpoint.from_directory(d))


class RayTrainContext(_RayContextBase):
    """Inside a ``TorchTrainer`` worker: the process group is already set up by Ray. Each
    worker notes its node in the run folder (``metrics.json["worker_nodes"]`` reports it)."""

    def __init__(self, output: str | Path | None = None):
        import ray.train

        from engine.training.ray_train import record_worker_node

        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        if output is not None:
            record_worker_node(output, self.rank)

    def _module(self):
        import ray.train

        return ray.train


class RayTuneContext(_RayContextBase):
    """A Tune function trainable that runs the loop itself (one worker per trial)."""

    rank, world_size = 0, 1

    def _module(self):
        from ray import tune

        return tune


def make_context(kind: str, output: str | Path) -> LocalContext | RayTrainContext | RayTuneContext:
    if kind == "local":
        return LocalContext(output)
    if kind == "ray_train":
        return RayTrainContext(output)
    if kind == "ray_tune":
        return RayTuneContext()
    raise ValueError(f"unknown context {kind!r}")

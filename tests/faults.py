"""Fault injection for tests only, as loop hooks (``engine.training.loop``, ``hooks``): nothing
here ships with the production loop. A Ray worker cannot import this folder, so tests that pass
these hooks to Ray register the module to be pickled by value (:func:`for_ray`)."""
from __future__ import annotations

import os
import time
from pathlib import Path


class DieOnce:
    """The last rank exits like a killed process once, early in ``epoch`` (0-based); a marker
    file in the run folder makes it happen on the first attempt only. ``delay`` seconds pass
    first, as a real kill lands inside an epoch."""

    def __init__(self, epoch: int, delay: float = 3.0):
        self.epoch, self.delay = epoch, delay

    def __call__(self, event, epoch=None, rank=0, world_size=1, output=None, **info):
        if event != "epoch_start" or epoch != self.epoch or rank != world_size - 1:
            return
        marker = Path(output) / ".fault_injected"
        if marker.exists():
            return
        marker.write_text(str(epoch))
        time.sleep(self.delay)
        print(f"[fault injection] rank {rank} exits at the start of epoch {epoch + 1}", flush=True)
        os._exit(1)


class StopAt:
    """The run stops (KeyboardInterrupt, as a Ctrl-C would) when ``epoch`` (0-based) starts."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def __call__(self, event, epoch=None, **info):
        if event == "epoch_start" and epoch == self.epoch:
            raise KeyboardInterrupt


class Slow:
    """Each epoch starts ``seconds`` late: room for a test to act from outside mid-run."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, event, **info):
        if event == "epoch_start":
            time.sleep(self.seconds)


def for_ray():
    """Let Ray pickle these hooks by value (workers do not have tests/ on their path)."""
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])

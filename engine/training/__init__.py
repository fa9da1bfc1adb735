"""Training: the per-worker loop (:mod:`engine.training.loop`) and what it needs. Only the
``*_context`` adapters know about Ray; the loop itself runs with or without it.

The public surface, for jobs, tune and the benchmarks::

    fit(cfg, ctx, hooks=()) -> Result          # one run on this worker (loop.py)
    train_loop_per_worker(config: dict)         # the same from a dict (Ray Train, Tune, jobs)
    TrainState, state_to_checkpoint, state_from_checkpoint, resume       (state.py)
    make_optimisers, Optimisers                                          (optim.py)
    train_step, train_epoch, validate, decide, final_test                (steps.py)

They are loaded on first use, so that importing ``engine.training.config`` (the CLIs do, before
parsing their flags) does not import torch.
"""
from __future__ import annotations

import importlib

_PUBLIC = {
    "fit": "loop", "Result": "loop", "train_loop_per_worker": "loop",
    "TrainState": "state", "state_to_checkpoint": "state", "state_from_checkpoint": "state",
    "resume": "state", "make_optimisers": "optim", "Optimisers": "optim",
    "train_step": "steps", "train_epoch": "steps", "validate": "steps", "decide": "steps",
    "final_test": "steps",
}
__all__ = list(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)

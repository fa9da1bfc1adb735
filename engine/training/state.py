"""What a run carries from epoch to epoch (:class:`TrainState`), and its round trip through a
checkpoint dict: :func:`state_to_checkpoint`, :func:`state_from_checkpoint`, and :func:`resume`,
which picks the checkpoint to start from and keeps the run folder's log of resumes.

A checkpoint dict holds tensors, numbers, strings, lists and dicts only, so it loads with
``torch.load(..., weights_only=True)``; what it restores, and why a resumed run draws the same
batches, is in :mod:`.checkpoint`.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from engine.errors import BadInput
from engine.training.checkpoint import rng_state, save_state, set_rng_state, unregistered
from engine.training.config import TrainConfig, config_diff, describe_diff
from engine.training.optim import Optimisers

PROGRESS_FILE = "progress.json"  # {"epoch_started": n}: how many epochs an interruption lost
RESUMES_FILE = "resumes.json"  # every resume of the run in this folder (metrics.json "resumes")
BEST_FILE = ".best_weights.pt"  # rank 0's best weights so far (renamed best_model.pt to test)


@dataclass
class TrainState:
    """The model, its optimisers and the run's counters. ``epoch`` counts finished epochs;
    ``resumes`` lists ``{"from_epoch", "epochs_lost"}`` per resume.

    The best epoch's weights are rank 0's only (only it checkpoints and tests): a deep copy in
    ``best_model``, or, with ``best_file``, that file (:meth:`keep_best`, :meth:`best_weights`,
    :meth:`restore_best`). A run that tests keeps them in its folder: they are as large as the
    model (0.23 GB at the Kaggle file's full size), and rank 0 only reads them to checkpoint and
    to test. A search trial keeps the copy: a trial that the scheduler stops never reaches an end
    that would remove a file."""

    model: nn.Module
    opts: Optimisers
    epoch: int = 0
    best: float = -1.0  # best validation Recall@10 so far, the start's included (-1: none yet)
    stale: int = 0  # epochs since ``best`` last improved
    finished: bool = False
    history: list[dict] = field(default_factory=list)
    best_model: dict | None = None
    resumes: list[dict] = field(default_factory=list)
    start: float | None = None  # validation Recall@10 of the starting weights, before epoch 1
    best_file: Path | None = None

    def keep_best(self, weights: dict | None = None) -> None:
        """Keep ``weights`` (default: the model's now) as the best: a copy in memory, or
        written to :attr:`best_file` (atomically: a reader never sees half a file)."""
        if self.best_file is None:  # the model's own tensors are views: a real copy
            self.best_model = copy.deepcopy(self.model.state_dict()) if weights is None \
                else weights
        else:
            save_state(self.model.state_dict() if weights is None else weights, self.best_file)
            self.best_model = None

    def restore_best(self, path: Path) -> None:
        """Load the best weights into the model and leave them in ``path`` (``best_model.pt``):
        :attr:`best_file` is renamed there, or the copy in memory written. Nothing of them stays
        mapped or copied afterwards (rank 0 tests next)."""
        best = self.best_weights()
        self.model.load_state_dict(best)
        del best  # the file's mapping ends here
        if self.best_file is not None:
            os.replace(self.best_file, path)
        else:
            save_state(self.best_model, path)

    def best_weights(self) -> dict | None:
        """The best weights: the copy in memory, or :attr:`best_file` mapped (its pages are
        the file's, read when used; rank 0 holds no copy of its own); None on other ranks."""
        if self.best_model is not None or self.best_file is None:
            return self.best_model
        return torch.load(self.best_file, map_location="cpu", weights_only=True, mmap=True)


def fresh_state(model: nn.Module, opts: Optimisers, chief: bool = True,
                best_file: Path | None = None) -> TrainState:
    """Epoch 0; the starting weights are the best until an epoch validates higher than they do
    (``fit`` validates them before the first epoch). ``best_file``: see :class:`TrainState`."""
    state = TrainState(model, opts, best_file=best_file if chief else None)
    if chief:
        state.keep_best()
    return state


def gather_rng_states(world_size: int) -> list[dict]:
    """Every rank's random streams, for rank 0's checkpoint (a collective: every rank calls it).
    Ranks draw different amounts (dropout over subgraphs of different sizes), so one rank's
    state would not resume another's."""
    mine = rng_state()
    if world_size == 1:
        return [mine]
    states: list = [None] * world_size
    dist.all_gather_object(states, mine)
    return states


def state_to_checkpoint(state: TrainState, cfg: TrainConfig,
                        rngs: list[dict] | None = None) -> dict:
    """The checkpoint dict of ``state`` after ``state.epoch`` epochs. ``rngs``: every rank's
    random streams (:func:`gather_rng_states`); by default this process's only. The config goes
    with it so that a resume with other settings is refused."""
    return {"model": state.model.state_dict(), **state.opts.state_dicts(),
            "rng": [rng_state()] if rngs is None else rngs,
            "epoch": state.epoch, "best": state.best, "stale": state.stale,
            "finished": state.finished, "history": state.history,
            "best_model": state.best_weights(), "resumes": state.resumes,
            "start": state.start, "config": cfg.to_dict()}


def state_from_checkpoint(ckpt: dict, model: nn.Module, opts: Optimisers,
                          rank: int = 0, best_file: Path | None = None) -> TrainState:
    """Load ``ckpt`` (:func:`state_to_checkpoint`) into ``model`` and ``opts``, restore this
    rank's random streams, and return the state to continue from (``best_file``: see
    :class:`TrainState`)."""
    model.load_state_dict(ckpt["model"])
    opts.load_state_dicts(ckpt)
    rngs = ckpt["rng"]  # one per rank; a single dict in checkpoints from before that
    set_rng_state(rngs[rank % len(rngs)] if isinstance(rngs, list) else rngs)
    state = TrainState(model, opts, epoch=ckpt["epoch"], best=ckpt["best"], stale=ckpt["stale"],
                       finished=ckpt["finished"], history=ckpt["history"],
                       resumes=ckpt.get("resumes", []), start=ckpt.get("start"),
                       best_file=best_file if rank == 0 else None)
    if rank == 0:
        state.keep_best(ckpt["best_model"])
    return state


def find_checkpoint(ctx, out: Path, cfg: TrainConfig) -> tuple[dict | None, list[Path]]:
    """The checkpoint to resume from: the context's latest, or a newer complete one in the run
    folder that Ray never registered (the worker died first); plus those unregistered files,
    which rank 0 removes once the resumed run has checkpointed. A checkpoint trained with another
    configuration is refused (BadInput naming the keys)."""
    ckpt = ctx.latest_checkpoint()
    newer, orphans = unregistered(out, -1 if ckpt is None else ckpt["epoch"])
    ckpt = newer or ckpt
    if ckpt is not None and "config" in ckpt:
        diff = config_diff(ckpt["config"], cfg.to_dict())
        if diff:
            raise BadInput(f"{out}: the checkpoint of epoch {ckpt['epoch']} was trained with "
                           f"other settings ({describe_diff(diff)})")
    return ckpt, orphans


def _log(rank: int, msg: str) -> None:
    if rank == 0:
        print(msg, flush=True)


def resume(ctx, cfg: TrainConfig, model: nn.Module, opts: Optimisers,
           rank: int = 0) -> tuple[TrainState, list[Path]]:
    """The state this attempt starts from (:func:`find_checkpoint`, else a fresh one) and the
    unregistered checkpoint files it supersedes; rank 0 of a run that tests keeps the best
    weights in the run folder (:data:`BEST_FILE`). An attempt that follows an interrupted one adds
    a resume record, with the epochs lost (the epoch started, from the progress file, minus the
    checkpoint's); rank 0 writes the records to the run folder as well."""
    out = Path(cfg.output)
    best_file = out / BEST_FILE if cfg.final_test else None
    ckpt, orphans = find_checkpoint(ctx, out, cfg)
    progress = out / PROGRESS_FILE
    # every resume is also logged in the run folder: a checkpoint that never got written (or
    # was cut short) takes the resumes it carried with it
    logged = json.loads((out / RESUMES_FILE).read_text()) if (out / RESUMES_FILE).exists() else []
    if ckpt is None:
        state = fresh_state(model, opts, chief=rank == 0, best_file=best_file)
        if progress.exists():  # an earlier attempt died before its first checkpoint
            lost = json.loads(progress.read_text())["epoch_started"]
            state.resumes = [*logged, {"from_epoch": 0, "epochs_lost": lost}]
            _log(rank, f"restarted from scratch; epochs lost to the interruption: {lost}")
    else:
        state = state_from_checkpoint(ckpt, model, opts, rank, best_file)
        if len(logged) > len(state.resumes):
            state.resumes = logged
        if not state.finished:
            lost = 0
            if progress.exists():
                lost = max(0, json.loads(progress.read_text())["epoch_started"] - state.epoch)
            state.resumes.append({"from_epoch": state.epoch, "epochs_lost": lost})
            _log(rank, f"resumed from the checkpoint of epoch {state.epoch}; "
                       f"epochs lost to the interruption: {lost}")
        else:
            _log(rank, f"run already finished at epoch {state.epoch}; not retraining")
    if rank == 0 and state.resumes != logged:
        (out / RESUMES_FILE).write_text(json.dumps(state.resumes))
    return state, orphans

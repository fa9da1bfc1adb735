"""The loop's named steps: one optimiser step (:func:`train_step`), one epoch
(:func:`train_epoch`), validation (:func:`validate`), the decision it feeds (:func:`decide`:
best weights, LR schedulers, early stopping) and the final test (:func:`final_test`).
:func:`engine.training.loop.fit` runs them in that order; the step benchmarks call
:func:`train_step` so that they time the loop's own step.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from engine.eval.baselines import evaluate_with_baselines
from engine.eval.evaluate import evaluate_scores
from engine.models import score_bias, score_fn
from engine.training.checkpoint import save_state
from engine.training.config import TrainConfig
from engine.training.heap import release_heap, reused_pages, trim_heap
from engine.training.losses import bpr_loss, loss_fn
from engine.training.optim import Optimisers
from engine.training.run_data import RunData
from engine.training.state import TrainState
from engine.training.sync import broadcast_floats

#: steps between two heap trims in an epoch (:func:`engine.training.heap.trim_heap`): often
#: enough that freed blocks do not pile up over a full-size epoch, rare enough that the pages a
#: trim returns (faulted in again by the next step, about a sixth of a full-size step when every
#: step does it: docs/benchmarks.md, round 6) cost well under 1 % of the epoch
TRIM_EVERY = 50


def _no_clock(phase: str) -> None:
    pass


def train_step(model, opts: Optimisers, batch, owner_type: str, item_type: str, l2: float,
               criterion: Callable = bpr_loss, sub=None,
               clock: Callable[[str], None] = _no_clock) -> float:
    """One optimiser step on ``batch`` (a :class:`~engine.graph.batches.Batch`): forward, the
    loss (``criterion``, :mod:`.losses`), backward, gradient sync across ranks, optimiser steps.
    Returns the loss. ``sub``: the graph to run the forward on, ``batch.sub`` by default (any
    graph whose node ids the batch's indices refer to; bench_step's full-graph arm passes the
    whole graph). ``clock(phase)`` is called as each phase ends ("forward", "loss", "backward",
    "sync", "optim"), for the step benchmarks' phase timings."""
    sub = batch.sub if sub is None else sub
    vecs = model(sub)
    clock("forward")
    loss = criterion(vecs, owner_type, item_type, batch, l2, score_bias(model, sub))
    clock("loss")
    opts.zero_grad()
    loss.backward()
    clock("backward")
    opts.sync()
    clock("sync")
    opts.step()
    value = loss.item()
    clock("optim")
    return value


def train_epoch(model, opts: Optimisers, batches, owner_type: str, item_type: str,
                l2: float, loss: str = "bpr", log_q=None, dot_loss: float = 0.0
                ) -> tuple[float, int]:
    """One pass over ``batches`` (any iterable of :class:`~engine.graph.batches.Batch`, e.g. a
    progress bar over :class:`~engine.graph.batches.BPRBatches`), a :func:`train_step` each,
    with the ``loss`` named in :mod:`.losses` (``dot_loss``: :func:`~.losses.with_dot_loss`'s
    weight). Returns (sum of loss x triples, triples) for the
    epoch's mean loss."""
    criterion = loss_fn(loss, log_q, dot_loss)
    total_loss, triples = 0.0, 0
    for step, batch in enumerate(batches, start=1):
        value = train_step(model, opts, batch, owner_type, item_type, l2, criterion)
        total_loss += value * batch.num_triples
        triples += batch.num_triples
        if step % TRIM_EVERY == 0:
            trim_heap()
        if hasattr(batches, "set_postfix"):
            batches.set_postfix(loss=f"{value:.4f}")
    return total_loss, triples


def all_mean(value: float, world_size: int) -> float:
    """``value`` averaged over the ranks (a collective when there are several)."""
    if world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world_size


@contextmanager
def borrowed_threads(node_ranks: int) -> Iterator[None]:
    """Rank 0's evaluation with the torch threads of its node's ``node_ranks`` ranks (capped by
    the CPUs this process may run on), restored afterwards: while rank 0 validates, the others
    block in a collective, and after training they have returned, so their CPUs would idle."""
    before = torch.get_num_threads()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(before, min(before * node_ranks, cpus or 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def validate(model, graph, split, batch_size: int, chief: bool,
             node_ranks: int = 1) -> tuple[float, float]:
    """Validation Recall@10 and NDCG@10 of ``model`` on ``graph`` (fit edges), computed on rank 0
    (with its node's threads, :func:`borrowed_threads`) and broadcast, so that every rank takes
    the same scheduler and early-stopping decision."""
    val = [0.0, 0.0]
    release_heap()  # the epoch's step memory: the other ranks wait through rank 0's evaluation
    if chief:
        with borrowed_threads(node_ranks):
            m = evaluate_scores(score_fn(model, graph), split.fit, split.val, split.num_items,
                                ks=(10,), batch_size=batch_size)
        val = [m["recall@10"], m["ndcg@10"]]
        release_heap()  # the evaluation's, before the next epoch's steps
    recall, ndcg = broadcast_floats(val)
    return recall, ndcg


def decide(state: TrainState, cfg: TrainConfig, val_recall: float, chief: bool = True) -> bool:
    """After epoch ``state.epoch`` validated at ``val_recall``: keep a copy of the weights if it
    is the best so far (rank 0), step the LR schedulers, and return whether to stop early
    (``cfg.patience`` epochs without a gain; never with ``cfg.fixed_lr``). Sets
    ``state.finished`` when this epoch is the run's last."""
    if val_recall > state.best:
        state.best, state.stale = val_recall, 0
        if chief:
            state.keep_best()
    else:
        state.stale += 1
    if not cfg.fixed_lr:
        for sch in state.opts.schedulers:
            sch.step(val_recall)
    stop = (not cfg.fixed_lr) and cfg.patience > 0 and state.stale >= cfg.patience
    state.finished = stop or state.epoch == cfg.epochs
    return stop


def final_test(state: TrainState, data: RunData, out: Path, batch_size: int,
               progress=False, node_ranks: int = 1) -> dict:
    """Rank 0's end of a run: save the last and the best weights, restore the best
    (:meth:`~.state.TrainState.restore_best`), and evaluate them on the test split beside the
    baselines (every non-test edge in the graph), with the threads of its node's finished ranks
    (:func:`borrowed_threads`) and freed pages reused (:func:`~.heap.reused_pages`)."""
    model = state.model
    save_state(model.state_dict(), out / "final_model.pt")
    state.restore_best(out / "best_model.pt")
    split = data.split
    with borrowed_threads(node_ranks), reused_pages():
        return evaluate_with_baselines(score_fn(model, data.graph("train")), split,
                                       stage_edges=split.train, heldout=split.test,
                                       batch_size=batch_size, progress=progress)

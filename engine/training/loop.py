"""The per-worker training loop: BPR on sampled subgraphs, validation, early stopping, test.

:func:`fit` reads top to bottom, one named step a line (the steps live in :mod:`.steps`, the
state and its checkpoints in :mod:`.state`):

1. seed every random stream; load the prepared dataset (shared storage) and make the protocol
   split, or map both from the run's graph store (one copy per node, :mod:`.run_data`); build
   the message-passing graph from *fit* edges (training minus validation);
2. build the model (:func:`make_run_model`) and its optimisers (:mod:`.optim`);
3. :func:`~.state.resume` from the latest checkpoint if there is one; with several workers,
   move the ID tables and their optimiser moments to memory shared by each node's workers
   (:mod:`.shared`);
4. validate the starting weights (a fresh run): an epoch must beat them to replace them as the
   best, so a run never ends below its start (the SVD start is a fair model on its own);
   per epoch: this rank's shard of owners in batches (every rank runs the same number of steps),
   :func:`~.steps.train_epoch` (a sampled subgraph per batch, the loss, gradient sync across
   ranks, optimiser steps); rank 0 validates on full-graph embeddings and broadcasts the result,
   so every rank takes the same :func:`~.steps.decide` (best weights, scheduler, early stopping);
   rank 0 checkpoints (:func:`~.state.state_to_checkpoint`); every rank reports;
5. restore the best epoch's weights, rebuild the graph from all non-test edges and evaluate on
   the test split beside the popularity and item-kNN baselines; write metrics.json.

Ray is not imported here: the context (:mod:`.context`) says where a worker reports. The same
function runs in a plain process (``LocalContext``), in every Ray Train worker, or as a Tune
trial's body. :func:`train_loop_per_worker` is the dict-in, dict-out entry point they call.

``hooks`` are observers, ``hook(event, **info)``, called at "data" (rank, data, graph, output:
the loaded :class:`RunData` and fit graph), "epoch_start" (epoch, rank, world_size, output) and
"checkpoint" (epoch, rank, world_size, output; after each report). Production runs pass none;
tests pass probes and fault injection through them (tests/faults.py, tests/probes.py).
"""
from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.graph.cooccur import ItemKNN
from engine.graph.sampler import BPRBatches, owner_shard, steps_per_epoch
from engine.models import count_parameters
from engine.models.init import svd_init_, svd_types
from engine.training.config import TrainConfig, make_model, owner_row_links, pair_knn
from engine.training.context import make_context
from engine.training.heap import release_heap
from engine.training.losses import positive_log_q
from engine.training.optim import make_optimisers
from engine.training.run_data import RunData
from engine.training.state import (
    PROGRESS_FILE,
    TrainState,
    gather_rng_states,
    resume,
    state_to_checkpoint,
)
from engine.training.steps import all_mean, decide, final_test, train_epoch, validate
from engine.training.sync import broadcast_parameters
from engine.training.tb import EpochWriter

Hook = Callable[..., None]


@dataclass
class Result:
    """What :func:`fit` ends with: the final state (on rank 0 after a final test, the model holds
    the best epoch's weights) and the summary :func:`train_loop_per_worker` returns: the content
    of metrics.json, ``{"best_val_recall@10", "epochs_run"}`` without a final test, or None on
    ranks other than 0."""

    state: TrainState
    summary: dict | None


def eta_line(history: list[dict], steps: int, epochs: int) -> str:
    """The epoch's time and what is left: ``"812 s (501 ms/step incl. validation), ~2.3 h left
    at most"`` -- at most, since early stopping may end the run sooner. Epoch time counts
    validation (the whole wall time of the epoch, ``epoch_wall_seconds``)."""
    walls = [h.get("epoch_wall_seconds", h["epoch_seconds"]) for h in history]  # older runs
    wall, mean = walls[-1], sum(walls) / len(walls)
    left = (epochs - history[-1]["epoch"]) * mean
    when = (f"{left / 3600:.1f} h" if left >= 3600 else f"{left / 60:.0f} min" if left >= 60
            else f"{left:.0f} s")
    return (f"{wall:.0f} s ({1000 * wall / max(steps, 1):.0f} ms/step incl. validation), "
            + (f"~{when} left at most" if left > 0 else "last epoch"))


def _log(rank: int, msg: str) -> None:
    if rank == 0:
        print(msg, flush=True)


def _call(hooks: Sequence[Hook], event: str, **info) -> None:
    for hook in hooks:
        hook(event, **info)


def seed_everything(cfg: TrainConfig) -> None:
    """Threads and every global random stream (a resume restores them all)."""
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)


def make_run_model(cfg: TrainConfig, graph, chief: bool = True):
    """The run's model; with ``id_init="svd"`` its ID tables start from the fit matrix's SVD
    (:mod:`engine.models.init`), computed on rank 0 and broadcast."""
    model = make_model(cfg, graph)
    if cfg.id_init == "svd":
        started = svd_init_(model, graph, cfg.seed) if chief else svd_types(model, graph)
        broadcast_parameters([model.emb[t].weight for t in started])
    return model


@dataclass
class EpochPlan:
    """What every epoch's batches are drawn from: this rank's shard of owners, the steps per
    epoch (the same on every rank), the owner rows the affinity term needs, and the item-kNN
    scorer of the fit graph that an item-kNN term needs (built once, read by every epoch)."""

    shard: torch.Tensor
    steps: int
    row_links: list[str] | None
    knn: ItemKNN | None = None

    @classmethod
    def make(cls, cfg: TrainConfig, graph, model, rank: int, world_size: int) -> EpochPlan:
        train_owners = torch.nonzero(graph.csr[graph.interaction].degree() > 0).flatten()
        fit_edges = int(graph.csr[graph.interaction].indices.numel())
        steps = cfg.steps_per_epoch or steps_per_epoch(
            len(train_owners), world_size, cfg.batch_size, fit_edges, cfg.pos_per_owner)
        return cls(owner_shard(train_owners, rank, world_size, cfg.seed), steps,
                   owner_row_links(cfg, model), pair_knn(model, graph))

    def batches(self, cfg: TrainConfig, graph, epoch: int, rank: int) -> BPRBatches:
        return BPRBatches(graph, self.shard, batch_size=cfg.batch_size, num_neg=cfg.num_neg,
                          fanouts=cfg.fanouts, seed=cfg.seed, epoch=epoch, rank=rank,
                          steps=self.steps, pos_per_owner=cfg.pos_per_owner,
                          neg_pool=cfg.neg_pool, neg_popularity=cfg.neg_popularity,
                          owner_rows=self.row_links, pair_knn=self.knn)


def report_epoch(ctx, state: TrainState, cfg: TrainConfig, metrics: dict,
                 orphans: list[Path]) -> list[Path]:
    """Every rank reports the epoch's metrics; rank 0 with the checkpoint. Unregistered
    checkpoint files from an earlier attempt are removed once this one is reported (they are
    superseded); returns those still to remove."""
    rngs = gather_rng_states(ctx.world_size)  # a collective: every rank
    chief = ctx.rank == 0
    ctx.report(metrics, state_to_checkpoint(state, cfg, rngs) if chief else None)
    if chief and orphans:
        for f in orphans:
            shutil.rmtree(f.parent, ignore_errors=True)
        orphans = []
    return orphans


def run_summary(cfg: TrainConfig, state: TrainState, report: dict, data: RunData,
                params: int, wall_seconds: float, world_size: int) -> dict:
    """metrics.json: the test report with the run's history, resumes, data and config."""
    return {
        **report,
        "params": params,
        # seconds spent in training epochs, summed over every attempt (validation excluded)
        "train_seconds": round(sum(h["epoch_seconds"] for h in state.history), 3),
        "wall_seconds_this_attempt": round(wall_seconds, 3),
        "best_val_recall@10": state.best,
        "start_val_recall@10": state.start,
        "epochs_run": len(state.history),
        "history": state.history,
        "resumes": state.resumes,
        "data": {"dataset": str(cfg.dataset), "kind": data.kind, **data.split.summary()},
        "config": cfg.to_dict(),
        "workers": world_size,
    }


def fit(cfg: TrainConfig, ctx, hooks: Sequence[Hook] = ()) -> Result:
    """Train, validate, checkpoint and test one run on this worker (see the module docstring).
    ``ctx``: where to report (:mod:`.context`)."""
    rank, world_size = ctx.rank, ctx.world_size
    chief = rank == 0
    seed_everything(cfg)
    out = Path(cfg.output)
    if chief:
        out.mkdir(parents=True, exist_ok=True)

    # 1. data, split, graph of fit edges
    data = RunData.load(cfg)
    split = data.split
    graph = data.graph("fit")
    _call(hooks, "data", rank=rank, data=data, graph=graph, output=out)

    # 2. model and optimisers
    model = make_run_model(cfg, graph, chief)
    opts = make_optimisers(cfg, model)
    n_params = count_parameters(model)
    _log(rank, f"model {cfg.model}: {n_params:,} parameters; graph {split.summary()}; "
               f"{world_size} worker(s)")

    # 3. resume; several workers: one copy of the ID tables and moments per node
    state, orphans = resume(ctx, cfg, model, opts, rank)
    if world_size > 1:
        opts.share(out / "shared")
    # ranks on rank 0's node: it borrows their threads to evaluate (steps.borrowed_threads)
    node_ranks = opts.node.shards.size[0] if opts.node is not None else 1

    # 4. epochs
    plan = EpochPlan.make(cfg, graph, model, rank, world_size)
    log_q = positive_log_q(graph) if cfg.logq else None
    tb = EpochWriter(out / "tensorboard", enabled=chief,
                     purge_step=state.epoch + 1 if state.epoch else None,
                     hparams=cfg.hparams())
    if state.epoch == 0 and state.start is None:  # every rank: validation is a collective
        state.start, _ = validate(model, graph, split, cfg.eval_batch_size, chief,
                                  node_ranks)
        state.best = state.start  # an epoch must beat the start to replace its weights
        _log(rank, f"before training - val_recall@10: {state.start:.4f}")
    t_train = time.perf_counter()
    while not state.finished and state.epoch < cfg.epochs:
        epoch = state.epoch
        if chief:
            (out / PROGRESS_FILE).write_text(json.dumps({"epoch_started": epoch + 1}))
        _call(hooks, "epoch_start", epoch=epoch, rank=rank, world_size=world_size, output=out)
        model.train()
        t0 = time.perf_counter()
        bar = ctx.progress(plan.batches(cfg, graph, epoch, rank), total=plan.steps,
                           desc=f"epoch {epoch + 1}/{cfg.epochs}", enabled=chief and cfg.progress)
        total_loss, triples = train_epoch(model, opts, bar, graph.owner_type, graph.item_type,
                                          cfg.l2, cfg.loss, log_q, cfg.dot_loss)
        seconds = time.perf_counter() - t0
        state.epoch = epoch + 1
        train_loss = all_mean(total_loss / max(triples, 1), world_size)
        triples_per_s = all_mean(triples / seconds, world_size) * world_size

        val_recall, val_ndcg = validate(model, graph, split, cfg.eval_batch_size, chief,
                                        node_ranks)
        stop = decide(state, cfg, val_recall, chief)
        metrics = {"epoch": state.epoch, "train_loss": train_loss, "val_recall@10": val_recall,
                   "val_ndcg@10": val_ndcg, "lr": opts.lr, "triples_per_s": triples_per_s,
                   "epoch_seconds": seconds, "best_val_recall@10": state.best,
                   "epoch_wall_seconds": time.perf_counter() - t0}
        state.history.append(metrics)
        _log(rank, f"Epoch {state.epoch}/{cfg.epochs} - train_loss: {train_loss:.4f}, "
                   f"val_recall@10: {val_recall:.4f}, val_ndcg@10: {val_ndcg:.4f}, "
                   f"lr: {opts.lr:g}, {triples_per_s:,.0f} triples/s; "
                   f"{eta_line(state.history, plan.steps, cfg.epochs)}")
        tb.epoch(state.epoch, metrics)
        orphans = report_epoch(ctx, state, cfg, metrics, orphans)
        _call(hooks, "checkpoint", epoch=state.epoch, rank=rank, world_size=world_size,
              output=out)
        if stop:
            _log(rank, f"early stopping: no val_recall@10 gain for {cfg.patience} epoch(s)")
            break
    train_seconds = time.perf_counter() - t_train
    if not cfg.final_test:  # hyper-parameter search: never look at the test split
        tb.final(len(state.history), {"best_val_recall@10": state.best})
        tb.close()
        summary = {"best_val_recall@10": state.best, "epochs_run": len(state.history)}
        return Result(state, summary if chief else None)

    # 5. best weights, test split, baselines, metrics.json (rank 0)
    if not chief:
        tb.close()
        release_heap()  # this worker's process idles until rank 0's test is done
        return Result(state, None)
    report = final_test(state, data, out, cfg.eval_batch_size,
                        lambda it, total, desc: ctx.progress(it, total=total, desc=desc,
                                                             enabled=cfg.progress),
                        node_ranks)
    summary = run_summary(cfg, state, report, data, n_params, train_seconds, world_size)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    tb.final(len(state.history), {"test_recall@10": report["test"]["recall@10"],
                                  "test_ndcg@10": report["test"]["ndcg@10"],
                                  "best_val_recall@10": state.best})
    tb.close()
    return Result(state, summary)


def train_loop_per_worker(config: dict) -> dict | None:
    """:func:`fit` from a dict, as Ray Train, Tune, the jobs and the benchmarks call it:
    ``config`` holds TrainConfig fields plus ``context`` ("local", "ray_train", "ray_tune") and,
    for tests only, ``hooks`` (see the module docstring). Returns :attr:`Result.summary`."""
    config = dict(config)
    hooks = config.pop("hooks", None) or ()
    ctx = make_context(config.pop("context", "local"), config.get("output", "runs/run"))
    return fit(TrainConfig.from_dict(config), ctx, hooks).summary

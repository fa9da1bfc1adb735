"""The per-worker training loop: BPR on sampled subgraphs, validation, early stopping, test.

One function, :func:`train_loop_per_worker`, read top to bottom:

1. load the prepared dataset (shared storage) and make the protocol split, or map both from the
   run's graph store (one copy per node, :mod:`.run_data`);
2. build the message-passing graph from *fit* edges (training minus validation);
3. build the model, split its parameters into sparse ID embeddings and dense weights;
4. resume from the latest checkpoint if the context has one; with several workers, move the ID
   tables and their optimiser moments to memory shared by each node's workers (:mod:`.shared`);
5. per epoch: this rank's shard of owners in batches (every rank runs the same number of steps),
   a sampled subgraph per batch, BPR loss, gradient sync across ranks, optimiser steps; then
   rank 0 validates on full-graph embeddings and broadcasts the result, so every rank takes the
   same scheduler / early-stopping decision; rank 0 checkpoints; every rank reports;
6. restore the best epoch's weights (a deep copy), rebuild the graph from all non-test edges and
   evaluate on the test split beside the popularity and item-kNN baselines; write metrics.json.

Ray is not imported here: ``config["context"]`` picks a reporter from :mod:`.context`. The same
function runs in a plain process (``context="local"``), in every Ray Train worker, or as a Tune
trial's body.
"""
from __future__ import annotations

import copy
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from engine.errors import BadInput
from engine.eval.baselines import evaluate_with_baselines
from engine.eval.evaluate import evaluate_scores
from engine.graph.sampler import BPRBatches, owner_shard, steps_per_epoch
from engine.models import count_parameters, score_bias, score_fn
from engine.models.init import svd_init_, svd_types
from engine.training.checkpoint import rng_state, save_state, set_rng_state, unregistered
from engine.training.config import (
    TrainConfig,
    config_diff,
    describe_diff,
    make_model,
    owner_row_links,
)
from engine.training.context import make_context
from engine.training.losses import loss_fn, positive_log_q
from engine.training.optim import Optimisers, make_optimisers
from engine.training.run_data import RunData
from engine.training.sync import (
    broadcast_floats,
    broadcast_parameters,
)
from engine.training.tb import EpochWriter

PROGRESS_FILE = "progress.json"
RESUMES_FILE = "resumes.json"  # every resume of the run in this folder (metrics.json "resumes")


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


def train_epoch(model, opts: Optimisers, batches, owner_type: str, item_type: str,
                l2: float, loss: str = "bpr", log_q=None) -> tuple[float, int]:
    """One pass over ``batches`` (any iterable of :class:`~engine.graph.batches.Batch`, e.g. a
    progress bar over :class:`BPRBatches`): forward, the ``loss`` (:mod:`.losses`), backward,
    gradient sync, optimiser steps. Returns (sum of loss x triples, triples) for the epoch's
    mean loss."""
    criterion = loss_fn(loss, log_q)
    total_loss, triples = 0.0, 0
    for batch in batches:
        vecs = model(batch.sub)
        loss = criterion(vecs, owner_type, item_type, batch, l2, score_bias(model, batch.sub))
        opts.zero_grad()
        loss.backward()
        opts.sync_and_step()
        total_loss += loss.item() * batch.num_triples
        triples += batch.num_triples
        if hasattr(batches, "set_postfix"):
            batches.set_postfix(loss=f"{loss.item():.4f}")
    return total_loss, triples


def validate(model, graph, split, batch_size: int, chief: bool) -> tuple[float, float]:
    """Validation Recall@10 and NDCG@10 of ``model`` on ``graph`` (fit edges), computed on rank 0
    and broadcast, so that every rank takes the same scheduler and early-stopping decision."""
    val = [0.0, 0.0]
    if chief:
        m = evaluate_scores(score_fn(model, graph), split.fit, split.val, split.num_items,
                            ks=(10,), batch_size=batch_size)
        val = [m["recall@10"], m["ndcg@10"]]
    recall, ndcg = broadcast_floats(val)
    return recall, ndcg


def final_test(model, best_state: dict, data: RunData, out: Path, batch_size: int,
               progress=False) -> dict:
    """Rank 0's end of a run: save the last and the best weights, restore the best, and
    evaluate them on the test split beside the baselines (every non-test edge in the graph)."""
    save_state(model.state_dict(), out / "final_model.pt")
    model.load_state_dict(best_state)
    save_state(best_state, out / "best_model.pt")
    split = data.split
    return evaluate_with_baselines(score_fn(model, data.graph("train")), split,
                                   stage_edges=split.train, heldout=split.test,
                                   batch_size=batch_size, progress=progress)


def _log(rank: int, msg: str) -> None:
    if rank == 0:
        print(msg, flush=True)


def _all_mean(value: float, world_size: int) -> float:
    if world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world_size


def _rng_states(world_size: int) -> list[dict]:
    """Every rank's random streams, for rank 0's checkpoint: ranks draw different amounts
    (dropout over subgraphs of different sizes), so one rank's state would not resume another's."""
    mine = rng_state()
    if world_size == 1:
        return [mine]
    states: list = [None] * world_size
    dist.all_gather_object(states, mine)
    return states


def _call(hooks, event: str, **info) -> None:
    for hook in hooks:
        hook(event, **info)


def _resume_state(ctx, out: Path, cfg: TrainConfig) -> tuple[dict | None, list[Path]]:
    """The state to resume from: the context's latest checkpoint, or a newer complete one in the
    run folder that Ray never registered (the worker died first); plus those unregistered files,
    which rank 0 removes once the resumed run has checkpointed. A checkpoint trained with another
    configuration is refused (BadInput naming the keys)."""
    state = ctx.latest_checkpoint()
    newer, orphans = unregistered(out, -1 if state is None else state["epoch"])
    state = newer or state
    if state is not None and "config" in state:
        diff = config_diff(state["config"], cfg.to_dict())
        if diff:
            raise BadInput(f"{out}: the checkpoint of epoch {state['epoch']} was trained with "
                           f"other settings ({describe_diff(diff)})")
    return state, orphans


def train_loop_per_worker(config: dict) -> dict | None:
    """Train, validate, checkpoint and test one run (see the module docstring). ``config`` holds
    TrainConfig fields plus ``context`` ("local", "ray_train", "ray_tune") and, for tests only,
    ``hooks``: callables ``hook(event, **info)`` called at "data" (rank, data, graph, output:
    the loaded :class:`RunData` and fit graph), "epoch_start" (epoch, rank, world_size, output)
    and "checkpoint" (after each report); production runs pass none."""
    config = dict(config)
    hooks = config.pop("hooks", None) or ()
    ctx = make_context(config.pop("context", "local"), config.get("output", "runs/run"))
    cfg = TrainConfig.from_dict(config)
    rank, world_size = ctx.rank, ctx.world_size
    chief = rank == 0
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)  # every global stream: a resume restores them all
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    out = Path(cfg.output)
    if chief:
        out.mkdir(parents=True, exist_ok=True)

    # 1-2. data, split, graph of fit edges
    data = RunData.load(cfg)
    split = data.split
    graph = data.graph("fit")
    _call(hooks, "data", rank=rank, data=data, graph=graph, output=out)
    owner_t, item_t = graph.owner_type, graph.item_type

    # 3. model and optimisers
    model = make_model(cfg, graph)
    if cfg.id_init == "svd":  # ID tables start from the fit matrix's SVD (engine.models.init)
        started = svd_init_(model, graph, cfg.seed) if chief else svd_types(model, graph)
        broadcast_parameters([model.emb[t].weight for t in started])
    opts = make_optimisers(cfg, model)
    n_params = count_parameters(model)
    _log(rank, f"model {cfg.model}: {n_params:,} parameters; graph {split.summary()}; "
               f"{world_size} worker(s)")

    # 4. resume
    start_epoch, best, stale, finished = 0, -1.0, 0, False
    # the best epoch's weights: only rank 0 tests and checkpoints, so only it keeps a copy
    best_state = copy.deepcopy(model.state_dict()) if chief else None
    history, resumes = [], []
    state, orphans = _resume_state(ctx, out, cfg)
    progress = out / PROGRESS_FILE
    # every resume is also logged in the run folder: a checkpoint that never got written (or
    # was cut short) takes the resumes it carried with it
    logged = json.loads((out / RESUMES_FILE).read_text()) if (out / RESUMES_FILE).exists() else []
    if state is None and progress.exists():  # an earlier attempt died before its first checkpoint
        lost = json.loads(progress.read_text())["epoch_started"]
        resumes = [*logged, {"from_epoch": 0, "epochs_lost": lost}]
        _log(rank, f"restarted from scratch; epochs lost to the interruption: {lost}")
    if state is not None:
        model.load_state_dict(state["model"])
        opts.load_state_dicts(state)
        rngs = state["rng"]  # one per rank; a dict in checkpoints from before that
        set_rng_state(rngs[rank % len(rngs)] if isinstance(rngs, list) else rngs)
        start_epoch, best, stale = state["epoch"], state["best"], state["stale"]
        finished, history = state["finished"], state["history"]
        best_state, resumes = state["best_model"] if chief else None, state.get("resumes", [])
        if len(logged) > len(resumes):
            resumes = logged
        if not finished:
            lost = 0
            if progress.exists():
                lost = max(0, json.loads(progress.read_text())["epoch_started"] - start_epoch)
            resumes.append({"from_epoch": start_epoch, "epochs_lost": lost})
            _log(rank, f"resumed from the checkpoint of epoch {start_epoch}; "
                       f"epochs lost to the interruption: {lost}")
        else:
            _log(rank, f"run already finished at epoch {start_epoch}; not retraining")

    if chief and resumes != logged:
        (out / RESUMES_FILE).write_text(json.dumps(resumes))
    resumed, state = state is not None, None  # its tensors are in the model and optimisers now
    # several workers: one copy of the ID tables and their moments per node (engine.training.shared)
    if world_size > 1:
        opts.share(out / "shared")

    # 5. epochs
    train_owners = torch.nonzero(graph.csr[graph.interaction].degree() > 0).flatten()
    shard = owner_shard(train_owners, rank, world_size, cfg.seed)
    fit_edges = int(graph.csr[graph.interaction].indices.numel())
    steps = cfg.steps_per_epoch or steps_per_epoch(
        len(train_owners), world_size, cfg.batch_size, fit_edges, cfg.pos_per_owner)
    row_links = owner_row_links(cfg, model)
    log_q = positive_log_q(graph) if cfg.logq else None
    tb = EpochWriter(out / "tensorboard", enabled=chief,
                     purge_step=start_epoch + 1 if resumed else None,
                     hparams=cfg.hparams())
    t_train = time.perf_counter()
    epoch = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        if finished:
            break
        if chief:
            (out / PROGRESS_FILE).write_text(json.dumps({"epoch_started": epoch + 1}))
        _call(hooks, "epoch_start", epoch=epoch, rank=rank, world_size=world_size, output=out)
        model.train()
        t0 = time.perf_counter()
        batches = BPRBatches(graph, shard, batch_size=cfg.batch_size, num_neg=cfg.num_neg,
                             fanouts=cfg.fanouts, seed=cfg.seed, epoch=epoch, rank=rank,
                             steps=steps, pos_per_owner=cfg.pos_per_owner,
                             neg_pool=cfg.neg_pool, neg_popularity=cfg.neg_popularity,
                             owner_rows=row_links)
        bar = ctx.progress(batches, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           enabled=chief and cfg.progress)
        total_loss, triples = train_epoch(model, opts, bar, owner_t, item_t, cfg.l2,
                                          cfg.loss, log_q)
        seconds = time.perf_counter() - t0
        train_loss = _all_mean(total_loss / max(triples, 1), world_size)
        triples_per_s = _all_mean(triples / seconds, world_size) * world_size

        val_recall, val_ndcg = validate(model, graph, split, cfg.eval_batch_size, chief)
        improved = val_recall > best
        if improved:
            best, stale = val_recall, 0
            if chief:
                best_state = copy.deepcopy(model.state_dict())  # a real copy, not a view
        else:
            stale += 1
        if not cfg.fixed_lr:
            for sch in opts.schedulers:
                sch.step(val_recall)
        lr = opts.lr
        stop = (not cfg.fixed_lr) and cfg.patience > 0 and stale >= cfg.patience
        finished = stop or epoch + 1 == cfg.epochs
        metrics = {"epoch": epoch + 1, "train_loss": train_loss, "val_recall@10": val_recall,
                   "val_ndcg@10": val_ndcg, "lr": lr, "triples_per_s": triples_per_s,
                   "epoch_seconds": seconds, "best_val_recall@10": best,
                   "epoch_wall_seconds": time.perf_counter() - t0}
        history.append(metrics)
        _log(rank, f"Epoch {epoch + 1}/{cfg.epochs} - train_loss: {train_loss:.4f}, "
                   f"val_recall@10: {val_recall:.4f}, val_ndcg@10: {val_ndcg:.4f}, lr: {lr:g}, "
                   f"{triples_per_s:,.0f} triples/s; {eta_line(history, steps, cfg.epochs)}")
        tb.epoch(epoch + 1, metrics)
        ckpt = None
        rngs = _rng_states(world_size)  # a collective: every rank
        if chief:
            ckpt = {"model": model.state_dict(), **opts.state_dicts(), "rng": rngs,
                    "epoch": epoch + 1, "best": best, "stale": stale, "finished": finished,
                    "history": history, "best_model": best_state, "resumes": resumes,
                    "config": cfg.to_dict()}
        ctx.report(metrics, ckpt)
        if chief and orphans:  # superseded by the checkpoint just reported
            for f in orphans:
                shutil.rmtree(f.parent, ignore_errors=True)
            orphans = []
        _call(hooks, "checkpoint", epoch=epoch + 1, rank=rank, world_size=world_size, output=out)
        if stop:
            _log(rank, f"early stopping: no val_recall@10 gain for {cfg.patience} epoch(s)")
            break
    train_seconds = time.perf_counter() - t_train
    if not cfg.final_test:  # hyper-parameter search: never look at the test split
        tb.final(len(history), {"best_val_recall@10": best})
        tb.close()
        return {"best_val_recall@10": best, "epochs_run": len(history)} if chief else None

    # 6. best weights, test split, baselines, metrics.json (rank 0)
    if not chief:
        tb.close()
        return None
    report = final_test(model, best_state, data, out, cfg.eval_batch_size,
                        lambda it, total, desc: ctx.progress(it, total=total, desc=desc,
                                                             enabled=cfg.progress))
    result = {
        **report,
        "params": n_params,
        # seconds spent in training epochs, summed over every attempt (validation excluded)
        "train_seconds": round(sum(h["epoch_seconds"] for h in history), 3),
        "wall_seconds_this_attempt": round(train_seconds, 3),
        "best_val_recall@10": best,
        "epochs_run": len(history),
        "history": history,
        "resumes": resumes,
        "data": {"dataset": str(cfg.dataset), "kind": data.kind, **split.summary()},
        "config": cfg.to_dict(),
        "workers": world_size,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    tb.final(len(history), {"test_recall@10": report["test"]["recall@10"],
                            "test_ndcg@10": report["test"]["ndcg@10"],
                            "best_val_recall@10": best})
    tb.close()
    return result

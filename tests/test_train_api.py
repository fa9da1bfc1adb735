"""The public training API (engine.training): one step, the epoch's decision, a checkpoint dict's
round trip, and fit() resuming from one to the same history."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from torch import nn

from engine.graph.sampler import BPRBatches
from engine.training import (
    TrainState,
    decide,
    fit,
    make_optimisers,
    state_from_checkpoint,
    state_to_checkpoint,
    train_step,
)
from engine.training.checkpoint import load_state, save_state, set_rng_state
from engine.training.config import TrainConfig, make_model, pair_knn
from engine.training.run_data import RunData
from engine.training.state import BEST_FILE, fresh_state

TIMING = {"epoch_seconds", "triples_per_s", "epoch_wall_seconds"}
SMALL = {"batch_size": 32, "pos_per_owner": 4, "embedding_dim": 16, "heads": 2,
         "progress": False, "max_val_owners": 100, "num_threads": 1, "steps_per_epoch": 4}


def _snapshot(ckpt: dict) -> dict:
    """What a checkpoint file would hold: a weights-only copy, detached from the live model."""
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


class MemoryContext:
    """A one-process context that keeps every reported checkpoint in memory and resumes from
    ``start`` (a checkpoint dict) when given one."""

    rank, world_size = 0, 1

    def __init__(self, start: dict | None = None):
        self.start, self.reported = start, []

    def latest_checkpoint(self):
        return self.start

    def report(self, metrics, state):
        self.reported.append(_snapshot(state))

    def progress(self, iterable, total, desc, enabled):
        return iterable


def _setup(dataset, **kw):
    cfg = TrainConfig.from_dict({"dataset": str(dataset), **SMALL, **kw})
    torch.manual_seed(cfg.seed)
    graph = RunData.load(cfg).graph("fit")
    model = make_model(cfg, graph)
    return cfg, graph, model, make_optimisers(cfg, model)


def _batch(cfg, graph, model):
    owners = torch.nonzero(graph.csr[graph.interaction].degree() > 0).flatten()
    # the model's item-kNN term (a default) reads each scored pair's value from the batch
    knn = pair_knn(model, graph)
    return next(iter(BPRBatches(graph, owners, batch_size=cfg.batch_size, num_neg=cfg.num_neg,
                                fanouts=cfg.fanouts, seed=cfg.seed, steps=1,
                                pos_per_owner=cfg.pos_per_owner, neg_pool=0,
                                neg_popularity=0.0, owner_rows=None, pair_knn=knn)))


@pytest.mark.timeout(120)
def test_train_step_lowers_the_loss_on_its_batch(tiny_playlists, one_thread):
    cfg, graph, model, opts = _setup(tiny_playlists, dropout=0.0, id_init="normal")
    model.train()
    batch = _batch(cfg, graph, model)
    phases = []
    losses = [train_step(model, opts, batch, graph.owner_type, graph.item_type, cfg.l2,
                         clock=phases.append) for _ in range(3)]
    assert phases == ["forward", "loss", "backward", "sync", "optim"] * 3
    # the same batch, no dropout: each step's loss (taken before its update) is below the last
    assert losses[0] > losses[1] > losses[2], losses


def _linear_state(cfg: TrainConfig) -> TrainState:
    model = nn.Linear(2, 1)
    return fresh_state(model, make_optimisers(cfg, model))


def test_decide_keeps_the_best_and_stops_after_patience_epochs_without_gain():
    cfg = TrainConfig(epochs=10, patience=2, lr=0.01, lr_factor=0.5, lr_patience=0, min_lr=1e-5)
    state = _linear_state(cfg)
    stops, lrs = [], []
    for epoch, recall in enumerate([0.1, 0.3, 0.2, 0.25], start=1):
        with torch.no_grad():
            state.model.weight.fill_(float(epoch))  # each epoch's weights tell it apart
        state.epoch = epoch
        stops.append(decide(state, cfg, recall))
        lrs.append(state.opts.lr)
    assert stops == [False, False, False, True]
    assert (state.best, state.stale, state.finished) == (0.3, 2, True)
    assert torch.equal(state.best_model["weight"], torch.full((1, 2), 2.0))  # epoch 2's copy
    # the plateau scheduler (lr_patience 0) halves the rate after each epoch without a gain
    assert lrs == [0.01, 0.01, 0.005, 0.0025]


@pytest.mark.timeout(60)
def test_an_epoch_gives_freed_heap_back_every_few_steps(monkeypatch):
    """Over a full-size epoch the freed blocks glibc keeps grew by a few hundred MB a node:
    every TRIM_EVERY steps a worker returns them (steps.trim_heap), and only then."""
    from types import SimpleNamespace

    from engine.training import steps

    done, trims = [], []
    monkeypatch.setattr(steps, "train_step", lambda *a, **k: done.append(1) or 0.5)
    monkeypatch.setattr(steps, "trim_heap", lambda: trims.append(len(done)))
    batches = [SimpleNamespace(num_triples=4)] * (2 * steps.TRIM_EVERY + 3)
    assert steps.train_epoch(None, None, batches, "playlist", "track", 0.0) == \
        (0.5 * 4 * len(batches), 4 * len(batches))
    assert trims == [steps.TRIM_EVERY, 2 * steps.TRIM_EVERY]


@pytest.mark.timeout(120)
def test_the_final_test_ranks_with_freed_pages_reused(tiny_playlists, tmp_path, monkeypatch):
    """The final test's score blocks are above glibc's largest map threshold, so each batch
    faulted in fresh pages (a third of its CPU time at full size): rank 0's test runs inside
    heap.reused_pages (no mapped blocks, no trimming), which sets glibc's limits where its own
    tuning ends during training and gives the heap back when it ends."""
    from contextlib import contextmanager

    from engine.training import heap, steps

    calls = []
    monkeypatch.setattr(heap, "_MALLOPT", lambda param, value: calls.append((param, value)))
    monkeypatch.setattr(heap, "release_heap", lambda: calls.append("released") or True)
    with heap.reused_pages():
        assert calls == [(heap.M_MMAP_MAX, 0), (heap.M_TRIM_THRESHOLD, 2**31 - 1)]
    # then where glibc's own tuning ends during training, and the heap given back
    assert calls[2:] == [*heap.AFTER, "released"]
    assert dict(heap.AFTER)[heap.M_TRIM_THRESHOLD] == 2 * dict(heap.AFTER)[heap.M_MMAP_THRESHOLD]

    inside = []

    @contextmanager
    def recorded():
        inside.append(True)
        yield
        inside.append(False)

    monkeypatch.setattr(steps, "reused_pages", recorded)
    monkeypatch.setattr(steps, "evaluate_with_baselines",
                        lambda *a, **k: {"test": {"inside": list(inside)}})
    cfg, _, model, opts = _setup(tiny_playlists)
    state = fresh_state(model, opts)
    report = steps.final_test(state, RunData.load(cfg), tmp_path, 64)
    assert report["test"]["inside"] == [True] and inside == [True, False]
    assert (tmp_path / "best_model.pt").exists() and (tmp_path / "final_model.pt").exists()


@pytest.mark.timeout(60)
def test_rank_0_keeps_the_best_weights_in_a_file_not_in_memory(tmp_path):
    """A run keeps its best weights in the run folder (as large as the model: 0.23 GB at the
    Kaggle file's full size), not as a copy in rank 0's memory: the file holds each best epoch's
    weights (the start's first), the checkpoint carries them, and a resume writes them back."""
    cfg = TrainConfig(epochs=10, patience=5, lr=0.01)
    model = nn.Linear(2, 1)
    best_file = tmp_path / "run" / BEST_FILE
    state = fresh_state(model, make_optimisers(cfg, model), best_file=best_file)
    start = model.weight.detach().clone()
    assert state.best_model is None and torch.equal(state.best_weights()["weight"], start)
    for epoch, recall in enumerate([0.1, 0.3, 0.2], start=1):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        state.epoch = epoch
        decide(state, cfg, recall)
        assert state.best_model is None  # nothing kept in memory
    assert torch.equal(load_state(best_file)["weight"], torch.full((1, 2), 2.0))
    ckpt = state_to_checkpoint(state, cfg)
    assert torch.equal(ckpt["best_model"]["weight"], torch.full((1, 2), 2.0))

    best_file.unlink()  # a resume on another machine: the run folder has no such file
    other = nn.Linear(2, 1)
    resumed = state_from_checkpoint(ckpt, other, make_optimisers(cfg, other), best_file=best_file)
    assert resumed.best_model is None
    assert torch.equal(resumed.best_weights()["weight"], torch.full((1, 2), 2.0))
    # the test: the model takes the best weights, and the file becomes best_model.pt
    resumed.restore_best(tmp_path / "run" / "best_model.pt")
    assert torch.equal(other.weight.detach(), torch.full((1, 2), 2.0))
    assert not best_file.exists()
    assert torch.equal(load_state(tmp_path / "run" / "best_model.pt")["weight"],
                       torch.full((1, 2), 2.0))
    ranks = state_from_checkpoint(ckpt, other, make_optimisers(cfg, other), rank=1,
                                  best_file=best_file)
    assert ranks.best_weights() is None and not best_file.exists()  # rank 0's only


def test_decide_with_fixed_lr_never_stops_and_finishes_on_the_last_epoch():
    cfg = TrainConfig(epochs=3, patience=1, lr=0.01, fixed_lr=True)
    state = _linear_state(cfg)
    stops = []
    for epoch in (1, 2, 3):
        state.epoch = epoch
        stops.append(decide(state, cfg, 0.0 if epoch > 1 else 0.5))
        assert state.finished is (epoch == 3)
    assert stops == [False, False, False] and state.stale == 2 and state.opts.lr == 0.01


@pytest.mark.timeout(120)
def test_checkpoint_dict_round_trips_every_part_of_the_state(tiny_playlists, one_thread, tmp_path):
    cfg, graph, model, opts = _setup(tiny_playlists, id_init="normal")
    model.train()
    state = fresh_state(model, opts)
    batch = _batch(cfg, graph, model)
    train_step(model, opts, batch, graph.owner_type, graph.item_type, cfg.l2)
    state.epoch, state.best, state.stale = 1, 0.25, 1
    state.history, state.resumes = [{"epoch": 1}], [{"from_epoch": 0, "epochs_lost": 1}]
    ckpt = load_state(save_state(state_to_checkpoint(state, cfg), tmp_path / "state.pt"))

    # a different model and fresh optimisers, as a new process would build them
    torch.manual_seed(cfg.seed + 1)
    other = make_model(cfg, graph)
    other.train()
    other_opts = make_optimisers(cfg, other)
    resumed = state_from_checkpoint(ckpt, other, other_opts)
    assert (resumed.epoch, resumed.best, resumed.stale, resumed.finished) == (1, 0.25, 1, False)
    assert resumed.history == state.history and resumed.resumes == state.resumes
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    assert state_to_checkpoint(resumed, cfg)["config"] == cfg.to_dict()
    # the next step (dropout draws, Adam and SparseAdam moments) is the same from both: the
    # resumed copy draws from the streams state_from_checkpoint restored; the original, which
    # has not moved since the checkpoint, from the same streams set again
    resumed_loss = train_step(other, other_opts, batch, graph.owner_type, graph.item_type, cfg.l2)
    set_rng_state(ckpt["rng"][0])
    loss = train_step(model, opts, batch, graph.owner_type, graph.item_type, cfg.l2)
    assert resumed_loss == loss
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name


def _strip(history):
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


@pytest.mark.timeout(300)
def test_fit_resumed_from_a_checkpoint_dict_gives_the_same_history(tiny_playlists, one_thread,
                                                                    tmp_path):
    cfg = TrainConfig.from_dict({"dataset": str(tiny_playlists), "epochs": 3, **SMALL,
                                 "output": str(tmp_path / "whole")})
    whole_ctx = MemoryContext()
    whole = fit(cfg, whole_ctx)
    assert [c["epoch"] for c in whole_ctx.reported] == [1, 2, 3]

    cfg2 = TrainConfig.from_dict({**cfg.to_dict(), "output": str(tmp_path / "resumed")})
    resumed_ctx = MemoryContext(start=whole_ctx.reported[0])
    resumed = fit(cfg2, resumed_ctx)
    assert resumed.summary["resumes"] == [{"from_epoch": 1, "epochs_lost": 0}]
    assert _strip(resumed.state.history) == _strip(whole.state.history)
    assert resumed.summary["test"] == whole.summary["test"]
    for name, t in whole_ctx.reported[-1]["model"].items():
        assert torch.equal(t, resumed_ctx.reported[-1]["model"][name]), name


@pytest.mark.timeout(120)
@pytest.mark.parametrize("epoch_vals, best", [([0.1, 0.2, 0.3], "start"), ([0.1, 0.6], 2)])
def test_fit_validates_the_start_and_keeps_it_unless_an_epoch_beats_it(
        tiny_playlists, one_thread, tmp_path, monkeypatch, epoch_vals, best):
    """The starting weights are validated before epoch 1: an epoch replaces them as the best
    only with a higher Recall@10, so a run whose training only loses tests its start."""
    from engine.training import loop

    vals = iter([0.5, *epoch_vals])  # the start, then one value per epoch
    monkeypatch.setattr(loop, "validate", lambda *a, **k: (next(vals), 0.0))
    cfg = TrainConfig.from_dict({"dataset": str(tiny_playlists), **SMALL, "patience": 3,
                                 "epochs": len(epoch_vals), "output": str(tmp_path / "run")})
    torch.manual_seed(cfg.seed)
    start = {k: v.clone() for k, v in
             loop.make_run_model(cfg, RunData.load(cfg).graph("fit")).state_dict().items()}
    ctx = MemoryContext()
    result = fit(cfg, ctx)
    assert result.summary["start_val_recall@10"] == 0.5
    assert ctx.reported[0]["start"] == 0.5  # checkpointed: a resume does not validate it again
    kept = load_state(tmp_path / "run" / "best_model.pt")
    if best == "start":
        assert result.summary["best_val_recall@10"] == 0.5
        assert all(torch.equal(kept[k], start[k]) for k in start)
    else:
        assert result.summary["best_val_recall@10"] == 0.6
        assert all(torch.equal(kept[k], ctx.reported[best - 1]["model"][k]) for k in kept)
        assert not all(torch.equal(kept[k], start[k]) for k in start)


def test_the_training_modules_carry_no_fault_injection():
    """Tests inject faults through fit's hooks (tests/faults.py); the loop's own modules hold no
    exit, sleep or failure switch."""
    import engine.training

    root = Path(engine.training.__file__).parent
    for name in ("loop.py", "steps.py", "state.py", "optim.py", "checkpoint.py", "context.py"):
        source = (root / name).read_text()
        for marker in ("os._exit(", "sys.exit(", "time.sleep(", "fail_at_epoch", "import faults",
                       "SIGKILL"):
            assert marker not in source, f"{name} holds {marker}"

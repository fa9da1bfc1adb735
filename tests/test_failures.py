"""Failures and resumes: exact resume, checkpoints Ray never registered, a finished or
interrupted run found before Ray starts, Ctrl-C, and a worker killed from outside.

Most tests call the loop or the job helpers directly (no Ray); the last one runs a real
2-worker job in a subprocess, kills a worker with SIGKILL, then presses Ctrl-C, then resumes."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import faults
from engine.errors import BadInput
from engine.training import loop as loop_module
from engine.training.checkpoint import load_state, rng_state, save_state, set_rng_state
from engine.training.config import TrainConfig
from engine.training.context import LocalContext
from engine.training.loop import train_loop_per_worker

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"epochs": 3, "batch_size": 32, "pos_per_owner": 4, "embedding_dim": 16, "heads": 2,
         "progress": False, "max_val_owners": 100, "num_threads": 1}


def _run(dataset, out, **kw):
    return train_loop_per_worker({"dataset": str(dataset), "output": str(out), **SMALL, **kw})


def test_rng_state_restores_every_stream_and_loads_weights_only(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    path = save_state({"rng": rng_state()}, tmp_path / "s.pt")
    first = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    set_rng_state(load_state(path)["rng"])  # weights_only=True
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(first[0], again[0])
    assert np.array_equal(first[1], again[1]) and first[2] == again[2]


class _Draws:
    """Records what every global stream gives at each epoch start (a resumed epoch must draw
    what the uninterrupted one drew)."""

    def __init__(self):
        self.seen = {}

    def __call__(self, event, epoch=None, **info):
        if event == "epoch_start":
            self.seen[epoch] = (float(torch.rand(1)), float(np.random.rand()), random.random())


@pytest.mark.timeout(240)
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tiny_playlists, tmp_path):
    whole_draws, resumed_draws = _Draws(), _Draws()
    whole = _run(tiny_playlists, tmp_path / "whole", hooks=[whole_draws])
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):  # stopped as epoch 3 starts, after 2 checkpoints
        _run(tiny_playlists, out, hooks=[faults.StopAt(2), _Draws()])
    np.random.rand(5), random.random()  # the process's streams move on meanwhile
    resumed = _run(tiny_playlists, out, hooks=[resumed_draws])
    assert resumed["resumes"] == [{"from_epoch": 2, "epochs_lost": 1}]
    assert resumed_draws.seen[2] == whole_draws.seen[2]
    for a, b in zip(whole["history"], resumed["history"]):
        assert (a["train_loss"], a["val_recall@10"], a["lr"]) == \
            (b["train_loss"], b["val_recall@10"], b["lr"])
    assert resumed["test"] == whole["test"] and resumed["baselines"] == whole["baselines"]


class _LaggingContext(LocalContext):
    """Like Ray Train after a worker died right after reporting: the newest checkpoint folder
    exists, but the context only hands back the one before it."""

    def __init__(self, output, registered: int):
        super().__init__(output)
        self.registered = registered

    def latest_checkpoint(self):
        return load_state(self.dir / f"epoch_{self.registered:04d}" / "state.pt")


@pytest.mark.timeout(240)
def test_resume_uses_a_checkpoint_ray_never_registered_and_removes_orphans(
        tiny_playlists, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_playlists, out, epochs=4, hooks=[faults.StopAt(2)])
    torn = out / "ray_train" / "checkpoint_torn" / "state.pt"  # a copy cut short by the kill
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"PK\x03\x04 cut short")
    monkeypatch.setattr(loop_module, "make_context",
                        lambda kind, output: _LaggingContext(output, registered=1))
    (out / "progress.json").write_text(json.dumps({"epoch_started": 3}))
    result = _run(tiny_playlists, out, epochs=4)
    assert result["resumes"] == [{"from_epoch": 2, "epochs_lost": 1}]
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4]
    assert not torn.parent.exists(), "the torn orphan was not removed"
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "epoch_0002" not in kept  # the unregistered folder, superseded by epoch 3
    assert len(kept) <= 3


def test_resuming_with_other_settings_is_refused_naming_the_keys(tiny_playlists, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_playlists, out, hooks=[faults.StopAt(1)])
    with pytest.raises(BadInput, match=r"lr 0\.01 -> 0\.05"):
        _run(tiny_playlists, out, lr=0.05)


def _finished(out: Path, cfg: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"config": cfg, "epochs_run": 3}))


def test_previous_run_recognises_finished_and_interrupted_runs(tmp_path):
    from jobs._train_common import previous_run

    cfg = TrainConfig(epochs=3, output=str(tmp_path / "a")).to_dict()
    out = tmp_path / "a"
    assert previous_run(cfg, out, force_new=False) is None  # nothing there: train
    _finished(out, cfg)
    assert previous_run(dict(cfg, output="moved", num_threads=4), out, False)["epochs_run"] == 3
    with pytest.raises(BadInput, match=r"finished run .*lr 0\.01 -> 0\.05.*--force-new"):
        previous_run(dict(cfg, lr=0.05), out, force_new=False)
    (out / "checkpoints" / "epoch_0001").mkdir(parents=True)
    assert previous_run(dict(cfg, lr=0.05), out, force_new=True) is None
    assert not (out / "metrics.json").exists() and not (out / "checkpoints").exists()
    save_state({"epoch": 1, "config": cfg}, out / "ray_train" / "checkpoint_x" / "state.pt")
    with pytest.raises(BadInput, match=r"interrupted run \(epoch 1\).*epochs 3 -> 5"):
        previous_run(dict(cfg, epochs=5), out, force_new=False)


GUARDED = """
import sys, time
from jobs.interrupts import sigint_guard
with sigint_guard():
    try:
        print("ready", flush=True)
        time.sleep(60)
    except KeyboardInterrupt:
        print("cleaning up", flush=True)
        time.sleep(60)  # a slow cleanup: the second Ctrl-C must not wait for it
"""


def test_a_second_ctrl_c_stops_at_once():
    proc = subprocess.Popen([sys.executable, "-c", GUARDED], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().strip() == "cleaning up"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 130
    assert time.monotonic() - t0 < 5
    assert "stopping now" in proc.stderr.read()

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

import faults
import numpy as np
import pandas as pd
import pytest
import torch

from engine.errors import BadInput
from engine.training import loop as loop_module
from engine.training.checkpoint import load_state, rng_state, save_state, set_rng_state
from engine.training.config import TrainConfig
from engine.training.context import LocalContext
from engine.training.loop import train_loop_per_worker

ROOT = Path(__file__).resolve().parents[1]
# patience 0: these tests count epochs across interruptions, so every epoch must run (on the tiny
# graph the validated start can outscore the first epochs and early stopping would end a run)
SMALL = {"epochs": 3, "batch_size": 32, "pos_per_owner": 4, "embedding_dim": 16, "heads": 2,
         "progress": False, "max_val_owners": 100, "num_threads": 1, "patience": 0}


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
    from jobs.common import previous_run

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


def _wait(cond, proc, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        assert proc.poll() is None, f"the job ended (rc {proc.returncode}) before {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _epoch_started(out: Path) -> int:
    try:
        return json.loads((out / "progress.json").read_text())["epoch_started"]
    except (OSError, ValueError):
        return 0


def _workers(out: Path) -> list[dict]:
    try:
        text = (out / "worker_nodes.jsonl").read_text()
    except OSError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip().endswith("}")]


@pytest.mark.timeout(420)
def test_sigkill_from_outside_then_ctrl_c_then_resume(tiny_playlists, tmp_path):
    """A worker killed with SIGKILL from outside (its pid from the run folder, not a fault
    injected in the loop): the run resumes from its last checkpoint. Then Ctrl-C on the job:
    exit 130 and one line naming the checkpoint and the command that resumes; that command
    finishes the run, and metrics.json records both resumes."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "jobs.train_kaggle", "--data", str(tiny_playlists),
           "--workers", "2", "--mode", "mini", "--epochs", "6", "--patience", "0",
           "--batch-size", "32", "--embedding-dim", "16", "--heads", "2", "--no-progress",
           "--output", str(out)]
    err = tmp_path / "stderr.txt"
    with open(err, "w") as err_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err_file)
        try:
            _wait(lambda: _epoch_started(out) >= 2, proc, 240, "epoch 2")
            victim = [w for w in _workers(out) if w["rank"] == 1][-1]["pid"]
            __import__("os").kill(victim, signal.SIGKILL)
            _wait(lambda: len(_workers(out)) >= 4 and _epoch_started(out) >= 4, proc, 240,
                  "the restarted workers to reach epoch 4")
            err_file.flush()
            before = err.stat().st_size
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
    lines = [ln for ln in err.read_text().splitlines() if ln.strip()]
    assert rc == 130, lines[-5:]
    # after the Ctrl-C: exactly one line (Ray's complaints about the kill come before it)
    after = [ln for ln in err.read_bytes()[before:].decode().splitlines() if ln.strip()]
    assert len(after) == 1 and after[0].startswith("interrupted: the checkpoint of epoch"), after
    resume = lines[-1].split("resume with: ", 1)[1].split()
    assert resume[:3] == ["python", "-m", "jobs.train_kaggle"]
    done = subprocess.run([sys.executable, *resume[1:]], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, 7))
    assert len(metrics["resumes"]) == 2, metrics["resumes"]
    killed, interrupted = metrics["resumes"]
    assert killed["from_epoch"] >= 1 and killed["epochs_lost"] >= 1
    assert interrupted["from_epoch"] >= 3
    assert len([p for p in (out / "ray_train").glob("checkpoint_*") if p.is_dir()]) <= 3


def test_nan_audio_features_are_counted_in_the_manifest(tiny_playlists):
    from engine.data.canonical import load_dataset
    from engine.data.features import FEATURES, join_track_features

    ds = load_dataset(tiny_playlists)
    tracks = ds.tracks.head(3)
    artists = ds.artists.set_index("artist_id")["name"].loc[tracks["artist_id"]].to_numpy()
    feats = pd.DataFrame({"id": ["a", "b", "c"], "name": tracks["name"].to_numpy(),
                          "artist": artists})
    for f in FEATURES:
        feats[f] = np.float32(0.5)
    feats.loc[0, FEATURES[0]] = np.nan
    feats.loc[1, [FEATURES[0], FEATURES[1]]] = np.nan
    notes = join_track_features(ds, feats).manifest["notes"]
    assert notes["feature_matched_tracks"] == 3
    assert notes["feature_nan_values"] == {FEATURES[0]: 2, FEATURES[1]: 1}
    assert notes["feature_nan_tracks"] == 2


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt  # as the default SIGINT handler would, mid-read


def test_ctrl_c_in_prepare_and_train_synthetic_says_what_was_kept(tmp_path, monkeypatch,
                                                                   capsys):
    from jobs import prepare, train_synthetic
    from jobs.cli import run_cli

    monkeypatch.setattr(prepare, "load_any", _interrupt)
    out = tmp_path / "prepared"
    with pytest.raises(SystemExit) as exit_:
        run_cli(prepare.main, ["--data", "x.csv", "--output", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 130 and len(lines) == 1, lines
    assert lines[0] == (f"interrupted: nothing new written to {out}; start again with: "
                        f"python -m jobs.prepare --data x.csv --output {out}")
    assert not out.exists()

    monkeypatch.setattr(train_synthetic, "session_source", _interrupt)
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        run_cli(train_synthetic.main, ["--output", str(run), "--force-new"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 130 and len(lines) == 1, lines
    assert lines[0].startswith(f"interrupted before the first checkpoint: nothing to resume in "
                               f"{run}; start again with: python -m jobs.train_synthetic")
    assert "--force-new" not in lines[0]  # resuming must not start over


def test_restarts_before_any_checkpoint_are_each_recorded(tiny_playlists, tmp_path):
    """Two attempts that die before their first checkpoint (killed mid-copy, say): the run that
    finishes records both restarts, though no checkpoint carried the first."""
    out = tmp_path / "run"
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            _run(tiny_playlists, out, epochs=1, hooks=[faults.StopAt(0)])
    result = _run(tiny_playlists, out, epochs=1)
    assert result["resumes"] == [{"from_epoch": 0, "epochs_lost": 1}] * 2

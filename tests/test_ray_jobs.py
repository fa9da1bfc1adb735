"""Ray Train through the job CLIs, in one shared Ray session: a 2-worker run, a worker killed
mid-run, more workers than CPUs, and rerunning a finished run."""
from __future__ import annotations

import functools
import json

import pytest

from jobs import train_kaggle

# a Ray run that hangs fails with its name well before the suite-wide bound
pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.timeout(240)]
COMMON = ["--mode", "mini", "--epochs", "2", "--batch-size", "32", "--embedding-dim", "16",
          "--heads", "2", "--no-progress"]


def _tags(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for f in logdir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"]) | set(acc.Tags().get("tensors", []))
    return tags


def test_two_workers_write_metrics_checkpoints_and_events(tiny_playlists, tmp_path, capsys,
                                                         monkeypatch):
    import probes  # tests/probes.py: what each worker maps, recorded through a loop hook

    from jobs import common

    out = tmp_path / "run"
    probes.for_ray()
    monkeypatch.setattr(train_kaggle, "launch",
                        functools.partial(common.launch, hooks=[probes.SharedMemoryProbe()]))
    with pytest.raises(SystemExit) as exit_:
        from jobs.cli import run_cli

        run_cli(train_kaggle.main, ["--data", str(tiny_playlists), "--workers", "2",
                                    "--output", str(out), *COMMON])
    assert exit_.value.code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["workers"] == 2 and metrics["epochs_run"] == 2
    assert {"popularity", "item_knn"} == set(metrics["baselines"])
    assert (out / "best_model.pt").exists() and (out / "final_model.pt").exists()
    assert list((out / "ray_train").rglob("state.pt")), "no Ray Train checkpoint"
    tags = _tags(out / "tensorboard")
    assert {"train/loss", "val/recall@10", "val/ndcg@10", "train/lr", "train/triples_per_s",
            "train/epoch_seconds"} <= tags
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert "_hparams_/session_end_info" in acc.PluginTagToContent("hparams")
    printed = capsys.readouterr().out
    assert "Epoch 2/2 - train_loss:" in printed and "item_knn" in printed

    # one copy per node: both ranks map the same graph store files (identical data, not copies
    # of their own) and the same shared ID tables (engine.training.shared)
    ranks = [json.loads((out / f"probe-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["data"] == ranks[1]["data"]
    store = [sorted(f for f in r["data_maps"] if f.startswith(str(out / "graph_store")))
             for r in ranks]
    assert store[0] and store[0] == store[1]
    tables = [sorted(f for f in r["table_maps"] if "gatrec-" in f) for r in ranks]
    assert tables[0] and tables[0] == tables[1]
    assert all(f.endswith("(deleted)") for f in tables[0])  # unlinked once mapped: no leftovers

    # rerunning a finished run resumes from its last checkpoint and does not retrain
    train_kaggle.main(["--data", str(tiny_playlists), "--workers", "2", "--output", str(out),
                       *COMMON])
    again = json.loads((out / "metrics.json").read_text())
    assert again["history"] == metrics["history"]
    assert "not retraining" in capsys.readouterr().out


def test_killed_worker_resumes_from_last_checkpoint(tiny_playlists, tmp_path, monkeypatch):
    import faults  # tests/faults.py: fault injection through a loop hook, not production code

    from jobs import common

    faults.for_ray()
    monkeypatch.setattr(train_kaggle, "launch",
                        functools.partial(common.launch, hooks=[faults.DieOnce(1)]))
    out = tmp_path / "run"
    train_kaggle.main(["--data", str(tiny_playlists), "--workers", "2", "--output", str(out),
                       *COMMON[:2], "--epochs", "3", *COMMON[4:]])
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / ".fault_injected").exists()
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["resumes"] == [{"from_epoch": 1, "epochs_lost": 1}]


def test_more_workers_than_cpus_warns_and_finishes(tiny_playlists, tmp_path, capsys):
    out = tmp_path / "run"
    train_kaggle.main(["--data", str(tiny_playlists), "--workers", "3", "--output", str(out),
                       *COMMON[:2], "--epochs", "1", *COMMON[4:]])
    assert json.loads((out / "metrics.json").read_text())["workers"] == 3
    assert "warning: 3 workers > 2 CPUs" in capsys.readouterr().err


def test_train_synthetic_advanced_enhanced(tiny_sessions, tmp_path, capsys):
    from jobs import train_synthetic

    out = tmp_path / "run"
    train_synthetic.main(["--data", str(tiny_sessions), "--advanced", "--model", "enhanced",
                          "--genre-weight", "0.4", "--epochs", "2", "--workers", "1",
                          "--embedding-dim", "16", "--output", str(out), "--no-progress"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["kind"] == "session" and metrics["config"]["genre_weight"] == 0.4
    assert metrics["config"]["fixed_lr"] is False
    assert "users" in capsys.readouterr().out

"""tune.search: a 4-trial, 2-epoch search with ASHA; bad search-space files."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tune import search

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_search_finishes_writes_best_config_and_asha_stops_a_trial(
        ray_session, tiny_playlists, tmp_path, capsys):
    # lr 1e-9 cannot learn, lr 0.05 can: with ASHA (grace 1, reduction factor 4) and trials run
    # one at a time, a trial below the first rung's cutoff must be stopped after epoch 1. Both
    # start from random IDs with the artist weights at 0 and no item-kNN term: the SVD start and
    # those terms rank well before any step, so on this tiny graph an untrained trial could match a
    # trained one and the comparison would be a coin toss (validation recall 0.005-0.019
    # untrained against 0.055-0.068 trained over seeds 0-2, this way).
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"type": "choice", "values": [1e-9, 0.05]},
                                 "embedding_dim": {"type": "choice", "values": [16]},
                                 "id_init": {"type": "choice", "values": ["normal"]},
                                 "knn_init": {"type": "choice", "values": [0.0]},
                                 "model_options.affinity_init": {"type": "choice",
                                                                 "values": [0.0]}}))
    out = tmp_path / "search"
    rc = search.main(["--data", str(tiny_playlists), "--trials", "4", "--max-epochs", "2",
                      "--grace-period", "1", "--reduction-factor", "4", "--concurrent", "1",
                      "--space", str(space), "--output", str(out), "--no-progress"])
    assert rc == 0
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    best = json.loads((out / "best_config.json").read_text())
    assert last_line == str(out / "best_config.json")
    assert best["trials"] == 4 and best["trials_stopped_early"] >= 1
    assert best["epochs_run"] < best["epochs_without_early_stopping"]
    assert best["config"]["lr"] == 0.05
    # every trial wrote TensorBoard curves under one log dir
    events = list((out / "trials").glob("*/tensorboard/events.out.tfevents.*"))
    assert len(events) == 4
    # ... and the HParams plugin's summary for comparing trials
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for folder in {e.parent for e in events}:
        acc = EventAccumulator(str(folder))
        acc.Reload()
        assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
        assert "hparam/best_val_recall@10" in acc.Tags()["scalars"]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"lr": {"type": "loguniform", "low": 0, "high": 1}}', "loguniform needs low > 0"),
    ('{"learning_rate": {"type": "uniform", "low": 0, "high": 1}}', "not a training option"),
    ('{"heads": {"type": "choice", "values": []}}', "non-empty list"),
    # a value training would refuse, caught by TrainConfig's own validation
    ('{"dropout": {"type": "uniform", "low": 0.0, "high": 1.5}}', "dropout"),
])
def test_bad_search_space_is_exit_2_with_one_line(tmp_path, content, message):
    space = tmp_path / "space.json"
    space.write_text(content)
    proc = subprocess.run([sys.executable, "-m", "tune.search", "--space", str(space),
                           "--output", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(space) in lines[0] and message in lines[0]
    assert "Traceback" not in proc.stderr


def _finished_trials(exp, max_epochs):
    done = {}
    for f in exp.glob("*/result.json"):
        lines = [ln for ln in f.read_text().splitlines() if ln.strip()]
        if len(lines) >= max_epochs:
            done[f] = f.read_text()
    return done


def test_resume_finishes_an_interrupted_search_without_rerunning_done_trials(
        ray_session, tiny_playlists, tmp_path, capsys):
    import signal
    import time

    out = tmp_path / "search"
    args = ["--data", str(tiny_playlists), "--trials", "4", "--max-epochs", "2", "--concurrent",
            "1", "--grace-period", "2", "--output", str(out), "--no-progress"]
    err = open(tmp_path / "stderr.txt", "w")  # noqa: SIM115 - closed after the wait
    proc = subprocess.Popen([sys.executable, "-m", "tune.search", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 240
    done = {}
    while time.time() < deadline and proc.poll() is None:
        done = _finished_trials(out / "search", 2)
        if done:
            break
        time.sleep(0.5)
    assert done, "no trial finished before the deadline"
    err.flush()
    before = (tmp_path / "stderr.txt").stat().st_size
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    rc = proc.wait(timeout=120)
    err.close()
    assert not (out / "best_config.json").exists(), "the search was not interrupted"
    # exit 130 and one line after the Ctrl-C: what was saved and the command that resumes
    after = [ln for ln in (tmp_path / "stderr.txt").read_bytes()[before:].decode().splitlines()
             if ln.strip()]
    assert rc == 130, after
    assert len(after) == 1 and after[0].startswith("interrupted:"), after
    assert f"saved in {out / 'search'}" in after[0] and after[0].endswith("--resume"), after

    rc = search.main([*args, "--resume"])
    assert rc == 0
    assert "resuming the search" in capsys.readouterr().out
    best = json.loads((out / "best_config.json").read_text())
    assert best["trials"] == 4
    for f, text in done.items():  # finished trials were not run again
        assert f.read_text() == text


def test_trials_with_two_workers_launch_a_torch_trainer(ray_session, tiny_playlists, tmp_path):
    # 2 CPUs, 2 workers per trial: the trial's own token CPU must not starve its trainer
    out = tmp_path / "search"
    rc = search.main(["--data", str(tiny_playlists), "--trials", "2", "--max-epochs", "1",
                      "--workers-per-trial", "2", "--output", str(out), "--no-progress"])
    assert rc == 0
    best = json.loads((out / "best_config.json").read_text())
    assert best["trials"] == 2 and best["epochs_run"] == 2
    assert len(list((out / "train").iterdir())) == 2  # one TorchTrainer run per trial
    # the default space can draw the defaults, so one trial is the defaults themselves
    from engine.training.config import TrainConfig

    (defaults,) = [r for r in best["table"] if r["defaults"]]
    assert defaults["config"]["lr"] == TrainConfig.lr
    assert defaults["config"]["fanouts"] == ",".join(map(str, TrainConfig().fanouts))
    assert best["defaults_val_recall@10"] == defaults["best_val_recall@10"]


def test_closing_table_shows_whole_trial_ids_and_full_headers(capsys):
    rows = [{"trial": "trial_8a9e59b6_1_dropout=0.1234,embedding_dim=64_2026-12-04",
             "trial_id": "8a9e59b6_00000",
             "number": search.trial_number("t1", "8a9e59b6_00000", 9),
             "config": {"dropout": 0.123456, "embedding_dim": 64, "genre_weight": 0.5},
             "epochs": 2, "best_val_recall@10": 0.25, "stopped_early": False, "error": None},
            {"trial": "t2", "trial_id": "8a9e59b6_00001", "number": 2, "config": {},
             "epochs": 0, "best_val_recall@10": float("nan"), "stopped_early": True,
             "error": "boom"}]
    search.print_table(rows)
    header, first, second = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["trial", "id", "dropout", "embedding_dim", "genre_weight",
                              "epochs", "best", "val", "R@10", "stopped"]
    assert first.split()[:2] == ["#1", "8a9e59b6_00000"] and "0.1235" in first
    assert second.split()[:2] == ["#2", "8a9e59b6_00001"] and second.endswith("ERROR boom")


def test_trial_numbers_come_from_tunes_folder_names():
    """Tune 2.60's trial ids are 8 hex digits without a counter; one made of decimal digits only
    was read as a counter (trial "#25722107" in a 24-trial search)."""
    folder = "trial_25722106_3_dropout=0.2831,embedding_dim=32_2026-12-07_05-52-19"
    assert search.trial_number(folder, "25722106", 7) == 3
    assert search.trial_number("trial_57224c9d_1_dropout=0.1", "57224c9d", 7) == 1
    assert search.trial_number("elsewhere", "25722106", 7) == 7
    assert search.trial_number("elsewhere", "8a9e59b6_00003", 7) == 4

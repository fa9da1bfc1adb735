"""Training and tuning CLIs on bad input: exit status 2, one stderr line naming the problem, no
traceback, nothing started. These fail before Ray starts, so they are fast."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def _one_line_exit_2(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_the_run_folders_names_agree_with_the_loops():
    """jobs.common names what --force-new removes without importing torch; the loop writes it."""
    from engine.training import state
    from jobs.common import BEST_FILE, RUN_STATE

    assert BEST_FILE == state.BEST_FILE
    assert {BEST_FILE, state.PROGRESS_FILE, state.RESUMES_FILE} <= set(RUN_STATE)


def test_unknown_mode(tmp_path):
    _one_line_exit_2(_run("jobs.train_kaggle", "--mode", "huge", "--output", str(tmp_path / "o")),
                     "huge")


def test_missing_data_file(tmp_path):
    missing = tmp_path / "nope.csv"
    _one_line_exit_2(_run("jobs.train_kaggle", "--data", str(missing), "--output",
                          str(tmp_path / "o")), str(missing))


def test_wrong_header(tmp_path):
    bad = tmp_path / "spotify_dataset.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    out = tmp_path / "o"
    _one_line_exit_2(_run("jobs.train_kaggle", "--data", str(bad), "--output", str(out)), str(bad))
    assert not (out / "dataset").exists()


def test_truncated_mpd_slice(tmp_path, shared_data):
    src = (shared_data / "mpd" / "mpd.slice.0-999.head29.json").read_bytes()
    folder = tmp_path / "mpd"
    folder.mkdir()
    (folder / "mpd.slice.0-999.json").write_bytes(src[: len(src) // 2])
    _one_line_exit_2(_run("jobs.train_kaggle", "--data", str(folder), "--output",
                          str(tmp_path / "o")), "mpd.slice.0-999.json")


@pytest.mark.parametrize("flag, value", [("--workers", "0"), ("--genre-weight", "1.5"),
                                         ("--lr", "-1"), ("--epochs", "0")])
def test_bad_option_values(tmp_path, flag, value):
    _one_line_exit_2(_run("jobs.train_kaggle", flag, value, "--output", str(tmp_path / "o")), flag)


def test_bad_config_file(tmp_path):
    cfg = tmp_path / "best_config.json"
    cfg.write_text('{"config": {"learning_rate": 0.1}}')
    _one_line_exit_2(_run("jobs.train_kaggle", "--config", str(cfg), "--output",
                          str(tmp_path / "o")), str(cfg), "learning_rate")


def test_synthetic_rejects_playlist_dataset(tmp_path, tiny_playlists):
    _one_line_exit_2(_run("jobs.train_synthetic", "--data", str(tiny_playlists), "--output",
                          str(tmp_path / "o")), "train_kaggle")


def test_unwritable_output(tmp_path, tiny_playlists):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_exit_2(_run("jobs.train_kaggle", "--data", str(tiny_playlists), "--output",
                          str(blocker / "run")), str(blocker))


def test_bad_genres_file_fails_before_training(tmp_path, tiny_playlists):
    genres = tmp_path / "genres.csv"
    genres.write_text("artist,tags\nx,rock\n")
    _one_line_exit_2(_run("jobs.train_kaggle", "--data", str(tiny_playlists), "--genres",
                          str(genres), "--output", str(tmp_path / "o")), str(genres))


def test_run_dataset_is_reused_when_the_source_is_unchanged(tmp_path, shared_data):
    from engine.data.load import load_any
    from jobs.common import run_dataset

    src = shared_data / "mpd" / "slices"
    first = run_dataset(lambda: load_any(src), src, tmp_path, 50, 0)
    stamp = (first / "manifest.json").stat().st_mtime_ns

    def must_not_parse():
        raise AssertionError("re-parsed an unchanged source")

    assert run_dataset(must_not_parse, src, tmp_path, 50, 0) == first
    assert (first / "manifest.json").stat().st_mtime_ns == stamp
    # a different subset is a different run dataset
    run_dataset(lambda: load_any(src), src, tmp_path, 60, 0)
    assert (first / "manifest.json").stat().st_mtime_ns != stamp


@pytest.mark.parametrize("content, key", [('{"lr": "fast"}', "lr"), ('{"epochs": "three"}', "epochs"),
                                          ('{"dropout": "x"}', "dropout"),
                                          ('{"num_neg": -1}', "num_neg"),
                                          ('{"config": {"fanouts": [10, 0]}}', "fanouts")])
def test_config_file_with_a_wrong_type_or_range_names_the_key(tmp_path, capsys, content,
                                                               key):
    from jobs import train_kaggle
    from jobs.cli import run_cli

    cfg = tmp_path / "cfg.json"
    cfg.write_text(content)
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exit_:  # in-process: no interpreter start per case
        run_cli(train_kaggle.main, ["--config", str(cfg), "--output", str(out)])
    err = capsys.readouterr().err
    _one_line_exit_2(subprocess.CompletedProcess([], exit_.value.code, "", err), str(cfg), key)
    assert not out.exists()


def _kaggle_csv(path: Path, playlists: int, tracks: int) -> Path:
    rows = ['"user_id","artistname","trackname","playlistname"']
    rows += [f'"u{p}","artist {t % 7}","track {p}-{t}","list {p}"'
             for p in range(playlists) for t in range(tracks)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_no_playlist_long_enough_for_the_holdout_is_exit_2_and_leaves_no_folder(tmp_path):
    csv = _kaggle_csv(tmp_path / "spotify_dataset.csv", playlists=40, tracks=8)  # < 5 + 5
    out = tmp_path / "o"
    _one_line_exit_2(_run("jobs.train_kaggle", "--data", str(csv), "--output", str(out)),
                     str(csv), "test split")
    assert not out.exists()


def test_bad_data_leaves_no_output_folder(tmp_path):
    bad = tmp_path / "spotify_dataset.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    out = tmp_path / "new" / "run"
    _one_line_exit_2(_run("jobs.train_kaggle", "--data", str(bad), "--output", str(out)),
                     str(bad))
    assert not out.exists() and not out.parent.exists()


def test_rerun_of_a_finished_run_with_other_settings_is_refused_before_ray(tmp_path):
    """A finished run is recognised from its metrics.json in seconds, without Ray; a changed
    hyper-parameter is exit 2 naming it, and metrics.json keeps what the model was trained with."""
    import json

    from engine.training.config import MODES, TrainConfig

    out = tmp_path / "run"
    out.mkdir()
    mini = MODES["mini"]
    saved = TrainConfig(epochs=mini["epochs"], batch_size=mini["batch_size"],
                        output=str(out)).to_dict()
    (out / "metrics.json").write_text(json.dumps({"config": saved, "epochs_run": 3}))
    before = (out / "metrics.json").read_text()
    t0 = __import__("time").monotonic()
    proc = _run("jobs.train_kaggle", "--mode", "mini", "--lr", "0.05", "--output", str(out))
    _one_line_exit_2(proc, str(out), "lr 0.01 -> 0.05", "--force-new")
    assert __import__("time").monotonic() - t0 < 60
    assert (out / "metrics.json").read_text() == before
    assert not (out / "ray.log").exists(), "Ray was started"


def test_rerun_of_a_finished_run_answers_from_metrics_json_without_ray(tmp_path):
    import json
    import time

    from engine.training.config import MODES, TrainConfig

    out = tmp_path / "run"
    out.mkdir()
    mini = MODES["mini"]
    m = {k: 0.1 for k in ("recall@10", "ndcg@10", "recall@50", "ndcg@50", "r_precision")}
    (out / "metrics.json").write_text(json.dumps({
        "config": TrainConfig(epochs=mini["epochs"], batch_size=mini["batch_size"]).to_dict(),
        "test": {**m, "playlists": 9, "coverable": 0.9}, "baselines": {"popularity": m},
        "data": {"kind": "playlist", "dataset": "d", "test_items": 45}, "params": 10,
        "train_seconds": 1.0, "epochs_run": 3, "workers": 2, "best_val_recall@10": 0.1}))
    t0 = time.monotonic()
    proc = _run("jobs.train_kaggle", "--mode", "mini", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 60
    assert "not retraining" in proc.stdout and "popularity" in proc.stdout
    assert not (out / "ray.log").exists(), "Ray was started"


def test_a_run_that_cannot_fit_in_memory_is_exit_2_before_ray(tmp_path, tiny_playlists, capsys,
                                                                 monkeypatch):
    """The memory estimate (engine.training.memory) is checked before Ray starts: a machine with
    too little memory ends the job with one line naming the estimate and what to change."""
    from engine.training import memory
    from jobs import train_kaggle
    from jobs.cli import run_cli

    monkeypatch.setattr(memory, "available_bytes", lambda: 200 << 20)  # 200 MB left
    monkeypatch.setattr(memory, "WORKER_BASE", 64 << 20)  # one worker fits, three do not
    monkeypatch.setattr(memory, "DRIVER_BYTES", 0)
    monkeypatch.setattr(memory, "INFER_STATES", 0)
    monkeypatch.setattr(memory, "SCORE_BYTES", 0)
    monkeypatch.setattr(memory, "KNN_BLOCK_BYTES", 0)
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exit_:
        run_cli(train_kaggle.main, ["--data", str(tiny_playlists), "--workers", "3",
                                    "--output", str(out), "--mode", "mini"])
    err = capsys.readouterr().err
    _one_line_exit_2(subprocess.CompletedProcess([], exit_.value.code, "", err), str(out),
                     "with 3 worker(s)", "0.2 GB available", "use --workers")
    assert not (out / "ray.log").exists() and not (out / "ray_train").exists()  # Ray never ran
    est = memory.check_fits(memory.TrainConfig.from_dict(
        {**memory.TrainConfig(dataset=str(out / "dataset")).to_dict(),
         "graph_store": str(out / "graph_store")}), 1, available=200 << 20)
    assert est.total <= 200 << 20


def test_the_estimate_is_the_larger_of_the_steps_and_the_evaluation():
    """While rank 0 validates or tests, the other workers wait with their step memory given
    back: the node's peak is the larger of the two phases, not their sum (which said 9.8 GB for
    a run measured at 7.2 GB)."""
    from engine.training.config import TrainConfig
    from engine.training.memory import estimate
    from tests.test_sampler import random_graph

    g, cfg = random_graph(3), TrainConfig(embedding_dim=8, heads=1)
    one, four = estimate(cfg, g, 1, 1000), estimate(cfg, g, 4, 1000)
    for est in (one, four):
        assert est.total == max(est.steps, est.evaluation)
        assert 0 < est.idle_worker < est.per_worker
        assert est.steps == est.shared + est.workers * est.per_worker + est.driver
        assert est.evaluation == (est.shared + est.workers * est.idle_worker + est.chief_extra
                                  + est.driver)
    # three more workers add their steps to one phase, only their idle memory to the other
    assert four.steps - four.shared == 4 * four.per_worker + four.driver
    assert four.evaluation - four.shared - one.evaluation + one.shared == \
        4 * four.idle_worker - one.idle_worker
    assert "while they step" in four.describe() and "while rank 0 evaluates" in four.describe()


def test_subgraph_bound_counts_every_hop():
    """1 + f1 + f1·f2 nodes per seed, repeated fanouts included; -1 (all neighbours) and the
    graph's size cap it."""
    from engine.training.config import TrainConfig
    from engine.training.memory import subgraph_nodes

    cfg = TrainConfig(batch_size=2, pos_per_owner=1, num_neg=2, neg_pool=0, fanouts=[5, 5])
    seeds = 2 + 2 * 1 * 3
    assert subgraph_nodes(cfg, 10**9) == seeds * (1 + 5 + 25)
    assert subgraph_nodes(cfg, 100) == 100
    assert subgraph_nodes(TrainConfig(fanouts=[10, -1]), 12345) == 12345


def test_report_of_a_run_without_test(tiny_playlists, tmp_path, capsys):
    """``final_test: false`` (a search trial, or a timing run) returns no test metrics: the
    report says so instead of failing on the missing keys."""
    from engine.training.loop import train_loop_per_worker
    from jobs.common import print_report

    res = train_loop_per_worker({
        "dataset": str(tiny_playlists), "output": str(tmp_path / "run"), "epochs": 1,
        "steps_per_epoch": 2, "batch_size": 32, "embedding_dim": 8, "heads": 1,
        "final_test": False, "progress": False})
    print_report(res, tmp_path / "run")
    out = capsys.readouterr().out
    assert f"best val_recall@10 {res['best_val_recall@10']:.4f} over 1 epoch(s)" in out
    assert "test split not evaluated" in out
    assert not (tmp_path / "run" / "metrics.json").exists()
    # a search trial keeps its best weights in memory: one that the scheduler stops never
    # reaches an end that would remove a file
    from engine.training.state import BEST_FILE

    assert not (tmp_path / "run" / BEST_FILE).exists()

"""jobs.report: one self-contained HTML of a tiny run and a tiny search, PNGs beside it."""
from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the report extra (matplotlib) is not installed")

from jobs import report as job
from jobs.cli import run_cli


@pytest.fixture(scope="module")
def tiny_search(tiny_playlists, tmp_path_factory) -> Path:
    """A tune.search folder in the layout and best_config.json keys tune.search writes,
    made by the loop without Ray: two trials of at most 2 epochs, one stopped after 1 (as ASHA
    would), each with its TensorBoard events under trials/<id>/tensorboard."""
    from engine.training.loop import train_loop_per_worker

    root = tmp_path_factory.mktemp("search") / "tune"
    trials = {"a1b2c3d4": (0.01, 2), "c9d0e1f2": (0.03, 1)}
    rows = []
    for tid, (lr, epochs) in trials.items():
        res = train_loop_per_worker({
            "dataset": str(tiny_playlists), "output": str(root / "trials" / tid),
            "epochs": epochs, "steps_per_epoch": 3, "lr": lr, "batch_size": 32,
            "embedding_dim": 8, "heads": 1, "patience": 0, "final_test": False,
            "progress": False})
        rows.append({"trial": f"trial_{tid}_1_lr={lr}", "trial_id": tid, "number": len(rows) + 1,
                     "config": {"lr": lr}, "epochs": epochs,
                     "best_val_recall@10": res["best_val_recall@10"],
                     "stopped_early": epochs < 2, "error": None})
    best = max(rows, key=lambda r: r["best_val_recall@10"])
    (root / "best_config.json").write_text(json.dumps({
        "config": {"lr": best["config"]["lr"], "embedding_dim": 8}, "val_recall@10":
        best["best_val_recall@10"], "trial": best["trial"], "trials": 2, "epochs_run": 3,
        "epochs_without_early_stopping": 4, "trials_stopped_early": 1, "table": rows}))
    return root


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])


def test_report_of_a_run_and_a_search(tiny_run, tiny_search, tmp_path, capsys):
    from PIL import Image

    from engine.report import read_source

    search = read_source(tiny_search)
    assert [t.stopped_early for t in search.trials] == [False, True]  # by number
    assert [t.label for t in search.trials] == ["#1 a1b2c3d4", "#2 c9d0e1f2"]
    assert all(len(t.curve["val_recall@10"]) == (1 if t.stopped_early else 2)
               for t in search.trials)
    assert search.best_trial in {t.name for t in search.trials}

    out = tmp_path / "report.html"
    run_cli_ok(capsys, str(tiny_run), str(tiny_search), "--output", str(out))
    text = out.read_text()
    parser = Images()
    parser.feed(text)
    parser.close()
    # learning curves, throughput, test bars for the run; one figure for the search
    assert len(parser.images) == 4
    assert all(src.startswith("data:image/png;base64,") for src in parser.images)
    pngs = sorted(p.name for p in tmp_path.glob("report_*.png"))
    assert pngs == ["report_learning_curves.png", "report_search_1.png",
                    "report_test_metrics.png", "report_throughput.png"]
    for p in pngs:
        with Image.open(tmp_path / p) as im:
            assert im.size[0] > 400 and len(set(im.convert("L").getdata())) > 10
    assert "best configuration" in text and search.best_trial in text
    assert "1 of 2 trials stopped early by ASHA" in text
    assert "item_knn" in text and "popularity" in text  # the baselines beside the model
    assert "src=\"http" not in text and "<script" not in text  # self-contained
    assert not list(tmp_path.glob(".*.tmp"))


def run_cli_ok(capsys, *argv):
    capsys.readouterr()
    assert job.main(list(argv)) == 0
    return capsys.readouterr().out


@pytest.mark.timeout(120)
def test_report_renders_in_headless_chromium(tiny_run, tmp_path, capsys):
    from PIL import Image

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium when it can)")
    out = tmp_path / "report.html"
    run_cli_ok(capsys, str(tiny_run), "--output", str(out))
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1200,1600",
                    out.resolve().as_uri()], check=True, timeout=100, capture_output=True)
    with Image.open(shot) as im:
        grey = im.convert("L")
        colours = set(grey.getdata())
        dark = sum(1 for v in grey.getdata() if v < 128) / (grey.size[0] * grey.size[1])
    assert len(colours) > 10, "the screenshot is blank"
    assert dark > 0.005, f"the screenshot is almost empty ({dark:.4f} dark pixels)"


def test_bad_folders_are_exit_2_with_one_line(tiny_run, tmp_path, capsys):
    def bad(*argv):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            run_cli(job.main, list(argv))
        err = capsys.readouterr().err
        assert exc.value.code == 2 and len(err.strip().splitlines()) == 1, err
        return err

    out = str(tmp_path / "r.html")
    assert "no such folder" in bad(str(tmp_path / "nope"), "--output", out)
    (tmp_path / "empty").mkdir()
    assert "neither a finished run" in bad(str(tmp_path / "empty"), "--output", out)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text("{not json")
    assert "cannot be read as JSON" in bad(str(broken), "--output", out)
    (broken / "metrics.json").write_text(json.dumps({"test": {}}))
    assert "not a finished run's metrics" in bad(str(broken), "--output", out)
    assert "must end in .html" in bad(str(tiny_run), "--output", str(tmp_path / "r.pdf"))
    assert not (tmp_path / "r.html").exists()

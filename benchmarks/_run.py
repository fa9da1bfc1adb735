"""Run a job as a subprocess and time it (shared by the benchmark scripts)."""
from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MPD = ROOT.parent / "shared" / "data" / "mpd" / "slices"


def run_job(args: list[str], log: Path) -> float:
    """Run ``python -m <args>`` from the repo root; return wall seconds; fail loudly."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, stdout=f,
                              stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed (exit {proc.returncode}); see {log}")
    return seconds


def timed(fn, name: str, spent: dict, on=lambda: True):
    """``fn`` wrapped to add its wall seconds to ``spent[name]`` (when ``on()``): how the profile
    scripts time the engine's own functions in place, in a process of their own."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if on():
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
    return wrapped


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def load() -> str:
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def quick_data_args(p, output: str, sample: bool = True) -> None:
    """The options of a benchmark on quick mode's data (:func:`quick_dataset`): ``--data`` (the
    MPD slices), ``--output`` (``runs/<output>``: the prepared dataset and any runs) and, with
    ``sample``, ``--max-playlists``."""
    p.add_argument("--data", default=str(MPD))
    p.add_argument("--output", default=str(ROOT / "runs" / output))
    if sample:
        p.add_argument("--max-playlists", type=int, default=None,
                       help="the seeded sample's size (0 = every playlist); default quick "
                            "mode's")


def quick_dataset(data: Path, out: Path, max_playlists: int | None = None) -> Path:
    """Quick mode's prepared dataset of ``data`` (the seeded 1,000-playlist sample, as
    ``jobs.train_kaggle --mode quick`` makes it, or ``max_playlists`` of them, 0 = all) under
    ``out``, built once and reused."""
    from engine.data.load import load_any
    from engine.training.config import MODES
    from jobs.common import run_dataset

    out.mkdir(parents=True, exist_ok=True)
    n = MODES["quick"]["max_playlists"] if max_playlists is None else max_playlists
    return run_dataset(lambda: load_any(data), data, out, n or None, 0)


def validation(fn, split) -> dict:
    """Validation Recall@10 / NDCG@10 of score function ``fn`` on ``split`` (fit edges masked,
    the candidates those of the fit edges): how the ablation and start scripts choose."""
    from engine.eval.evaluate import evaluate_scores

    return evaluate_scores(fn, split.fit, split.val, split.num_items, ks=(10,))

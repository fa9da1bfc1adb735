"""ASHA's savings: 12 trials x up to 6 epochs in mini mode on the shared MPD slices.

    python -m benchmarks.bench_tune [--trials 12] [--max-epochs 6]

Reports total epochs run against trials x max-epochs (no early stopping), wall time, and the best
validation Recall@10 against the default configuration's (one trial of the defaults, same data,
same epochs, same split). Figures: docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import shutil

from benchmarks._run import MPD, ROOT, load, run_job


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--max-epochs", type=int, default=6)
    a = p.parse_args()
    out = ROOT / "runs" / "bench_tune"
    shutil.rmtree(out, ignore_errors=True)
    wall = run_job(["tune.search", "--pipeline", "kaggle", "--data", str(MPD), "--mode", "mini",
                    "--trials", str(a.trials), "--max-epochs", str(a.max_epochs),
                    "--output", str(out), "--no-progress"], out.with_suffix(".log"))
    best = json.loads((out / "best_config.json").read_text())
    saved = 1 - best["epochs_run"] / best["epochs_without_early_stopping"]
    print(f"{best['trials']} trials: {best['epochs_run']} epochs run of "
          f"{best['epochs_without_early_stopping']} ({saved:.0%} saved by ASHA; goal >= 50%), "
          f"{best['trials_stopped_early']} stopped early, {wall:.0f} s wall, load {load()}")

    # The default configuration, one trial, same data / epochs / split.
    space = out.parent / "bench_tune_default_space.json"
    space.write_text(json.dumps({"seed": {"type": "choice", "values": [0]}}))
    default_out = ROOT / "runs" / "bench_tune_default"
    shutil.rmtree(default_out, ignore_errors=True)
    run_job(["tune.search", "--pipeline", "kaggle", "--data", str(MPD), "--mode", "mini",
             "--trials", "1", "--max-epochs", str(a.max_epochs), "--space", str(space),
             "--output", str(default_out), "--no-progress"], default_out.with_suffix(".log"))
    default = json.loads((default_out / "best_config.json").read_text())
    print(f"best val Recall@10: searched {best['val_recall@10']:.4f} vs default "
          f"{default['val_recall@10']:.4f}; best config {best['config']}")
    print(json.dumps({"trials": best["trials"], "epochs_run": best["epochs_run"],
                      "epochs_without_early_stopping": best["epochs_without_early_stopping"],
                      "saved": round(saved, 3), "wall_seconds": round(wall, 1),
                      "best_val_recall@10": best["val_recall@10"],
                      "default_val_recall@10": default["val_recall@10"]}))


if __name__ == "__main__":
    main()

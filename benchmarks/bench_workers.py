"""2 Ray Train workers against 1 on the same data and epochs: triples/s and time per epoch.

    python -m benchmarks.bench_workers [--mode quick] [--epochs 3]

Both runs use the shared MPD slices, the same mode, seed and epochs, with early stopping off so
both run every epoch; the first epoch is dropped as warm-up. Figures: docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics

from benchmarks._run import MPD, ROOT, load, metrics, run_job


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", default="quick")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--data", default=str(MPD))
    a = p.parse_args()
    rows = {}
    # "1" uses both cores (2 torch threads); "1x1" is one worker on one core, for reference.
    for name, workers, threads in (("1", 1, 2), ("2", 2, 1), ("1x1", 1, 1)):
        out = ROOT / "runs" / f"bench_workers_{name}"
        shutil.rmtree(out, ignore_errors=True)
        wall = run_job(["jobs.train_kaggle", "--data", a.data, "--mode", a.mode, "--epochs",
                        str(a.epochs), "--patience", "0", "--workers", str(workers),
                        "--threads", str(threads), "--output", str(out), "--no-progress"],
                       out.with_suffix(".log"))
        hist = metrics(out)["history"][1:]  # epoch 1 is warm-up
        rows[name] = {
            "triples_per_s": statistics.median(h["triples_per_s"] for h in hist),
            "epoch_seconds": statistics.median(h["epoch_seconds"] for h in hist),
            "wall_seconds": round(wall, 1),
        }
        print(f"{workers} worker(s) x {threads} thread(s): "
              f"{rows[name]['triples_per_s']:,.0f} triples/s, "
              f"{rows[name]['epoch_seconds']:.2f} s/epoch (median of epochs 2..{a.epochs}), "
              f"{wall:.0f} s wall", flush=True)
    speedup = rows["2"]["triples_per_s"] / rows["1"]["triples_per_s"]
    epoch_ratio = rows["1"]["epoch_seconds"] / rows["2"]["epoch_seconds"]
    print(f"2 workers vs 1 worker with both cores: {speedup:.2f}x triples/s, "
          f"{epoch_ratio:.2f}x faster epochs (goal >= 1.6x); vs 1 worker on one core: "
          f"{rows['2']['triples_per_s'] / rows['1x1']['triples_per_s']:.2f}x; "
          f"load average {load()}")
    print(json.dumps({"mode": a.mode, "epochs": a.epochs, "workers": rows,
                      "speedup_triples": round(speedup, 3), "speedup_epoch": round(epoch_ratio, 3)}))


if __name__ == "__main__":
    main()

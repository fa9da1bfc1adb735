"""``--mode mini`` end to end on the shared MPD slices: wall time and the metrics.

    python -m benchmarks.bench_mini [--workers 2]

Wall time covers everything a user waits for: parsing 466 slice files, sampling 500 playlists,
starting Ray and the worker group, 3 epochs, test evaluation with baselines. Goal: < 60 s.
"""
from __future__ import annotations

import argparse
import json
import shutil

from benchmarks._run import MPD, ROOT, load, metrics, run_job


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    out = ROOT / "runs" / "bench_mini"
    shutil.rmtree(out, ignore_errors=True)
    wall = run_job(["jobs.train_kaggle", "--data", str(MPD), "--mode", "mini", "--workers",
                    str(a.workers), "--output", str(out), "--no-progress"], out.with_suffix(".log"))
    m = metrics(out)
    print(f"--mode mini on {MPD.name} with {a.workers} workers: {wall:.1f} s wall "
          f"(train {m['train_seconds']:.1f} s), load average {load()}")
    cols = ["recall@10", "ndcg@10", "recall@50", "ndcg@50", "r_precision"]
    print(f"{'':<12}" + "".join(f"{c:>12}" for c in cols))
    for name, row in [("model", m["test"]), *m["baselines"].items()]:
        print(f"{name:<12}" + "".join(f"{row[c]:>12.4f}" for c in cols))
    print(f"test playlists {m['test']['playlists']}, coverable {m['test']['coverable']:.3f}")
    print(json.dumps({"wall_seconds": round(wall, 1), "train_seconds": m["train_seconds"],
                      "test": m["test"], "baselines": m["baselines"]}))


if __name__ == "__main__":
    main()

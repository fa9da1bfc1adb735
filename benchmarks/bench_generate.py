"""Time the synthetic generators at full size.

    python benchmarks/bench_generate.py                       # 10k users x 30 days, 1 M-row CSV
    python benchmarks/bench_generate.py --kaggle-rows 1000000 12900000

Prints one line per measurement (seconds, sizes, peak resident memory of this process so far).
Outputs go to a temporary folder that is removed afterwards.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data.canonical import save_dataset
from engine.data.kaggle_writer import write_kaggle_csv
from engine.data.sessions import generate_sessions


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_sessions(users: int, days: int, out: Path) -> None:
    t0 = time.perf_counter()
    ds = generate_sessions(num_users=users, days=days, seed=0)
    t1 = time.perf_counter()
    save_dataset(ds, out / "sessions")
    t2 = time.perf_counter()
    print(f"sessions {users} users x {days} days: {len(ds.interactions):,} events, "
          f"generate {t1 - t0:.2f} s, save {t2 - t1:.2f} s, peak {_peak_mib():.0f} MiB",
          flush=True)


def bench_kaggle(rows: int, out: Path) -> None:
    path = out / f"kaggle_{rows}.csv"
    t0 = time.perf_counter()
    figures = write_kaggle_csv(path, rows, seed=0)
    elapsed = time.perf_counter() - t0
    size = path.stat().st_size / 2**20
    path.unlink()
    print(f"kaggle {rows:,} rows: {elapsed:.1f} s, {size:,.0f} MiB, "
          f"{figures['users']:,} users, {figures['playlists']:,} playlists, "
          f"{figures['tracks']:,} tracks, peak {_peak_mib():.0f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--kaggle-rows", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        if args.users > 0:
            bench_sessions(args.users, args.days, Path(tmp))
        for rows in args.kaggle_rows:
            bench_kaggle(rows, Path(tmp))


if __name__ == "__main__":
    main()

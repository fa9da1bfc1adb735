"""Benchmark ``python -m jobs.prepare`` on a Kaggle-format CSV against a bare pyarrow parse.

    python benchmarks/bench_prepare.py [--rows 12900000] [--seed 0] [--repeat 3] [--csv PATH] [--keep]

Goal (docs/benchmarks-prepare.md): prepare takes at most 2x the time of ``pyarrow.csv.read_csv``
on the same file, and stays under 6 GB peak RSS. Both run as fresh subprocesses (interpreter start
and imports included) after one read of the file has warmed the page cache; the peak RSS of each
comes from ``os.wait4`` on that very child, so one measurement cannot leak into the other. The
two commands alternate ``--repeat`` times and the best time of each is compared, because the
machines this runs on are shared and a single pair of runs is noisy.

The input comes from ``engine.data.kaggle_writer.write_kaggle_csv`` when that exists, else from the
local generator below (same shape as the real file: ~15k users, Zipf track popularity, playlists
of realistic length, the original quoted header).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parents[1]
HEADER = b'"user_id", "artistname", "trackname", "playlistname"\n'
BASELINE = "import sys, pyarrow.csv as c; print(c.read_csv(sys.argv[1]).num_rows)"


def write_local_kaggle_csv(path: str | Path, rows: int, seed: int = 0) -> Path:
    """Write a Kaggle-shaped ``spotify_dataset.csv`` with ``rows`` data rows (vectorised)."""
    rng = np.random.default_rng(seed)
    n_users = 15_000
    n_tracks = max(rows // 6, 100)
    n_artists = max(n_tracks // 7, 10)
    lengths = np.maximum(1, rng.lognormal(3.6, 1.1, size=rows // 20 + 10).astype(np.int64))
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), rows) + 1]
    lengths[-1] -= lengths.sum() - rows
    lengths = lengths[lengths > 0]
    n_playlists = len(lengths)
    playlist_user = np.sort(rng.integers(0, n_users, n_playlists))  # the file is grouped by user
    title_vocab = 50_000  # a few very common titles ("Starred"), a long tail of rarer ones
    common = rng.random(n_playlists) < 0.2
    playlist_title = np.where(
        common, rng.zipf(1.5, n_playlists) % 4, rng.integers(4, title_vocab, n_playlists)
    )
    popularity = 1.0 / np.arange(1, n_tracks + 1) ** 0.7
    track = rng.choice(n_tracks, size=rows, p=popularity / popularity.sum())
    track_artist = (rng.zipf(1.3, n_tracks) - 1) % n_artists
    entry_playlist = np.repeat(np.arange(n_playlists), lengths)

    users = pa.array([f"{h:032x}" for h in rng.integers(0, 2**62, n_users, dtype=np.int64)])
    titles = pa.array([_title(i) for i in range(title_vocab)])
    artists = pa.array(
        [
            "" if i == 7 else f"Artist {i}" + (", The" if i % 11 == 0 else "")
            for i in range(n_artists)
        ]
    )
    names = pa.array(
        [
            f'Song "{i}"'
            if i % 97 == 0
            else f"Song {i}, Pt. {i % 3}"
            if i % 13 == 0
            else f"Song {i}"
            for i in range(n_tracks)
        ]
    )
    table = pa.table(
        {
            "user_id": users.take(pa.array(playlist_user[entry_playlist])),
            "artistname": artists.take(pa.array(track_artist[track])),
            "trackname": names.take(pa.array(track)),
            "playlistname": titles.take(pa.array(playlist_title[entry_playlist])),
        }
    )
    with open(path, "wb") as f:
        f.write(HEADER)
        pacsv.write_csv(
            table, f, pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
        )
    return Path(path)


def _title(i: int) -> str:
    return (
        ["Starred", "Liked from Radio", "Workout, Vol. 1", 'My "Best" Songs'][i]
        if i < 4
        else f"Mix {i}"
    )


def generate(path: Path, rows: int, seed: int) -> str:
    try:
        from engine.data.kaggle_writer import write_kaggle_csv
    except ImportError:
        write_local_kaggle_csv(path, rows, seed)
        return "benchmarks/bench_prepare.py:write_local_kaggle_csv"
    write_kaggle_csv(path, rows, seed)
    return "engine.data.kaggle_writer.write_kaggle_csv"


def measure(cmd: list[str]) -> tuple[float, float, str, float]:
    """Run ``cmd``; return (wall seconds, peak RSS in GiB, stdout, CPU seconds) of that child."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.decode()[-2000:]}")
    cpu = usage.ru_utime + usage.ru_stime
    return wall, usage.ru_maxrss / 2**20, out.decode(), cpu  # ru_maxrss is KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=12_900_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs of each command")
    ap.add_argument("--csv", help="existing CSV to use (otherwise generated in a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the generated CSV and output")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_prepare."))
    try:
        csv_path = Path(args.csv) if args.csv else work / "spotify_dataset.csv"
        if not args.csv:
            t = time.perf_counter()
            how = generate(csv_path, args.rows, args.seed)
            print(f"generated {args.rows:,} rows with {how} in {time.perf_counter() - t:.1f}s")
        size = csv_path.stat().st_size
        with open(csv_path, "rb") as f:  # warm the page cache for both runs alike
            while f.read(1 << 24):
                pass
        py = sys.executable
        base_cmd = [py, "-c", BASELINE, str(csv_path)]
        prep_cmd = [
            py,
            "-m",
            "jobs.prepare",
            "--data",
            str(csv_path),
            "--output",
            str(work / "out"),
        ]
        base, prep = [], []
        for i in range(args.repeat):
            base.append(measure(base_cmd))
            shutil.rmtree(work / "out", ignore_errors=True)
            prep.append(measure(prep_cmd))
            print(
                f"run {i + 1}: read_csv {base[-1][0]:.2f} s (CPU {base[-1][3]:.2f} s), "
                f"prepare {prep[-1][0]:.2f} s (CPU {prep[-1][3]:.2f} s)"
            )
        print(prep[-1][2].rstrip())
        base_s, base_rss = min(b[0] for b in base), max(b[1] for b in base)
        prep_s, prep_rss = min(p[0] for p in prep), max(p[1] for p in prep)
        base_cpu, prep_cpu = min(b[3] for b in base), min(p[3] for p in prep)
        print(f"input: {csv_path} ({size / 2**30:.2f} GiB, {int(base[0][2]):,} rows)")
        print(f"cores: {os.cpu_count()}, best of {args.repeat}")
        print(
            f"pyarrow.csv.read_csv : {base_s:7.2f} s   CPU {base_cpu:6.2f} s   peak RSS {base_rss:5.2f} GiB"
        )
        print(
            f"jobs.prepare         : {prep_s:7.2f} s   CPU {prep_cpu:6.2f} s   peak RSS {prep_rss:5.2f} GiB"
        )
        ratio = prep_s / base_s
        print(
            f"CPU-time ratio (less sensitive to other load on the machine): {prep_cpu / base_cpu:.2f}"
        )
        ok = ratio <= 2 and prep_rss <= 6
        print(
            f"ratio prepare/read_csv: {ratio:.2f}  (goal <= 2, RSS <= 6 GB: {'met' if ok else 'MISSED'})"
        )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Generate synthetic data.

    python -m jobs.generate sessions --users N --days D [--songs S] [--artists A] [--start DATE]
                                     --seed S --output DIR
    python -m jobs.generate kaggle --rows N --seed S --output FILE.csv

``sessions`` writes a prepared canonical dataset folder (``kind="session"``); ``kaggle`` writes a
Kaggle "Spotify Playlists"-format CSV. Both are deterministic by seed and written atomically.
The last line of output is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from jobs.cli import ArgumentParser, run_cli


def _int_at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)
_seed = _int_at_least(0)


def _date(text: str) -> str:
    import numpy as np

    try:
        np.datetime64(text, "D")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date like 2024-01-01, got {text!r}") from None
    return text


def build_parser() -> ArgumentParser:
    """The command line: one sub-command per generator."""
    parser = ArgumentParser(prog="python -m jobs.generate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, help="what to generate")
    s = sub.add_parser("sessions", help="synthetic listening sessions as a prepared dataset")
    s.add_argument("--users", type=_positive_int, default=1000, help="listeners")
    s.add_argument("--days", type=_positive_int, default=30, help="days of listening")
    s.add_argument("--songs", type=_positive_int, default=5000, help="catalogue songs")
    s.add_argument("--artists", type=_positive_int, default=500, help="catalogue artists")
    s.add_argument("--start", type=_date, default="2024-01-01", help="first day (UTC)")
    s.add_argument("--seed", type=_seed, default=0, help="random seed (same seed, same files)")
    s.add_argument("--output", required=True, help="dataset folder to write (required)")
    k = sub.add_parser("kaggle", help="a Kaggle 'Spotify Playlists' spotify_dataset.csv")
    k.add_argument("--rows", type=_positive_int, required=True,
                   help="data rows of the file (required)")
    k.add_argument("--tracks", type=_positive_int, default=None,
                   help="catalogue tracks (default: rows^0.9, at least 100)")
    k.add_argument("--artists", type=_positive_int, default=None,
                   help="catalogue artists (default: a seventh of the tracks, at least 10)")
    k.add_argument("--seed", type=_seed, default=0, help="random seed (same seed, same file)")
    k.add_argument("--output", required=True, help="CSV file to write (required)")
    return parser


def _sessions(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from engine.data.canonical import save_dataset
    from engine.data.sessions import generate_sessions

    # disable=None: no bar when stderr is not a terminal, so logs hold only real messages.
    with tqdm(total=2, desc="sessions", unit="step", leave=False, disable=None) as bar:
        ds = generate_sessions(args.users, args.days, args.songs, args.artists, args.seed,
                               args.start)
        bar.update()
        out = save_dataset(ds, args.output)
        bar.update()
    return {"output": str(out), "users": ds.num_owners, "songs": ds.num_tracks,
            "artists": ds.num_artists, "events": len(ds.interactions)}


def _kaggle(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from engine.data.kaggle_writer import write_kaggle_csv

    with tqdm(total=args.rows, desc="kaggle csv", unit="row", unit_scale=True,
              leave=False, disable=None) as bar:
        return write_kaggle_csv(args.output, args.rows, args.seed, num_tracks=args.tracks,
                                num_artists=args.artists, progress=bar.update)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, generate, and print a one-line JSON summary."""
    args = build_parser().parse_args(argv)
    summary = _sessions(args) if args.command == "sessions" else _kaggle(args)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    run_cli(main)

"""Convert raw data (Kaggle CSV, MPD slices or CSV) into a prepared canonical dataset folder.

    python -m jobs.prepare --data PATH --output DIR [--format FMT] [--features tracks_features.csv]

Preparing once and training many times means the 12.9M-row parse happens once. The output is
written atomically by :func:`engine.data.canonical.save_dataset`; a bad input or an unusable
output folder ends with exit status 2 and one line on stderr, and leaves nothing behind. The
output folder is checked *before* parsing, so a typo does not cost a full read of the input.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import BadInput
from jobs.cli import ArgumentParser, run_cli
from jobs.common import check_output as check_writable
from jobs.interrupts import Interrupted, resume_command, sigint_guard

if TYPE_CHECKING:  # pandas and pyarrow load after parsing
    from engine.data.canonical import Dataset

# engine.data.load.FORMATS (a test checks they agree): written out so --help loads no pandas
FORMATS = ("prepared", "kaggle", "mpd", "mpd_csv")


def parse_args(argv: Sequence[str] | None):
    ap = ArgumentParser(prog="python -m jobs.prepare", description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True,
                    help="Kaggle CSV, MPD slice folder/file, MPD CSV (required)")
    ap.add_argument("--output", required=True,
                    help="folder to write the prepared dataset to (required)")
    ap.add_argument("--format", choices=FORMATS,
                    help="input format (default: detected from the input)")
    ap.add_argument("--features",
                    help="tracks_features.csv to join audio features from (default: none)")
    return ap.parse_args(argv)


def load_any(*args, **kwargs) -> Dataset:
    """:func:`engine.data.load.load_any`, imported on the first call (after parsing)."""
    from engine.data.load import load_any as load

    return load(*args, **kwargs)


def check_output(out: Path) -> None:
    """Refuse an output that save_dataset would refuse, before spending time on the input."""
    from engine.data.canonical import is_prepared

    if out.exists() and not is_prepared(out) and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(
            f"{out}: output exists and is not a prepared dataset; choose another --output"
        )
    check_writable(out, "write", start=out.parent)  # the dataset is renamed into place there


def summary(ds: Dataset, out: Path, seconds: float) -> str:
    """A few lines for the terminal: tables, rows, dropped rows, feature match rate."""
    notes, dropped = ds.manifest.get("notes", {}), ds.manifest.get("dropped", {})
    lines = [f"prepared {out} ({ds.kind}, {notes.get('format', '?')}) in {seconds:.1f}s"]
    lines += [f"  {name:<15} {len(t):>12,} rows" for name, t in ds.tables().items()]
    if "rows_read" in notes or "entries_read" in notes:
        lines.append(f"  read: {notes.get('rows_read', notes.get('entries_read')):,} raw rows")
    lines.append("  dropped: " + (", ".join(f"{k} {v:,}" for k, v in dropped.items()) or "none"))
    if "feature_match_rate" in notes:
        lines.append(
            f"  audio features: {notes['feature_matched_tracks']:,} of {ds.num_tracks:,} tracks "
            f"matched ({notes['feature_match_rate']:.2%})"
        )
    if notes.get("feature_nan_tracks"):
        lines.append(
            f"  audio features missing (imputed at training): "
            f"{sum(notes['feature_nan_values'].values()):,} values in "
            f"{notes['feature_nan_tracks']:,} tracks"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from engine.data.canonical import save_dataset

    out = Path(args.output)
    check_output(out)
    start = time.perf_counter()
    with sigint_guard():  # save_dataset is atomic: an interrupted run leaves nothing behind
        try:
            ds = load_any(args.data, fmt=args.format, features=args.features)
            save_dataset(ds, out)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted: nothing new written to {out}; start again with: "
                              f"{resume_command('jobs.prepare', argv)}") from None
    print(summary(ds, out, time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    run_cli(main)

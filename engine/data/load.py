"""One entry point for every input: detect the format, read it, optionally join audio features.

Jobs accept "a Kaggle CSV, a folder of MPD slices, or a prepared dataset" (``PROTOCOL.md``), so
the format is sniffed from what is there: a folder with ``manifest.json`` is prepared, a folder of
``mpd.slice*.json`` or a ``.json`` file is MPD, and a CSV is recognised by its header rather than
its name (real copies of these files are renamed freely).
"""

from __future__ import annotations

from pathlib import Path

from engine.data._files import check_file, read_header
from engine.data.canonical import MANIFEST, Dataset, is_prepared, load_dataset
from engine.data.features import FEATURES, join_track_features, read_track_features
from engine.data.kaggle import COLUMNS as KAGGLE_COLUMNS
from engine.data.kaggle import read_kaggle_csv
from engine.data.mpd import CSV_COLUMNS as MPD_CSV_COLUMNS
from engine.data.mpd import read_mpd, read_mpd_csv
from engine.errors import BadInput

FORMATS = ("prepared", "kaggle", "mpd", "mpd_csv")


def detect_format(path: str | Path) -> str:
    """Return one of FORMATS for ``path``; BadInput when it is none of them."""
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{p}: no such file or folder")
    if p.is_dir():
        if is_prepared(p):
            return "prepared"
        if any(p.glob("mpd.slice*.json")):
            return "mpd"
        raise BadInput(f"{p}: folder is neither a prepared dataset ({MANIFEST}) nor MPD slices")
    if p.suffix.lower() == ".json":
        return "mpd"
    header = set(read_header(check_file(p)))
    if set(KAGGLE_COLUMNS) <= header:
        return "kaggle"
    if set(MPD_CSV_COLUMNS) <= header:
        return "mpd_csv"
    if {"name", "artists", *FEATURES} <= header:
        raise BadInput(f"{p}: this is an audio-features file; pass it with --features")
    shown = ", ".join(sorted(header)[:8]) or "(nothing)"
    raise BadInput(f"{p}: line 1: unknown format (header columns: {shown})")


def load_any(
    path: str | Path, fmt: str | None = None, features: str | Path | None = None
) -> Dataset:
    """Read ``path`` as ``fmt`` (detected when None) and join ``features`` when given."""
    fmt = fmt or detect_format(path)
    readers = {
        "prepared": load_dataset,
        "kaggle": read_kaggle_csv,
        "mpd": read_mpd,
        "mpd_csv": read_mpd_csv,
    }
    if fmt not in readers:
        raise BadInput(f"{path}: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    ds = readers[fmt](path)
    if features is not None:
        ds = join_track_features(ds, read_track_features(features))
    return ds

"""The canonical dataset: one on-disk format for every source.

A prepared dataset is a folder of parquet tables plus ``manifest.json``::

    owners.parquet        owner_id:int32 (0..n-1), key:str, name:str [, user_type:str]
                          an owner is a playlist (kind="playlist") or a user (kind="session")
    tracks.parquet        track_id:int32 (0..n-1), key:str, name:str, artist_id:int32
    artists.parquet       artist_id:int32 (0..n-1), name:str
    interactions.parquet  owner_id:int32, track_id:int32, order:int64
                          kind="playlist": one row per distinct (playlist, track), ``order`` is the
                            0-based position among the playlist's distinct tracks (first-seen order)
                          kind="session": one row per listening event, ``order`` is unix seconds,
                            plus ms_played:int32 and completion:float32 in [0, 1]
    genres.parquet        genre_id:int32, name:str                  (optional)
    artist_genres.parquet artist_id:int32, genre_id:int32            (optional)
    track_features.parquet track_id:int32 + float32 audio features   (optional)

``manifest.json`` holds ``schema_version``, ``kind``, ``source`` (files with sizes and sha256),
``rows`` (row count per table), ``dropped`` (rows dropped at ingest, by reason) and ``notes``
(free-form figures such as the audio-feature match rate). It holds no wall-clock time, so the same
input always gives byte-identical output.

Writes are atomic: tables go to a temporary sibling folder that is renamed into place, so a failed
write never leaves a half-written dataset behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import BadInput

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
KINDS = ("playlist", "session")
REQUIRED_TABLES = ("owners", "tracks", "artists", "interactions")
OPTIONAL_TABLES = ("genres", "artist_genres", "track_features")

# Column -> dtype for the fixed part of each table (extra columns are allowed and kept).
SCHEMAS: dict[str, dict[str, str]] = {
    "owners": {"owner_id": "int32", "key": "object", "name": "object"},
    "tracks": {"track_id": "int32", "key": "object", "name": "object", "artist_id": "int32"},
    "artists": {"artist_id": "int32", "name": "object"},
    "interactions": {"owner_id": "int32", "track_id": "int32", "order": "int64"},
    "genres": {"genre_id": "int32", "name": "object"},
    "artist_genres": {"artist_id": "int32", "genre_id": "int32"},
    "track_features": {"track_id": "int32"},
}


@dataclass
class Dataset:
    """In-memory canonical dataset (see the module docstring for the columns)."""

    kind: str
    owners: pd.DataFrame
    tracks: pd.DataFrame
    artists: pd.DataFrame
    interactions: pd.DataFrame
    genres: pd.DataFrame | None = None
    artist_genres: pd.DataFrame | None = None
    track_features: pd.DataFrame | None = None
    manifest: dict = field(default_factory=dict)

    @property
    def num_owners(self) -> int:
        return len(self.owners)

    @property
    def num_tracks(self) -> int:
        return len(self.tracks)

    @property
    def num_artists(self) -> int:
        return len(self.artists)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table that is present, by name."""
        names = REQUIRED_TABLES + OPTIONAL_TABLES
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def validate(self) -> None:
        """Check kinds, columns, dtypes and id ranges; raise ValueError on a programming error."""
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name, table in self.tables().items():
            for col, dtype in SCHEMAS[name].items():
                if col not in table.columns:
                    raise ValueError(f"table {name} lacks column {col}")
                if dtype != "object" and str(table[col].dtype) != dtype:
                    raise ValueError(f"{name}.{col} is {table[col].dtype}, expected {dtype}")
        for name, id_col in (("owners", "owner_id"), ("tracks", "track_id"), ("artists", "artist_id")):
            ids = getattr(self, name)[id_col].to_numpy()
            if len(ids) and not (ids == range(len(ids))).all():
                raise ValueError(f"{name}.{id_col} must be 0..n-1 in order")
        inter = self.interactions
        if len(inter) and (inter.owner_id.max() >= self.num_owners
                           or inter.track_id.max() >= self.num_tracks):
            raise ValueError("interactions reference unknown owners or tracks")
        if len(self.tracks) and self.tracks.artist_id.max() >= max(self.num_artists, 1):
            raise ValueError("tracks reference unknown artists")


def file_fingerprint(path: str | Path) -> dict:
    """Size and sha256 of a source file, for the manifest."""
    p = Path(path)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"path": p.name, "bytes": p.stat().st_size, "sha256": h.hexdigest()}


def is_prepared(path: str | Path) -> bool:
    """True when ``path`` is a folder written by :func:`save_dataset`."""
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def _coerce(name: str, table: pd.DataFrame) -> pd.DataFrame:
    table = table.reset_index(drop=True)
    for col, dtype in SCHEMAS[name].items():
        if dtype != "object" and col in table.columns:
            table[col] = table[col].astype(dtype)
    return table


def save_dataset(ds: Dataset, out_dir: str | Path) -> Path:
    """Write ``ds`` to ``out_dir`` atomically and return the path.

    An existing prepared dataset at ``out_dir`` is replaced; any other existing non-empty folder
    is refused (BadInput), so a typo never clobbers unrelated files.
    """
    out = Path(out_dir)
    if out.exists() and not is_prepared(out) and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"{out}: output exists and is not a prepared dataset; choose another --output")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the dataset is shared with workers
    except OSError as exc:
        raise BadInput(f"{out}: cannot write output folder ({exc.strerror or exc})") from None
    try:
        ds.validate()
        rows = {}
        for name, table in ds.tables().items():
            table = _coerce(name, table)
            pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp / f"{name}.parquet")
            rows[name] = len(table)
        manifest = dict(ds.manifest)
        manifest.update(schema_version=SCHEMA_VERSION, kind=ds.kind, rows=rows)
        manifest.setdefault("source", {})
        manifest.setdefault("dropped", {})
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BadInput(f"{out}: cannot write output folder ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_dataset(path: str | Path) -> Dataset:
    """Read a folder written by :func:`save_dataset`."""
    root = Path(path)
    if not is_prepared(root):
        raise BadInput(f"{root}: not a prepared dataset (no {MANIFEST})")
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"{root / MANIFEST}: unreadable manifest ({exc})") from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise BadInput(
            f"{root / MANIFEST}: schema_version {manifest.get('schema_version')!r}, "
            f"this version reads {SCHEMA_VERSION}; prepare the data again"
        )
    tables = {}
    for name in REQUIRED_TABLES + OPTIONAL_TABLES:
        f = root / f"{name}.parquet"
        if not f.exists():
            if name in REQUIRED_TABLES:
                raise BadInput(f"{f}: missing table of a prepared dataset")
            continue
        try:
            tables[name] = pq.read_table(f).to_pandas()
        except (OSError, pa.ArrowException) as exc:
            raise BadInput(f"{f}: unreadable parquet table ({exc})") from None
    ds = Dataset(kind=manifest["kind"], manifest=manifest, **tables)
    try:
        ds.validate()
    except ValueError as exc:
        raise BadInput(f"{root}: inconsistent prepared dataset ({exc})") from None
    return ds

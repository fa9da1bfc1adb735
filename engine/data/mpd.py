"""Readers for the Spotify Million Playlist Dataset: JSON slices and the flattened CSV.

A slice file holds ``{"info": ..., "playlists": [{"pid", "name", "tracks": [...]}, ...]}``. A track
is its ``track_uri``; an artist is its ``artist_uri`` when present, else its name (the thinned
slices in ``shared/data`` keep only ``artist_name, track_uri, track_name``). ``pos`` orders a
playlist when present, list order otherwise.

Each file is decoded with the standard json module (1,000 playlists, tens of MB) and flattened to
Arrow columns straight away, so a thousand slices never pile up as Python objects; the playlist
tables are then built by the same vectorised code as the Kaggle reader.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from engine.data._codes import encode, first_positions
from engine.data._files import (
    check_file,
    read_csv_columns,
    read_header,
    require_columns,
    source_entry,
    utf8_problem,
)
from engine.data._ingest import playlist_dataset, require_rows
from engine.data.canonical import Dataset
from engine.errors import BadInput

SLICE_GLOB = "mpd.slice.*.json"
CSV_COLUMNS = ("pid", "track_uri")
CSV_OPTIONAL = ("track_name", "artist_name", "artist_uri")


def slice_files(path: str | Path) -> list[Path]:
    """The slice files of ``path`` (a folder or one file), in natural filename order.

    Natural order (``0-999`` before ``1000-1999``) is deterministic and follows the pids.
    """
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob(SLICE_GLOB), key=_natural_key)
        if not files:
            raise BadInput(f"{p}: folder holds no {SLICE_GLOB} files")
        return files
    return [check_file(p)]


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def read_mpd(path: str | Path, progress: bool = True) -> Dataset:
    """Read MPD slice JSON (a folder of ``mpd.slice.*.json`` or one file) into a Dataset.

    ``manifest["notes"]["entries_read"]`` is the raw entry count before de-duplication,
    ``manifest["dropped"]["duplicate_in_playlist"]`` the repeated tracks dropped.
    """
    files = slice_files(path)
    chunks, owners, fingerprints, owner_file = [], [], [], []
    mismatched = 0
    # disable=None: no bar when stderr is not a terminal, so a CLI error stays one stderr line
    quiet = None if progress and len(files) > 1 else True
    for f in tqdm(files, desc="mpd slices", unit="file", disable=quiet):
        raw = _read_bytes(f)
        fingerprints.append((f.name, len(raw), hashlib.sha256(raw).hexdigest()))
        playlists = _playlists(f, raw)
        table, pids, names, bad_counts = _flatten(f, playlists, base=len(owners))
        chunks.append(table)
        owners.extend(zip(pids, names))
        owner_file.extend([len(fingerprints) - 1] * len(pids))
        mismatched += bad_counts
    _check_unique_pids(files, np.asarray(owner_file, np.int64), owners)

    entries = pa.concat_tables(chunks) if chunks else _empty_entries()
    track_codes, track_uris = encode(entries["track_uri"])
    first = pa.array(first_positions(track_codes))
    manifest = {
        "source": {"data": _folder_fingerprint(Path(path), fingerprints)},
        "dropped": {},
        "notes": {
            "format": "mpd",
            "files": len(files),
            "playlists_read": len(owners),
            "entries_read": entries.num_rows,
            "num_tracks_mismatch": mismatched,
        },
    }
    ds = playlist_dataset(
        owner_codes=entries["owner"].to_numpy(),
        owner_keys=pa.array([k for k, _ in owners], pa.string()),
        owner_names=pa.array([n for _, n in owners], pa.string()),
        track_codes=track_codes,
        track_keys=track_uris,
        track_names=entries["track_name"].take(first),
        artist_keys=entries["artist_key"].take(first),
        artist_names=entries["artist_name"].take(first),
        rank=entries["rank"].to_numpy(),
        manifest=manifest,
    )
    return require_rows(Path(path), ds)


def _read_bytes(f: Path) -> bytes:
    try:
        raw = f.read_bytes()
    except OSError as exc:
        raise BadInput(f"{f}: cannot read ({exc.strerror or exc})") from None
    if not raw:
        raise BadInput(f"{f}: empty file")
    return raw


def _playlists(f: Path, raw: bytes) -> list:
    problem = utf8_problem(raw)
    if problem:
        raise BadInput(f"{f}: {problem}")
    try:
        data = json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"{f}: line {exc.lineno} column {exc.colno}: invalid JSON ({exc.msg})"
        ) from None
    except RecursionError:
        raise BadInput(f"{f}: invalid JSON (nested too deeply)") from None
    if not isinstance(data, dict) or not isinstance(data.get("playlists"), list):
        raise BadInput(f'{f}: not an MPD slice (no "playlists" list at the top level)')
    return data["playlists"]


def _flatten(f: Path, playlists: list, base: int) -> tuple[pa.Table, list[str], list[str], int]:
    """One slice -> Arrow entry columns + owner keys/names; malformed records -> BadInput."""
    try:
        pids = [_pid(p["pid"]) for p in playlists]
        names = [str(p.get("name") or "") for p in playlists]
        lists = [p["tracks"] for p in playlists]
        if not all(isinstance(t, list) for t in lists):
            raise TypeError("tracks is not a list")
        lens = np.fromiter((len(t) for t in lists), np.int64, len(lists))
        tracks = [t for ts in lists for t in ts]
        uris = [_uri(t["track_uri"]) for t in tracks]
        track_names = [str(t.get("track_name") or "") for t in tracks]
        artist_names = [str(t.get("artist_name") or "") for t in tracks]
        artist_keys = [str(t.get("artist_uri") or t.get("artist_name") or "") for t in tracks]
        pos = [-1 if (v := t.get("pos")) is None else v for t in tracks]
        rank = np.asarray(pos, dtype=np.int64) if tracks else np.zeros(0, np.int64)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise BadInput(
            _locate_bad_record(f, playlists) or f"{f}: malformed MPD slice ({exc})"
        ) from None
    starts = np.repeat(np.cumsum(lens) - lens, lens)
    listed = np.arange(len(tracks), dtype=np.int64) - starts
    rank = np.where(rank >= 0, rank, listed)  # no ``pos``: list order is playlist order
    declared = [p.get("num_tracks") for p in playlists]
    mismatched = sum(1 for d, n in zip(declared, lens.tolist()) if d is not None and d != n)
    table = pa.table(
        {
            "owner": pa.array(np.repeat(np.arange(base, base + len(lists), dtype=np.int32), lens)),
            "rank": pa.array(rank),
            "track_uri": pa.array(uris, pa.string()),
            "track_name": pa.array(track_names, pa.string()),
            "artist_key": pa.array(artist_keys, pa.string()),
            "artist_name": pa.array(artist_names, pa.string()),
        }
    )
    return table, pids, names, mismatched


def _pid(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise TypeError("pid must be an integer or a non-empty string")
    return str(value)


def _uri(value) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("track_uri must be a non-empty string")
    return value


def _locate_bad_record(f: Path, playlists: list) -> str | None:
    """Slow pass, run only after the fast flatten failed: name the first malformed record."""
    for i, p in enumerate(playlists):
        where = f"{f}: playlists[{i}]"
        if not isinstance(p, dict):
            return f"{where}: not an object"
        try:
            _pid(p.get("pid"))
        except TypeError as exc:
            return f"{where}: {exc}"
        if not isinstance(p.get("tracks"), list):
            return f'{where} (pid {p.get("pid")}): no "tracks" list'
        for j, t in enumerate(p["tracks"]):
            if not isinstance(t, dict):
                return f"{where}.tracks[{j}]: not an object"
            try:
                _uri(t.get("track_uri"))
            except TypeError as exc:
                return f"{where}.tracks[{j}]: {exc}"
            pos = t.get("pos")
            if pos is not None and (
                isinstance(pos, bool) or not isinstance(pos, int) or abs(pos) >= 2**62
            ):
                return f"{where}.tracks[{j}]: pos must be an integer"
    return None


def _check_unique_pids(files: list[Path], owner_file: np.ndarray, owners: list) -> None:
    """Two playlists with one pid would share an owner key: refuse, naming both files."""
    dup = pd.Series([k for k, _ in owners], dtype=object).duplicated(keep=False).to_numpy()
    if not dup.any():
        return
    first = int(np.flatnonzero(dup)[0])
    pid = owners[first][0]
    where = [files[owner_file[i]].name for i in np.flatnonzero(dup) if owners[i][0] == pid][:2]
    raise BadInput(
        f"{files[owner_file[first]]}: pid {pid} appears twice (in {' and '.join(where)})"
    )


def _folder_fingerprint(path: Path, files: list[tuple[str, int, str]]) -> dict:
    """One manifest entry for a folder: file count, total bytes, sha256 over (name, sha256) lines."""
    if path.is_file():
        name, size, sha = files[0]
        return {"path": name, "bytes": size, "sha256": sha}
    digest = hashlib.sha256("".join(f"{n} {s}\n" for n, _, s in files).encode()).hexdigest()
    return {
        "path": path.name,
        "files": len(files),
        "bytes": sum(b for _, b, _ in files),
        "sha256": digest,
    }


def _empty_entries() -> pa.Table:
    cols = ("track_uri", "track_name", "artist_key", "artist_name")
    return pa.table(
        {
            "owner": pa.array([], pa.int32()),
            "rank": pa.array([], pa.int64()),
            **{c: pa.array([], pa.string()) for c in cols},
        }
    )


def read_mpd_csv(path: str | Path) -> Dataset:
    """Read the flattened MPD CSV (one row per entry, file order is playlist order).

    The CSV has no playlist titles, so owners' names are empty. Repeated (pid, track) rows keep
    their first position; ``dropped["duplicate_in_playlist"]`` counts the rows dropped and
    ``notes["duplicated_pairs"]`` the distinct (pid, track) pairs that repeat.
    """
    p = check_file(path)
    source = source_entry(p)
    header = read_header(p)
    require_columns(p, header, CSV_COLUMNS)
    present = CSV_COLUMNS + tuple(c for c in CSV_OPTIONAL if c in header)
    table, wrong = read_csv_columns(p, header, {c: pa.string() for c in present})
    empty = pc.equal(pc.utf8_length(table["track_uri"]), 0)
    empty_uris = pc.sum(empty).as_py() or 0
    if empty_uris:
        table = table.filter(pc.invert(empty))
    n = table.num_rows

    def column(name: str, fallback: pa.ChunkedArray | None = None):
        if name in table.column_names:
            return table[name]
        return fallback if fallback is not None else pa.chunked_array([pa.repeat("", n)])

    owner_codes, pid_dict = encode(table["pid"])
    track_codes, track_uris = encode(table["track_uri"])
    first = pa.array(first_positions(track_codes))
    artist_names = column("artist_name")
    artist_keys = pc.if_else(
        pc.equal(pc.utf8_length(column("artist_uri", artist_names)), 0),
        artist_names,
        column("artist_uri", artist_names),
    )
    pairs = owner_codes.astype(np.int64) * max(len(track_uris), 1) + track_codes
    _, pair_counts = np.unique(pairs, return_counts=True)
    manifest = {
        "source": {"data": source.result()},
        "dropped": {"wrong_field_count": wrong, "empty_track_uri": empty_uris},
        "notes": {
            "format": "mpd_csv",
            "rows_read": n + wrong + empty_uris,
            "entries_read": n,
            "duplicated_pairs": int((pair_counts > 1).sum()),
        },
    }
    ds = playlist_dataset(
        owner_codes=owner_codes,
        owner_keys=pid_dict,
        owner_names=pa.repeat("", len(pid_dict)),
        track_codes=track_codes,
        track_keys=track_uris,
        track_names=column("track_name").take(first),
        artist_keys=artist_keys.take(first),
        artist_names=artist_names.take(first),
        rank=None,
        manifest=manifest,
    )
    return require_rows(p, ds)

"""Shared, vectorised plumbing for the raw-data readers (Kaggle CSV, MPD JSON/CSV, audio features).

Every reader ends the same way: entries (owner, track) in file order become the canonical playlist
tables. Doing that once here keeps the readers short and makes sure they agree on what "first-seen
order", "duplicate in playlist" and "order" mean (see docs of :mod:`engine.data.canonical`).

Strings stay in Arrow (dictionary-encoded) so that 12.9M-row inputs never become Python objects:
whitespace trimming and normalisation run on the dictionary of distinct values only.

This module assembles the tables; :mod:`engine.data._files` reads the raw files and
:mod:`engine.data._codes` makes the codes. All three are private to :mod:`engine.data`.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from engine.data._codes import encode, factorize, run_starts
from engine.data.canonical import Dataset
from engine.errors import BadInput


def group_by_owner(owner: np.ndarray, rank: np.ndarray | None) -> np.ndarray | None:
    """Gather index that groups entries by owner (stable), then by ``rank``; None if already so.

    Owners are numbered in first-seen order, so grouping keeps each playlist's rows in file
    order. Rows mostly come in contiguous runs, so the runs are sorted, not the rows.
    """
    n = len(owner)
    starts = run_starts(owner)
    grouped = bool(np.all(np.diff(owner[starts]) > 0))
    if rank is not None:
        same = owner[1:] == owner[:-1]
        if grouped and not np.any(same & (rank[1:] < rank[:-1])):
            return None
        return np.lexsort((rank, owner))
    if grouped:
        return None
    perm = np.argsort(owner[starts], kind="stable")
    lens = np.diff(np.r_[starts, n])[perm]
    offsets = np.cumsum(lens) - lens
    return np.arange(n, dtype=np.int64) + np.repeat(starts[perm] - offsets, lens)


DEDUP_CHUNK = 1 << 16  # rows per hash table: small tables stay in cache (7x faster at 12.9M rows)


def first_in_owner(owner: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Mask of rows whose ``key`` has not appeared earlier for the same owner.

    ``owner`` must be grouped and ascending. A key can only repeat inside one owner, so the rows
    are de-duplicated in owner-aligned chunks (a loop over ~200 chunks, not over rows).
    """
    n = len(key)
    cuts = np.unique(np.r_[np.searchsorted(owner, owner[::DEDUP_CHUNK], "left"), n])
    keep = np.empty(n, bool)
    for s, e in itertools.pairwise(cuts):
        keep[s:e] = ~pd.Series(key[s:e], copy=False).duplicated(keep="first").to_numpy()
    return keep


def interactions(
    owner: np.ndarray, track: np.ndarray, n_tracks: int, rank: np.ndarray | None = None
) -> tuple[pd.DataFrame, int]:
    """Playlist interactions from entries in file order: (table, number of duplicates dropped).

    Entries are grouped by owner, ordered by ``rank`` when given (MPD ``pos``), a repeated track
    keeps its first position, and ``order`` is the 0-based position among the playlist's
    distinct tracks.
    """
    idx = group_by_owner(owner, rank)
    if idx is not None:
        owner, track = owner[idx], track[idx]
    keep = first_in_owner(owner, owner.astype(np.int64) * max(n_tracks, 1) + track)
    owner, track = owner[keep], track[keep]
    start = run_starts(owner)
    order = np.arange(len(owner), dtype=np.int64) - np.repeat(
        start, np.diff(np.r_[start, len(owner)])
    )
    return frame(
        owner_id=owner.astype(np.int32), track_id=track.astype(np.int32), order=order
    ), int(len(keep) - keep.sum())


def frame(**columns) -> pd.DataFrame:
    """A DataFrame built column by column: the dict constructor would copy all same-dtype columns
    into one 2-D block (0.5 s at 12.9M rows), which nothing downstream needs."""
    items = iter(columns.items())
    name, values = next(items)
    df = pd.DataFrame({name: values})
    for name, values in items:
        df[name] = values
    return df


def to_str_series(values: pa.Array | pa.ChunkedArray) -> pd.Series:
    """Arrow strings -> pandas ``str`` Series (pandas keeps them Arrow-backed, no Python objects)."""
    return pd.Series(values.to_pandas(), copy=False).reset_index(drop=True).astype(str)


def playlist_dataset(
    *,
    owner_codes: np.ndarray,
    owner_keys: pa.Array,
    owner_names: pa.Array,
    track_codes: np.ndarray,
    track_keys: pa.Array,
    track_names: pa.Array,
    artist_keys: pa.Array,
    artist_names: pa.Array,
    rank: np.ndarray | None,
    manifest: dict,
) -> Dataset:
    """Assemble a kind="playlist" Dataset.

    ``owner_codes``/``track_codes`` number every entry's playlist/track 0..n-1 in first-seen
    order; the per-owner and per-track arrays are indexed by those numbers. A track's artist is
    the artist of its first entry. The duplicate count is added to ``manifest["dropped"]``.
    """
    with ThreadPoolExecutor(1) as pool:  # the 12.9M-row part overlaps the per-track tables
        inter_job = pool.submit(interactions, owner_codes, track_codes, len(track_keys), rank)
        artist_codes, artist_first = factorize(encode(artist_keys)[0])
        owners = frame(
            owner_id=np.arange(len(owner_keys), dtype=np.int32),
            key=to_str_series(owner_keys),
            name=to_str_series(owner_names),
        )
        tracks = frame(
            track_id=np.arange(len(track_keys), dtype=np.int32),
            key=to_str_series(track_keys),
            name=to_str_series(track_names),
            artist_id=artist_codes,
        )
        artists = frame(
            artist_id=np.arange(len(artist_first), dtype=np.int32),
            name=to_str_series(artist_names.take(pa.array(artist_first))),
        )
        inter, dups = inter_job.result()
    manifest.setdefault("dropped", {})["duplicate_in_playlist"] = dups
    ds = Dataset("playlist", owners, tracks, artists, inter, manifest=manifest)
    ds.validate()
    return ds


def require_rows(path: Path, ds: Dataset) -> Dataset:
    """A dataset without a single interaction is unusable downstream: say so at ingest."""
    if len(ds.interactions):
        return ds
    notes = ds.manifest.get("notes", {})
    if notes.get("rows_read") == 0:
        raise BadInput(f"{path}: no data rows after the header")
    if notes.get("entries_read") == 0:
        raise BadInput(f"{path}: no playlist entries (every tracks list is empty)")
    dropped = ", ".join(f"{k}={v}" for k, v in ds.manifest.get("dropped", {}).items() if v)
    raise BadInput(
        f"{path}: no usable playlist rows" + (f" (dropped: {dropped})" if dropped else "")
    )

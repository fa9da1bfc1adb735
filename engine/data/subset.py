"""Seeded owner subsets (the ``--max-playlists`` of the training modes)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from engine.data.canonical import Dataset


def _reindex(table: pd.DataFrame, col: str, keep: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Keep rows of ``table`` whose ``col`` is in ``keep`` (sorted ids); renumber 0..n-1."""
    table = table[table[col].isin(keep)].copy()
    new_id = np.full(int(keep.max()) + 1 if len(keep) else 0, -1, dtype=np.int64)
    new_id[keep] = np.arange(len(keep))
    table[col] = new_id[table[col].to_numpy()].astype("int32")
    return table.reset_index(drop=True), new_id


def subset_owners(ds: Dataset, max_owners: int | None, seed: int = 0) -> Dataset:
    """A seeded random sample of at most ``max_owners`` owners (playlists or users) with at least
    one interaction, with their interactions, and the tracks/artists/genres those reach; ids are
    renumbered densely. Returns ``ds`` itself when it is already small enough."""
    active = np.unique(ds.interactions.owner_id.to_numpy())
    if max_owners is None or len(active) <= max_owners and len(active) == ds.num_owners:
        return ds
    rng = np.random.default_rng(seed)
    owners = np.sort(rng.choice(active, size=min(max_owners, len(active)), replace=False))
    inter = ds.interactions[ds.interactions.owner_id.isin(owners)]
    tracks_kept = np.unique(inter.track_id.to_numpy())
    artists_kept = np.unique(ds.tracks.artist_id.to_numpy()[tracks_kept])

    owners_t, owner_map = _reindex(ds.owners, "owner_id", owners)
    tracks_t, track_map = _reindex(ds.tracks, "track_id", tracks_kept)
    artists_t, artist_map = _reindex(ds.artists, "artist_id", artists_kept)
    tracks_t["artist_id"] = artist_map[tracks_t.artist_id.to_numpy()].astype("int32")
    inter = inter.copy()
    inter["owner_id"] = owner_map[inter.owner_id.to_numpy()].astype("int32")
    inter["track_id"] = track_map[inter.track_id.to_numpy()].astype("int32")

    artist_genres = features = None
    if ds.artist_genres is not None:
        artist_genres = ds.artist_genres[ds.artist_genres.artist_id.isin(artists_kept)].copy()
        artist_genres["artist_id"] = artist_map[artist_genres.artist_id.to_numpy()].astype("int32")
        artist_genres = artist_genres.reset_index(drop=True)
    if ds.track_features is not None:
        features = ds.track_features[ds.track_features.track_id.isin(tracks_kept)].copy()
        features["track_id"] = track_map[features.track_id.to_numpy()].astype("int32")
        features = features.reset_index(drop=True)
    manifest = dict(ds.manifest)
    manifest["subset"] = {"max_owners": int(max_owners), "seed": int(seed),
                          "owners_before": int(ds.num_owners), "owners_after": len(owners)}
    return Dataset(kind=ds.kind, owners=owners_t, tracks=tracks_t, artists=artists_t,
                   interactions=inter.reset_index(drop=True), genres=ds.genres,
                   artist_genres=artist_genres, track_features=features, manifest=manifest)

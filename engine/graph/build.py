"""Build the heterogeneous message-passing graph of one split stage.

Node types: owner (``"playlist"`` or ``"user"``), item (``"track"`` or ``"song"``), ``"artist"``,
and ``"genre"`` when any genre is known. Every edge type ``(a, "to", b)`` comes with its reverse
``(b, "to", a)`` whose columns mirror it one to one (same order, same ``edge_attr`` rows).

Edges
    owner-item    ``split.edges(stage)``: training edges only, deduplicated, split order kept
                  (session listens carry ``edge_attr`` = (log1p plays, mean completion);
                  with ``recency=True`` playlist edges carry :func:`recency_features`).
    item-artist   ``tracks.artist_id`` for every track (metadata, even with no training edge).
    genre edges   from the first available source:
      * artist genres (the ``--genres`` CSV, else the ``genres``/``artist_genres`` tables):
        artist-genre as given; item-genre = its artist's genres (metadata);
        owner-genre = playlist title words (playlists) or, for users, the genres g with
        share(u, g) = sum_{(u,s) train} plays(u,s) [g in genres(s)] / sum_{(u,s) train} plays(u,s)
        >= ``user_genre_share``.
      * otherwise, for playlists, titles only: playlist-genre = title words;
        count(t, g) = #{training playlists p containing t whose title names g}, kept when
        >= ``min_genre_count``; count(a, g) = sum over a's tracks t of count(t, g), same rule.
    CSV genre strings are mapped onto the title vocabulary (:func:`canonical_genre_map`) so titles
    and artists share genre nodes; table genres are used as the dataset names them, node ``i``
    being the ``i``-th row of ``genres`` by ``genre_id``. :func:`genre_vocabulary` gives the names.

Features ``x`` (float32; from ``stage`` edges only; audio features standardised by the mean and
std over all tracks that have them, a metadata statistic; then clipped to +-5):
    owner  [std(log1p(n_u)), mean_{i in N(u), has(i)} z_i (0 if none), |{i in N(u): has(i)}| / n_u]
    item   [std(log1p(deg_i)), z_i (0 when unmatched), has_i]
    artist [std(log1p(#tracks)), std(log1p(sum of its tracks' training degrees))]
    genre  none (ID embeddings only)
where std(.) standardises a count column over all nodes of its type in the stage graph.
Without ``track_features`` the owner and item rows are just their first column, so dims are
1 + F + 1 (F = numeric feature columns) or 1, a function of the dataset, never of the stage.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from engine.data.canonical import Dataset
from engine.graph.genres import canonical_genre_map, title_genres
from engine.graph.split import Split, rank_within_owner
from engine.graph.types import CSR, EdgeType, GraphData

OWNER_TYPE = {"playlist": "playlist", "session": "user"}
ITEM_TYPE = {"playlist": "track", "session": "song"}
CLIP = 5.0


@dataclass
class _Genres:
    """Genre node names plus the genre facts that do not depend on the split."""

    names: list[str]
    artist_pairs: tuple[np.ndarray, np.ndarray] | None  # (artist, genre) when artist genres known
    title_pairs: tuple[np.ndarray, np.ndarray]  # (owner, genre) from playlist titles


def _intern(names: list[str], new: list[str]) -> np.ndarray:
    """Indices of ``new`` in ``names``, appending unseen names (a loop over the genre vocabulary,
    never over data rows)."""
    index = {}
    for i, n in enumerate(names):
        index.setdefault(n, i)
    out = np.empty(len(new), dtype=np.int64)
    for k, n in enumerate(new):
        if n not in index:
            index[n] = len(names)
            names.append(n)
        out[k] = index[n]
    return out


def _expand(keys: np.ndarray, src: np.ndarray, val: np.ndarray, n_keys: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Join rows to a one-to-many table: for row ``r`` and every pair ``(keys[r], v)`` in
    ``(src, val)`` emit ``(r, v)``. Returns (row positions, values), vectorised via CSR offsets."""
    order = np.argsort(src, kind="stable")
    vals = val[order]
    indptr = np.zeros(n_keys + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(np.bincount(src, minlength=n_keys))
    c = indptr[keys + 1] - indptr[keys]
    rows = np.repeat(np.arange(len(keys), dtype=np.int64), c)
    within = np.arange(int(c.sum()), dtype=np.int64) - np.repeat(np.cumsum(c) - c, c)
    return rows, vals[np.repeat(indptr[keys], c) + within]


def _count_pairs(a: np.ndarray, b: np.ndarray, n_b: int, weights: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct pairs (a, b), sorted, with their multiplicity (or summed ``weights``)."""
    uniq, inv = np.unique(a.astype(np.int64) * max(n_b, 1) + b, return_inverse=True)
    count = np.bincount(inv.reshape(-1), weights=weights, minlength=len(uniq))
    return uniq // max(n_b, 1), uniq % max(n_b, 1), count


def _genre_sources(ds: Dataset, artist_genres: pd.DataFrame | None) -> _Genres:
    names: list[str] = []
    artist_pairs = None
    if artist_genres is not None:
        if not {"artist_id", "genre"} <= set(artist_genres.columns):
            raise ValueError("artist_genres needs columns artist_id and genre")
        a = artist_genres["artist_id"].to_numpy(np.int64)
        raw_codes, raw = pd.factorize(artist_genres["genre"].astype(str))
        cnames, r_idx, c_idx = canonical_genre_map(pd.Series(raw))
        rows, canon = _expand(raw_codes.astype(np.int64), r_idx, c_idx, len(raw))
        artist_pairs = (a[rows], _intern(names, cnames)[canon])
    elif ds.genres is not None and ds.artist_genres is not None:
        table = ds.genres.sort_values("genre_id", kind="stable")
        ids = table["genre_id"].to_numpy(np.int64)
        gmap = _intern(names, table["name"].astype(str).tolist())
        gid = ds.artist_genres["genre_id"].to_numpy(np.int64)
        pos = np.minimum(np.searchsorted(ids, gid), max(len(ids) - 1, 0))
        ok = (ids[pos] == gid) if len(ids) else np.zeros(len(gid), bool)
        artist_pairs = (ds.artist_genres["artist_id"].to_numpy(np.int64)[ok], gmap[pos[ok]])
    if artist_pairs is not None:
        ok = (artist_pairs[0] >= 0) & (artist_pairs[0] < ds.num_artists)
        artist_pairs = (artist_pairs[0][ok], artist_pairs[1][ok])

    title_pairs = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    if ds.kind == "playlist":
        tnames, owner, genre = title_genres(ds.owners["name"])
        title_pairs = (owner, _intern(names, tnames)[genre])
    return _Genres(names=names, artist_pairs=artist_pairs, title_pairs=title_pairs)


def genre_vocabulary(ds: Dataset, artist_genres: pd.DataFrame | None = None) -> list[str]:
    """Names of the genre nodes, in node order, as :func:`build_graph` numbers them (it does not
    depend on the split or the stage)."""
    return _genre_sources(ds, artist_genres).names


def _audio(ds: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """Standardised audio features [num_tracks, F] (0 where unmatched) and the has-features mask.

    z = clip((v - mean) / std, -5, 5), mean/std over all tracks with features (metadata); a missing
    value becomes 0 (the mean); a constant column has std 1.
    """
    tf = ds.track_features
    if tf is None:
        return None
    cols = [c for c in tf.columns if c != "track_id" and pd.api.types.is_numeric_dtype(tf[c])
            and not pd.api.types.is_bool_dtype(tf[c])]
    if not cols:
        return None
    tf = tf.drop_duplicates("track_id")
    ids = tf["track_id"].to_numpy(np.int64)
    ok = (ids >= 0) & (ids < ds.num_tracks)
    vals = tf[cols].to_numpy(np.float64)[ok]
    ids = ids[ok]
    feat = np.zeros((ds.num_tracks, len(cols)), dtype=np.float32)
    has = np.zeros(ds.num_tracks, dtype=bool)
    if len(ids):
        with np.errstate(all="ignore"):  # all-NaN columns are fine: they become 0
            mean = np.nan_to_num(np.nanmean(vals, 0))
            std = np.nan_to_num(np.nanstd(vals, 0))
        std[std == 0] = 1.0
        z = np.clip(np.nan_to_num((vals - mean) / std), -CLIP, CLIP)
        feat[ids] = z.astype(np.float32)
        has[ids] = True
    return feat, has


def _features(ds: Dataset, own: np.ndarray, item: np.ndarray) -> dict[str, np.ndarray]:
    n_own, n_item = ds.num_owners, ds.num_tracks
    own_deg = np.bincount(own, minlength=n_own).astype(np.float64)
    item_deg = np.bincount(item, minlength=n_item).astype(np.float64)
    owner_cols, item_cols = [np.log1p(own_deg)], [np.log1p(item_deg)]
    audio = _audio(ds)
    if audio is not None:
        feat, has = audio
        n_has = np.bincount(own, weights=has[item].astype(np.float64), minlength=n_own)
        # Column by column (an [E, F] gather would cost E*F floats at 12.9 M edges), each column
        # contiguous so the per-edge gather is not strided.
        for col in np.ascontiguousarray(feat.T, dtype=np.float64):
            s = np.bincount(own, weights=col[item], minlength=n_own)
            owner_cols.append(s / np.maximum(n_has, 1.0))
        owner_cols.append(n_has / np.maximum(own_deg, 1.0))
        item_cols += [feat[:, j] for j in range(feat.shape[1])] + [has.astype(np.float64)]
    artist = ds.tracks["artist_id"].to_numpy(np.int64)
    ok = artist >= 0
    art_tracks = np.bincount(artist[ok], minlength=ds.num_artists)
    art_deg = np.bincount(artist[ok], weights=item_deg[ok], minlength=ds.num_artists)
    stack = lambda cols: np.stack(cols, 1).astype(np.float32)
    owner_cols[0], item_cols[0] = _standardise(owner_cols[0]), _standardise(item_cols[0])
    return {"owner": stack(owner_cols), "item": stack(item_cols),
            "artist": stack([_standardise(np.log1p(art_tracks)), _standardise(np.log1p(art_deg))])}


def _standardise(col: np.ndarray) -> np.ndarray:
    """``(col - mean) / std`` over the column's nodes (std 1 when constant). Raw log-counts
    (about 4.5 for a playlist of 85 tracks) would outweigh ID embeddings initialised at std 0.1
    and give every node the same dominant direction."""
    std = col.std()
    return (col - col.mean()) / (std if std > 0 else 1.0)


def recency_features(owner: Tensor) -> Tensor:
    """Per playlist edge, how far from the end of its playlist's stage row the track sits:
    ``[log1p(r), r / max(n - 1, 1)]`` with ``r`` = 0 for the last track and ``n`` the row size.

    ``owner`` must list each playlist's edges contiguously in playlist order (the split's order).
    A GAT conv reading these as edge features can weight a playlist's recent tracks more: on MPD
    the held-out tracks are the last ones, and weighting item-kNN's sum by ``exp(-r / 25)`` lifts
    its validation Recall@10 by 15 %, though PlaylistGAT did not gain from it in quick mode
    (docs/results.md), hence off by default. Both columns come from the stage's own
    edges, so they never see held-out positions. (Kaggle's order is alphabetical, so there the
    columns carry no time signal; the model learns how much to use them.)
    """
    o = owner.numpy()
    if len(o) == 0:
        return torch.zeros(0, 2)
    if np.count_nonzero(o[1:] != o[:-1]) + 1 != len(np.unique(o)):
        raise ValueError("recency_features needs each playlist's edges listed contiguously")
    rank, size = rank_within_owner(o)
    r = (size - 1 - rank).astype(np.float64)
    cols = np.stack([np.log1p(r), r / np.maximum(size - 1, 1)], 1)
    return torch.from_numpy(cols.astype(np.float32))


def _interaction_edges(split: Split, stage: str, n_item: int
                       ) -> tuple[Tensor, Tensor | None]:
    """Stage edges without duplicate (owner, item) pairs, first occurrences in split order."""
    edges, weight = split.edges(stage)
    edges = edges.long().contiguous()
    e = edges.numpy()
    _, first = np.unique(e[0] * max(n_item, 1) + e[1], return_index=True)
    if len(first) < e.shape[1]:
        keep = torch.from_numpy(np.sort(first))
        edges = edges[:, keep]
        weight = weight[keep] if weight is not None else None
    return edges, (weight.float() if weight is not None else None)


def build_graph(ds: Dataset, split: Split, stage: str = "fit",
                artist_genres: pd.DataFrame | None = None, *, min_genre_count: int = 1,
                user_genre_share: float = 0.1, recency: bool = False) -> GraphData:
    """The message-passing graph of ``stage`` ("fit" or "train"); see the module docstring.

    ``artist_genres`` (from :func:`read_artist_genres_csv`) replaces every other artist-genre
    source. ``min_genre_count`` is the title-path threshold on count(t, g) and count(a, g);
    ``user_genre_share`` the threshold on share(u, g) for users. ``recency=True`` gives
    playlist edges their recency features (:func:`recency_features`).
    """
    ot, it = OWNER_TYPE[ds.kind], ITEM_TYPE[ds.kind]
    n_own, n_item, n_art = ds.num_owners, ds.num_tracks, ds.num_artists
    inter, weight = _interaction_edges(split, stage, n_item)
    if weight is None and ds.kind == "playlist" and recency:
        weight = recency_features(inter[0])
    own, item = inter[0].numpy(), inter[1].numpy()
    num_nodes = {ot: n_own, it: n_item, "artist": n_art}
    pairs: dict[EdgeType, tuple[np.ndarray, np.ndarray]] = {}
    genre_source = ""

    track_artist = ds.tracks["artist_id"].to_numpy(np.int64)
    has_artist = np.flatnonzero(track_artist >= 0)
    pairs[(it, "to", "artist")] = (has_artist, track_artist[has_artist])

    genres = _genre_sources(ds, artist_genres)
    if genres.names:
        n_gen = len(genres.names)
        num_nodes["genre"] = n_gen
        genre_source = "titles" if genres.artist_pairs is None else "artists"
        if genres.artist_pairs is not None:
            ag_a, ag_g, _ = _count_pairs(*genres.artist_pairs, n_gen)
            rows, tg_g = _expand(track_artist[has_artist], ag_a, ag_g, max(n_art, 1))
            tg_t = has_artist[rows]
            if ds.kind == "session":
                plays = (np.expm1(weight[:, 0].double().numpy()) if weight is not None
                         else np.ones(len(own)))
                e_rows, e_g = _expand(item, tg_t, tg_g, n_item)
                u, g, w = _count_pairs(own[e_rows], e_g, n_gen, plays[e_rows])
                total = np.bincount(own, weights=plays, minlength=n_own)
                keep = w >= user_genre_share * total[u] - 1e-9
                og = (u[keep], g[keep])
            else:
                og = genres.title_pairs
        else:
            og = genres.title_pairs
            # Track genres: the title genres of the training playlists that contain the track.
            e_rows, e_g = _expand(own, og[0], og[1], n_own)
            t, g, c = _count_pairs(item[e_rows], e_g, n_gen)
            a_of_t = track_artist[t]
            ok = a_of_t >= 0
            a, ag, ac = _count_pairs(a_of_t[ok], g[ok], n_gen, c[ok])
            keep_t, keep_a = c >= min_genre_count, ac >= min_genre_count
            tg_t, tg_g = t[keep_t], g[keep_t]
            ag_a, ag_g = a[keep_a], ag[keep_a]
        pairs[(ot, "to", "genre")] = og
        pairs[(it, "to", "genre")] = (tg_t, tg_g)
        pairs[("artist", "to", "genre")] = (ag_a, ag_g)

    edge_index: dict[EdgeType, Tensor] = {(ot, "to", it): inter, (it, "to", ot): inter.flip(0)}
    edge_attr: dict[EdgeType, Tensor] = {}
    if weight is not None:
        edge_attr[(ot, "to", it)] = edge_attr[(it, "to", ot)] = weight
    rank, size = rank_within_owner(own)  # the split lists each owner's row contiguously, in order
    pos = torch.from_numpy((size - 1 - rank).astype(np.int64))
    edge_pos = {(ot, "to", it): pos, (it, "to", ot): pos}
    for (src, rel, dst), (a, b) in pairs.items():  # a loop over edge types
        a, b, _ = _count_pairs(a, b, num_nodes[dst])  # deduplicated and sorted
        fwd = torch.from_numpy(np.stack([a, b]).astype(np.int64))
        edge_index[(src, rel, dst)] = fwd
        edge_index[(dst, rel, src)] = fwd.flip(0)

    feats = _features(ds, own, item)
    x = {ot: torch.from_numpy(feats["owner"]), it: torch.from_numpy(feats["item"]),
         "artist": torch.from_numpy(feats["artist"])}
    csr = {et: CSR.from_edge_index(ei, num_nodes[et[0]]) for et, ei in edge_index.items()}
    return GraphData(owner_type=ot, item_type=it, num_nodes=num_nodes, edge_index=edge_index,
                     csr=csr, x=x, edge_attr=edge_attr, genre_source=genre_source,
                     edge_pos=edge_pos)


def graph_summary(g: GraphData) -> dict:
    """Nodes per type, edges per type (``"src->dst"``), feature and edge-attribute dims."""
    return {
        "owner_type": g.owner_type, "item_type": g.item_type,
        "nodes": dict(g.num_nodes),
        "edges": {f"{s}->{d}": int(ei.size(1)) for (s, _, d), ei in g.edge_index.items()},
        "features": g.feature_dims(),
        "edge_attr": {f"{s}->{d}": int(a.size(1)) for (s, _, d), a in g.edge_attr.items()},
    }

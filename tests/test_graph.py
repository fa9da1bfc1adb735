"""Graph builder and title genres on hand-made datasets, with exact expected values."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from engine.data.canonical import Dataset
from engine.errors import BadInput
from engine.graph.build import build_graph, genre_vocabulary, graph_summary
from engine.graph.genres import GENRE_NAMES, read_artist_genres_csv, title_genres
from engine.graph.split import make_split
from engine.graph.types import GraphData, rev
from tests.test_split import SPLIT

MPD_SLICES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mpd" / "slices"

# Playlist -> tracks in order. With holdout=2: p0 (9 tracks) tests 7, 8 and validates 5, 6;
# p1 (7 tracks) tests 10, 1; p2, p3 train only. Tracks 8 and 10 are held-out only; 11 is unused.
PLAYLISTS = {0: [0, 1, 2, 3, 4, 5, 6, 7, 8], 1: [0, 2, 4, 6, 9, 10, 1], 2: [1, 3, 5], 3: [0, 9]}
TITLES = ["Chill Jazz Nights", "ROCK 2010", "hip-hop bangers", "Rockstar vibes"]
FIT = {0: {0, 1, 2, 3, 4}, 1: {0, 2, 4, 6, 9}, 2: {1, 3, 5}, 3: {0, 9}}
ENERGY = np.arange(9, dtype=np.float64)  # features for tracks 0..8 only


def _tracks(n: int, artists: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"track_id": np.arange(n, dtype=np.int32),
                         "key": [f"t{i}" for i in range(n)], "name": [f"t{i}" for i in range(n)],
                         "artist_id": np.array(artists, np.int32)})


def playlist_ds(energy: np.ndarray = ENERGY) -> Dataset:
    own = np.concatenate([[p] * len(t) for p, t in PLAYLISTS.items()]).astype(np.int32)
    order = np.concatenate([np.arange(len(t)) for t in PLAYLISTS.values()]).astype(np.int64)
    ds = Dataset(
        kind="playlist",
        owners=pd.DataFrame({"owner_id": np.arange(4, dtype=np.int32), "key": list("abcd"),
                             "name": TITLES}),
        tracks=_tracks(12, [i % 3 for i in range(11)] + [3]),
        artists=pd.DataFrame({"artist_id": np.arange(4, dtype=np.int32),
                              "name": ["A0", "A1", "A2", "Lonely"]}),
        interactions=pd.DataFrame({"owner_id": own,
                                   "track_id": np.concatenate(list(PLAYLISTS.values())).astype(
                                       np.int32), "order": order}),
        track_features=pd.DataFrame({"track_id": np.arange(9, dtype=np.int32),
                                     "energy": energy.astype(np.float32)}),
    )
    ds.validate()
    return ds


def session_ds() -> Dataset:
    # user 0: songs 0..5 first heard at t=1..6, song 0 three times -> fit {0,1,2,3}, val 4, test 5
    # user 1: songs 6, 7 (train only); user 2: song 0 once. Song s is by artist s % 3.
    ev = [(0, 0, 1, 0.2), (0, 1, 2, 1.0), (0, 2, 3, 1.0), (0, 3, 4, 1.0), (0, 4, 5, 1.0),
          (0, 5, 6, 1.0), (0, 0, 7, 0.4), (0, 0, 8, 0.9), (1, 6, 1, 0.5), (1, 7, 2, 1.0),
          (2, 0, 3, 1.0)]
    u, s, t, c = (np.array(col) for col in zip(*ev))
    ds = Dataset(
        kind="session",
        owners=pd.DataFrame({"owner_id": np.arange(3, dtype=np.int32), "key": list("xyz"),
                             "name": ["u0", "u1", "Jazz lover"]}),
        tracks=_tracks(8, [i % 3 for i in range(8)]),
        artists=pd.DataFrame({"artist_id": np.arange(3, dtype=np.int32), "name": ["R", "P", "J"]}),
        interactions=pd.DataFrame({"owner_id": u.astype(np.int32), "track_id": s.astype(np.int32),
                                   "order": t.astype(np.int64),
                                   "ms_played": (c * 200_000).astype(np.int32),
                                   "completion": c.astype(np.float32)}),
        genres=pd.DataFrame({"genre_id": np.array([2, 0, 1], np.int32),
                             "name": ["jazz", "rock", "pop"]}),
        artist_genres=pd.DataFrame({"artist_id": np.array([0, 1, 1, 2], np.int32),
                                    "genre_id": np.array([0, 1, 2, 2], np.int32)}),
    )
    ds.validate()
    return ds


def pairs(g: GraphData, et) -> set[tuple[int, int]]:
    return set(map(tuple, g.edge_index[et].t().tolist()))


def check_structure(g: GraphData) -> None:
    """Reverses mirror forward edges; CSR rows are the sorted neighbour sets; no duplicates."""
    for et, ei in g.edge_index.items():
        assert ei.dtype == torch.int64 and ei.dim() == 2 and ei.size(0) == 2
        assert torch.equal(g.edge_index[rev(et)], ei.flip(0)), et
        if et in g.edge_attr:
            assert torch.equal(g.edge_attr[rev(et)], g.edge_attr[et])
            assert g.edge_attr[et].size(0) == ei.size(1)
        assert len(pairs(g, et)) == ei.size(1), f"duplicate edges in {et}"
        csr = g.csr[et]
        assert csr.indptr.numel() == g.num_nodes[et[0]] + 1
        for i in range(g.num_nodes[et[0]]):
            row = csr.indices[csr.indptr[i]:csr.indptr[i + 1]].tolist()
            assert row == sorted(ei[1][ei[0] == i].tolist())
        assert torch.equal(ei[1][csr.perm], csr.indices)
        if ei.numel():
            assert int(ei[0].max()) < g.num_nodes[et[0]] and int(ei[1].max()) < g.num_nodes[et[2]]
    g.to_hetero_data().validate()


def test_title_genres_exact():
    names = pd.Series(["Chill Jazz Nights", "ROCK 2010", "hip-hop bangers", "Rockstar vibes",
                       "R&B and Rap", "K-Pop", None, "lo-fi beats", "Pop-Punk", "Reggaetón",
                       "EDM / house", "country roads", "Hiphop", "metallica trap"],
                      index=np.arange(100, 114))
    found, owner, genre = title_genres(names)
    got = {(int(o), found[g]) for o, g in zip(owner, genre)}
    assert got == {(0, "chill"), (0, "jazz"), (1, "rock"), (2, "hip hop"), (4, "r&b"),
                   (4, "hip hop"), (5, "k-pop"), (5, "pop"), (7, "lofi"), (8, "pop"),
                   (8, "punk"), (9, "reggaeton"), (10, "electronic"), (11, "country"),
                   (12, "hip hop"), (13, "trap")}
    assert found == [g for g in GENRE_NAMES if g in found]  # vocabulary order, only found ones
    assert list(zip(owner, genre)) == sorted(zip(owner, genre))
    assert title_genres(pd.Series(["nothing here", None]))[0] == []
    assert 35 <= len(GENRE_NAMES) <= 45


def test_playlist_graph_edges_and_genres():
    ds = playlist_ds()
    split = make_split(ds, holdout=2, **SPLIT)
    g = build_graph(ds, split, "fit")
    check_structure(g)
    assert g.num_nodes == {"playlist": 4, "track": 12, "artist": 4, "genre": 4}
    inter = pairs(g, g.interaction)
    assert inter == {(p, t) for p, ts in FIT.items() for t in ts}
    held = set(map(tuple, split.test.pairs().t().tolist())) | set(
        map(tuple, split.val.pairs().t().tolist()))
    assert held == {(0, 5), (0, 6), (0, 7), (0, 8), (1, 10), (1, 1)} and not inter & held
    # "train" adds validation edges, never test edges.
    gt = build_graph(ds, split, "train")
    check_structure(gt)
    assert pairs(gt, gt.interaction) == inter | {(0, 5), (0, 6)}
    assert gt.metadata() == g.metadata()
    # Tracks with no training edge (8, 10) or no edge at all (11) keep their artist edge.
    assert pairs(g, ("track", "to", "artist")) == {(t, t % 3) for t in range(11)} | {(11, 3)}

    names = genre_vocabulary(ds)
    assert names == ["rock", "hip hop", "jazz", "chill"]
    R, H, J, C = range(4)
    assert pairs(g, ("playlist", "to", "genre")) == {(0, J), (0, C), (1, R), (2, H)}
    assert pairs(g, ("track", "to", "genre")) == {
        (0, R), (0, J), (0, C), (1, J), (1, C), (1, H), (2, J), (2, C), (2, R), (3, J), (3, C),
        (3, H), (4, J), (4, C), (4, R), (5, H), (6, R), (9, R)}
    assert pairs(g, ("artist", "to", "genre")) == {(a, k) for a in range(3) for k in range(4)}
    # count(a0, rock) = 3, count(a0, jazz) = count(a0, chill) = count(a1, jazz) = ... = 2.
    g2 = build_graph(ds, split, "fit", min_genre_count=2)
    assert pairs(g2, ("track", "to", "genre")) == set()
    assert pairs(g2, ("artist", "to", "genre")) == {(0, R), (0, J), (0, C), (1, J), (1, C)}
    check_structure(g2)
    assert graph_summary(g)["edges"]["track->genre"] == 18


def std_log(counts) -> np.ndarray:
    v = np.log1p(np.asarray(counts, dtype=np.float64))
    return (v - v.mean()) / v.std()


def split_rows(edges: torch.Tensor, n: int) -> list[list[int]]:
    return [edges[1][edges[0] == o].tolist() for o in range(n)]


def test_playlist_features_exact_and_training_only():
    ds = playlist_ds()
    split = make_split(ds, holdout=2, **SPLIT)
    g = build_graph(ds, split, "fit")
    z = (ENERGY - ENERGY.mean()) / ENERGY.std()
    assert g.feature_dims() == {"playlist": 3, "track": 3, "artist": 2}
    # count columns are log1p(count) standardised over the type's nodes (population std)
    expect_p = [[std_log([5, 5, 3, 2])[0], z[[0, 1, 2, 3, 4]].mean(), 1.0],
                [std_log([5, 5, 3, 2])[1], z[[0, 2, 4, 6]].mean(), 0.8],
                [std_log([5, 5, 3, 2])[2], z[[1, 3, 5]].mean(), 1.0],
                [std_log([5, 5, 3, 2])[3], z[0], 0.5]]
    assert torch.allclose(g.x["playlist"], torch.tensor(expect_p, dtype=torch.float32), atol=1e-6)
    deg = [3, 2, 2, 2, 2, 1, 1, 0, 0, 2, 0, 0]
    zz = np.r_[z, 0, 0, 0]
    has = [1] * 9 + [0] * 3
    expect_t = np.stack([std_log(deg), zz, has], 1)
    assert torch.allclose(g.x["track"], torch.tensor(expect_t, dtype=torch.float32), atol=1e-6)
    expect_a = np.stack([std_log([4, 4, 3, 1]), std_log([3 + 2 + 1 + 2, 2 + 2, 2 + 1, 0])], 1)
    assert torch.allclose(g.x["artist"], torch.tensor(expect_a, dtype=torch.float32), atol=1e-6)
    assert "genre" not in g.x

    # Swapping two tracks' features keeps the standardisation; playlist 0 holds 5, 6 out at
    # "fit" (validation) and 7, 8 out always (test): its features must not move...
    def swapped(a: int, b: int) -> Dataset:
        e = ENERGY.copy()
        e[[a, b]] = e[[b, a]]
        return playlist_ds(e)
    for a, b in ((7, 8), (5, 6)):
        g_sw = build_graph(swapped(a, b), split, "fit")
        assert torch.equal(g_sw.x["playlist"][0], g.x["playlist"][0])
    assert torch.equal(build_graph(swapped(7, 8), split, "fit").x["playlist"], g.x["playlist"])
    # ...while swapping a training track of playlist 0 moves them (the test can fail).
    assert not torch.equal(build_graph(swapped(0, 8), split, "fit").x["playlist"][0],
                           g.x["playlist"][0])
    # At "train" the validation tracks 5, 6 are training tracks of playlist 0.
    gt = build_graph(ds, split, "train")
    # playlist 0 gains its 2 validation tracks; the column is standardised over the train stage
    n_train = [len(r) for r in split_rows(split.train, 4)]
    assert n_train[0] == 7
    assert gt.x["playlist"][0, 0].item() == pytest.approx(std_log(n_train)[0], abs=1e-6)
    assert gt.x["playlist"][0, 1].item() == pytest.approx(z[:7].mean(), abs=1e-6)

    # Without audio features the dims shrink consistently.
    ds.track_features = None
    g0 = build_graph(ds, split, "fit")
    assert g0.feature_dims() == {"playlist": 1, "track": 1, "artist": 2}
    assert torch.equal(g0.x["playlist"], g.x["playlist"][:, :1])


def test_session_graph():
    ds = session_ds()
    split = make_split(ds, holdout=5, **SPLIT)
    g = build_graph(ds, split, "fit")
    check_structure(g)
    assert (g.owner_type, g.item_type) == ("user", "song")
    assert g.num_nodes == {"user": 3, "song": 8, "artist": 3, "genre": 3}
    assert pairs(g, g.interaction) == {(0, 0), (0, 1), (0, 2), (0, 3), (1, 6), (1, 7), (2, 0)}
    ea = g.edge_attr[g.interaction]
    assert ea.shape == (7, 2) and g.edge_attr[rev(g.interaction)].shape == (7, 2)
    col = {tuple(p): k for k, p in enumerate(g.edge_index[g.interaction].t().tolist())}
    assert torch.allclose(ea[col[(0, 0)]], torch.tensor([math.log1p(3), 0.5]), atol=1e-6)
    assert torch.allclose(ea[col[(1, 6)]], torch.tensor([math.log1p(1), 0.5]), atol=1e-6)
    # Genre nodes follow genre_id: 0 rock, 1 pop, 2 jazz.
    assert genre_vocabulary(ds) == ["rock", "pop", "jazz"]
    ROCK, POP, JAZZ = range(3)
    assert pairs(g, ("artist", "to", "genre")) == {(0, ROCK), (1, POP), (1, JAZZ), (2, JAZZ)}
    song_g = {0: {ROCK}, 1: {POP, JAZZ}, 2: {JAZZ}}
    assert pairs(g, ("song", "to", "genre")) == {(s, k) for s in range(8) for k in song_g[s % 3]}
    # user 0 plays: song 0 x3 (rock), 1 (pop, jazz), 2 (jazz), 3 (rock): rock 4/6, jazz 2/6,
    # pop 1/6. The title "Jazz lover" of user 2 is not a genre source for users.
    everything = {(0, ROCK), (0, POP), (0, JAZZ), (1, ROCK), (1, POP), (1, JAZZ), (2, ROCK)}
    assert pairs(g, ("user", "to", "genre")) == everything
    g2 = build_graph(ds, split, "fit", user_genre_share=0.2)
    assert pairs(g2, ("user", "to", "genre")) == everything - {(0, POP)}
    assert g.feature_dims() == {"user": 1, "song": 1, "artist": 2}
    assert g.x["user"][:, 0].tolist() == pytest.approx(std_log([4, 2, 1]).tolist(), abs=1e-6)
    gt = build_graph(ds, split, "train")
    check_structure(gt)
    assert pairs(gt, gt.interaction) == pairs(g, g.interaction) | {(0, 4)}
    # No genre source at all: no genre node type.
    ds.genres = ds.artist_genres = None
    g0 = build_graph(ds, split, "fit")
    check_structure(g0)
    assert g0.node_types == ["user", "song", "artist"] and len(g0.edge_types) == 4


def test_playlists_without_genre_words_have_no_genre_nodes():
    ds = playlist_ds()
    ds.owners["name"] = ["a", "b", None, "Rockstar"]
    g = build_graph(ds, make_split(ds, holdout=2, **SPLIT), "fit")
    check_structure(g)
    assert g.node_types == ["playlist", "track", "artist"]


def test_genres_csv(tmp_path):
    ds = playlist_ds()
    f = tmp_path / "genres.csv"
    f.write_text("artist_name,genres\n a0 ,Dance Pop;indie\nA1,shoegaze|pop\nnobody,rock\n"
                 "A0,indie\n")
    ag = read_artist_genres_csv(f, ds.artists)
    assert ag.to_dict("list") == {"artist_id": [0, 0, 1, 1],
                                  "genre": ["dance pop", "indie", "pop", "shoegaze"]}
    assert ag.attrs == {"rows": 4, "matched_rows": 3, "artists_matched": 2}

    split = make_split(ds, holdout=2, **SPLIT)
    g = build_graph(ds, split, "fit", artist_genres=ag)
    check_structure(g)
    names = genre_vocabulary(ds, ag)
    assert names == ["pop", "indie", "dance", "shoegaze", "rock", "hip hop", "jazz", "chill"]
    ix = {n: i for i, n in enumerate(names)}
    a_g = {0: {"pop", "indie", "dance"}, 1: {"pop", "shoegaze"}}
    assert pairs(g, ("artist", "to", "genre")) == {(a, ix[n]) for a, s in a_g.items() for n in s}
    # Track genres are their artist's (every track of artists 0, 1), titles still name playlists.
    assert pairs(g, ("track", "to", "genre")) == {
        (t, ix[n]) for t in range(11) if t % 3 in a_g for n in a_g[t % 3]}
    assert pairs(g, ("playlist", "to", "genre")) == {
        (0, ix["jazz"]), (0, ix["chill"]), (1, ix["rock"]), (2, ix["hip hop"])}

    bad = tmp_path / "bad.csv"
    bad.write_text("artist,genre\nA0,pop\n")
    with pytest.raises(BadInput, match="artist_name"):
        read_artist_genres_csv(bad, ds.artists)
    with pytest.raises(BadInput, match="not found"):
        read_artist_genres_csv(tmp_path / "missing.csv", ds.artists)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(BadInput):
        read_artist_genres_csv(empty, ds.artists)


def test_duplicate_split_edges_are_dropped():
    ds = playlist_ds()
    split = make_split(ds, holdout=2, **SPLIT)
    split.fit = torch.cat([split.fit, split.fit[:, :3]], 1)
    g = build_graph(ds, split, "fit")
    check_structure(g)
    assert pairs(g, g.interaction) == {(p, t) for p, ts in FIT.items() for t in ts}
    assert torch.equal(g.edge_index[g.interaction], split.fit[:, :15])  # split order kept


def test_mpd_slices():
    try:
        from engine.data.mpd import read_mpd
    except ImportError:
        pytest.skip("engine.data.mpd is not available yet")
    if not MPD_SLICES.is_dir():
        pytest.skip("no MPD slices")
    t0 = time.perf_counter()
    ds = read_mpd(MPD_SLICES)
    split = make_split(ds, holdout=5, **SPLIT)
    g = build_graph(ds, split, "train")
    took = time.perf_counter() - t0
    s = graph_summary(g)
    print(s, f"{took:.1f}s")
    assert s["nodes"]["playlist"] == ds.num_owners and s["nodes"]["track"] == ds.num_tracks
    # Reference figures of shared/data/README.md count the 2,655 playlists with >= 10 distinct
    # tracks: 242,893 training edges, 13,275 held out; shorter playlists add training edges only.
    ei = g.edge_index[g.interaction].numpy()
    size = np.bincount(ei[0], minlength=ds.num_owners) + np.bincount(
        split.test.pairs()[0].numpy(), minlength=ds.num_owners)
    assert s["edges"]["playlist->track"] == int(split.train.size(1))
    assert (size >= 10).sum() == 2655 and (size[ei[0]] >= 10).sum() == 242_893
    assert split.test.items.numel() == 13_275
    assert "genre" in g.num_nodes and s["edges"]["playlist->genre"] > 0
    g.to_hetero_data().validate()


def test_playlist_edges_carry_recency_from_their_stage_only():
    from engine.graph.build import recency_features

    owner = torch.tensor([0, 0, 0, 2, 2, 5])
    want = [[math.log1p(2), 1.0], [math.log1p(1), 0.5], [0.0, 0.0],
            [math.log1p(1), 1.0], [0.0, 0.0], [0.0, 0.0]]
    assert torch.allclose(recency_features(owner), torch.tensor(want), atol=1e-6)
    with pytest.raises(ValueError, match="contiguous"):
        recency_features(torch.tensor([0, 1, 0]))

    ds = playlist_ds()
    split = make_split(ds, holdout=2, **SPLIT)
    for stage in ("fit", "train"):
        g = build_graph(ds, split, stage, recency=True)
        ei, ea = g.edge_index[g.interaction], g.edge_attr[g.interaction]
        assert torch.equal(g.edge_attr[rev(g.interaction)], ea)
        edges, _ = split.edges(stage)
        assert torch.equal(ei, edges)  # no duplicates here: the split's order is kept
        assert torch.equal(ea, recency_features(edges[0]))
        # each playlist's last stage track has r = 0 (held-out positions never count)
        last = torch.ones(ei.size(1), dtype=torch.bool)
        last[:-1] = ei[0, 1:] != ei[0, :-1]
        assert (ea[last] == 0).all() and (ea[~last, 0] > 0).all()
    assert not build_graph(ds, split, "fit").edge_attr  # off by default

"""The protocol split, on hand-made data with exact expected sets."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from engine.data.canonical import Dataset
from engine.graph.split import make_split

# make_split's settings but holdout, as these tests use them (make_split has no defaults)
SPLIT = {"val_ratio": 0.15, "test_ratio": 0.15, "max_val_owners": None, "seed": 0}


def _dataset(kind: str, rows: list[tuple], extra: dict | None = None) -> Dataset:
    inter = pd.DataFrame(rows, columns=["owner_id", "track_id", "order"]).astype(
        {"owner_id": "int32", "track_id": "int32", "order": "int64"})
    for k, v in (extra or {}).items():
        inter[k] = v
    n_own, n_tr = int(inter.owner_id.max()) + 1, int(inter.track_id.max()) + 1
    return Dataset(
        kind=kind,
        owners=pd.DataFrame({"owner_id": np.arange(n_own, dtype="int32"),
                             "key": [str(i) for i in range(n_own)], "name": ["p"] * n_own}),
        tracks=pd.DataFrame({"track_id": np.arange(n_tr, dtype="int32"),
                             "key": [str(i) for i in range(n_tr)], "name": ["t"] * n_tr,
                             "artist_id": np.zeros(n_tr, dtype="int32")}),
        artists=pd.DataFrame({"artist_id": np.zeros(1, dtype="int32"), "name": ["a"]}),
        interactions=inter)


def _sets(heldout) -> dict[int, set[int]]:
    pairs = heldout.pairs().T.tolist()
    out: dict[int, set[int]] = {}
    for o, i in pairs:
        out.setdefault(o, set()).add(i)
    return out


def test_playlists_hold_out_their_last_tracks_by_position():
    # playlist 0: 3 tracks (too short); 1: 10 tracks; 2: 16 tracks, stored out of order
    rows = [(0, t, t) for t in range(3)] + [(1, 10 + t, t) for t in range(10)]
    rows += [(2, 30 + t, 15 - t) for t in range(16)]  # position 15 - t: track 30 is last
    split = make_split(_dataset("playlist", rows), holdout=5, **SPLIT)
    assert _sets(split.test) == {1: {15, 16, 17, 18, 19}, 2: {30, 31, 32, 33, 34}}
    # validation: last 5 of the rest, only where 10 remain (playlist 2: 11 remain)
    assert _sets(split.val) == {2: {35, 36, 37, 38, 39}}
    train = set(map(tuple, split.train.T.tolist()))
    fit = set(map(tuple, split.fit.T.tolist()))
    test = set(map(tuple, split.test.pairs().T.tolist()))
    val = set(map(tuple, split.val.pairs().T.tolist()))
    assert not train & test and not fit & val and train == fit | val
    assert len(train) + len(test) == len(rows)


def test_validation_owner_cap_is_a_seeded_sample():
    rows = [(p, 100 * p + t, t) for p in range(20) for t in range(20)]
    a = make_split(_dataset("playlist", rows), **{**SPLIT, "holdout": 5,
                                                   "max_val_owners": 4, "seed": 1})
    b = make_split(_dataset("playlist", rows), **{**SPLIT, "holdout": 5,
                                                   "max_val_owners": 4, "seed": 1})
    assert len(a.val) == 4 and torch.equal(a.val.owners, b.val.owners)
    assert len(a.test) == 20  # the test split is never sampled


def test_sessions_split_songs_by_first_listen():
    # user 0 listens to 10 songs, song s first at time 100 - s (so song 9 first), song 0 twice;
    # user 1 has only 4 distinct songs: trains only.
    rows = [(0, s, 100 - s) for s in range(10)] + [(0, 0, 1000)]
    rows += [(1, 20 + s, s) for s in range(4)]
    comp = [1.0] * 10 + [0.0] + [1.0] * 4
    split = make_split(_dataset("session", rows, {"completion": np.array(comp, "float32")}),
                       holdout=5, **SPLIT)
    # order by first listen: 9, 8, ..., 0 -> test = last round(1.5) = 2 songs, val = next 2
    assert _sets(split.test) == {0: {1, 0}}
    assert _sets(split.val) == {0: {3, 2}}
    fit = split.fit.T.tolist()
    assert sorted(i for o, i in fit if o == 0) == [4, 5, 6, 7, 8, 9]
    assert sorted(i for o, i in fit if o == 1) == [20, 21, 22, 23]
    # weights: log1p(plays), mean completion; song 0 is in test so no weight is visible for it
    assert split.fit_weight.shape == (split.fit.size(1), 2)
    assert torch.allclose(split.fit_weight[:, 0], torch.log1p(torch.ones(split.fit.size(1))))

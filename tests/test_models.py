"""The three GAT recommenders on tiny hand-made graphs: shapes, determinism, learning, gradients
reaching every parameter, node indexing, the genre-weight mix and cold items."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from engine.graph.types import EdgeType, Subgraph, rev
from engine.models import (
    EnhancedGATRecommender,
    GATRecommender,
    PlaylistGAT,
    PlaylistGATOptions,
    build_model,
    count_parameters,
    model_option_names,
    score,
    score_bias,
)

pytestmark = pytest.mark.usefixtures("one_thread")


OWNER, ITEM = "playlist", "track"
N = {"playlist": 6, "track": 20, "artist": 5, "genre": 3}
COLD = 19  # the track without playlist edges
FEATURES = {"playlist": 4, "track": 5, "artist": 3}
EDGE_ATTR = {(OWNER, "to", ITEM): 2, (ITEM, "to", OWNER): 2}


def _pairs(owner_genre: bool) -> dict[EdgeType, list[tuple[int, int]]]:
    p2t = [(p, (3 * p + k) % 19) for p in range(6) for k in range(5)]  # tracks 0..18
    t2a = [(t, t % 5) for t in range(20)] + [(0, 1), (7, 3)]  # two tracks with a featured artist
    t2g = [(t, t % 3) for t in range(20)] + [(t, (t + 1) % 3) for t in range(0, 20, 4)]
    a2g = [(a, g) for a in range(5) for g in (a % 3, (a + 1) % 3)]
    pairs = {(OWNER, "to", ITEM): p2t, (ITEM, "to", "artist"): t2a, (ITEM, "to", "genre"): t2g,
             ("artist", "to", "genre"): a2g}
    if owner_genre:  # as from playlist titles
        pairs[(OWNER, "to", "genre")] = [(p, g) for p in range(6) for g in {p % 3, p // 2 % 3}]
    return pairs


def _graph(owner_genre: bool = True) -> Subgraph:
    """The whole tiny graph as a Subgraph (identity ``n_id``), every edge type with its reverse;
    without ``owner_genre`` owners reach genres only through their tracks."""
    gen = torch.Generator().manual_seed(0)
    edge_index: dict[EdgeType, torch.Tensor] = {}
    for et, pairs in _pairs(owner_genre).items():
        ei = torch.tensor(pairs, dtype=torch.long).t().contiguous()
        edge_index[et], edge_index[rev(et)] = ei, ei.flip(0)
    attr = torch.rand(edge_index[(OWNER, "to", ITEM)].size(1), 2, generator=gen)
    pos = torch.arange(edge_index[(OWNER, "to", ITEM)].size(1)) % 5  # row positions (5 a row)
    return Subgraph(
        n_id={t: torch.arange(n) for t, n in N.items()},
        edge_index=edge_index,
        x={t: torch.randn(N[t], d, generator=gen) for t, d in FEATURES.items()},
        edge_attr={(OWNER, "to", ITEM): attr, (ITEM, "to", OWNER): attr},
        edge_pos={(OWNER, "to", ITEM): pos, (ITEM, "to", OWNER): pos},
    )


def _meta(sub: Subgraph) -> dict:  # the edge types are the subgraph's
    return {"num_nodes": dict(N), "owner_type": OWNER, "item_type": ITEM,
            "edge_types": list(sub.edge_index), "feature_dims": dict(FEATURES),
            "edge_attr_dims": dict(EDGE_ATTR)}


# The models' training hyper-parameters have no defaults (their one default is TrainConfig's);
# these tests pass the values the models defaulted to when the tests were written.
KNN_EXP = {"knn_pop_exp": 0.5, "knn_len_exp": 0.0}  # the cosine (no term with knn_init 0)
PLAYLIST_HPARAMS = {"embedding_dim": 64, "heads": 4, "num_layers": 2, "dropout": 0.1,
                    "genre_weight": 0.0, "knn_init": 0.0, **KNN_EXP}
ENHANCED_HPARAMS = {**PLAYLIST_HPARAMS, "genre_weight": 0.2}

CONFIGS = {
    "basic": {"embedding_dim": 16, "heads": 4, "dropout": 0.0},
    "enhanced": {"embedding_dim": 16, "heads": 2, "num_layers": 2, "dropout": 0.1,
                 "genre_weight": 0.5, "knn_init": 0.0, **KNN_EXP},
    "playlist": {"embedding_dim": 16, "heads": 2, "num_layers": 2, "dropout": 0.1,
                 "genre_weight": 0.0, "knn_init": 0.0, **KNN_EXP},
    "playlist-genre": {"embedding_dim": 16, "heads": 2, "num_layers": 2, "dropout": 0.1,
                       "genre_weight": 0.5, "knn_init": 0.0, **KNN_EXP,
                       "id_embeddings": {"playlist", "artist", "genre"}},
}


def _build(key: str, sub: Subgraph, seed: int = 0, **extra) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(key.split("-")[0], _meta(sub), **{**CONFIGS[key], **extra})


def _triples(sub: Subgraph) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed BPR triples (playlist, track in it, track not in it)."""
    gen = torch.Generator().manual_seed(1)
    owners, pos = sub.edge_index[(OWNER, "to", ITEM)]
    member = torch.zeros(N[OWNER], N[ITEM], dtype=torch.bool)
    member[owners, pos] = True
    neg = torch.randint(0, N[ITEM], (owners.numel(),), generator=gen)
    for _ in range(50):
        clash = member[owners, neg]
        if not clash.any():
            break
        neg[clash] = torch.randint(0, N[ITEM], (int(clash.sum()),), generator=gen)
    assert not member[owners, neg].any()
    return owners, pos, neg


def _bpr(model: torch.nn.Module, sub: Subgraph, triples) -> torch.Tensor:
    owners, pos, neg = triples
    vecs, bias = model(sub), score_bias(model, sub)
    return -F.logsigmoid(score(vecs, owners, pos, bias=bias)
                         - score(vecs, owners, neg, bias=bias)).mean()


@pytest.mark.parametrize("key", list(CONFIGS))
def test_shapes_and_eval_determinism(key):
    sub = _graph()
    model = _build(key, sub).eval()
    out = model(sub)
    assert list(out) == [OWNER, ITEM]
    dim = out[OWNER].size(1)
    assert dim in (16, 32)
    assert out[OWNER].shape == (N[OWNER], dim) and out[ITEM].shape == (N[ITEM], dim)
    assert torch.isfinite(out[OWNER]).all() and torch.isfinite(out[ITEM]).all()
    again = model(sub)
    assert torch.equal(out[OWNER], again[OWNER]) and torch.equal(out[ITEM], again[ITEM])


@pytest.mark.parametrize("key", list(CONFIGS))
def test_bpr_loss_falls(key):
    sub, triples = _graph(), None
    triples = _triples(sub)
    model = _build(key, sub, dropout=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    with torch.no_grad():
        before = float(_bpr(model.eval(), sub, triples))
    model.train()
    for _ in range(30):
        opt.zero_grad()
        _bpr(model, sub, triples).backward()
        opt.step()
    with torch.no_grad():
        after = float(_bpr(model.eval(), sub, triples))
    print(f"{key}: BPR {before:.4f} -> {after:.4f}")
    assert after < 0.7 * before


@pytest.mark.parametrize("owner_genre", [True, False])
@pytest.mark.parametrize("key", list(CONFIGS))
def test_every_parameter_gets_a_gradient(key, owner_genre):
    sub = _graph(owner_genre)
    model = _build(key, sub)
    if getattr(model, "genre", None) is not None:  # both owner routes of the genre path
        assert model.genre.owner_edge[0] == ("genre" if owner_genre else ITEM)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    triples = _triples(sub)
    for _ in range(2):  # the second step's gradients come from moved parameters
        opt.zero_grad()
        _bpr(model, sub, triples).backward()
        opt.step()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.any()]
    assert not missing, f"no gradient: {missing}"
    assert not zero, f"all-zero gradient: {zero}"


@pytest.mark.parametrize("key", list(CONFIGS))
def test_local_indexing_uses_global_ids(key):
    """A relabelled subgraph (shuffled local order) gives every global node the same vector."""
    sub = _graph()
    model = _build(key, sub).eval()
    full = model(sub)
    gen = torch.Generator().manual_seed(3)
    perm = {t: torch.randperm(n, generator=gen) for t, n in N.items()}  # local -> global
    inv = {t: torch.argsort(p) for t, p in perm.items()}  # global -> local
    shuffled = Subgraph(
        n_id=perm,
        edge_index={et: torch.stack([inv[et[0]][ei[0]], inv[et[2]][ei[1]]])
                    for et, ei in sub.edge_index.items()},
        x={t: x[perm[t]] for t, x in sub.x.items()},
        edge_attr=dict(sub.edge_attr),  # edge order is unchanged
    )
    out = model(shuffled)
    for t in (OWNER, ITEM):
        torch.testing.assert_close(out[t], full[t][perm[t]], rtol=1e-5, atol=1e-6)


def test_pickle_and_identical_builds():
    sub = _graph()
    for key in CONFIGS:
        a, b = _build(key, sub, seed=7).eval(), _build(key, sub, seed=7).eval()
        assert list(a.state_dict()) == list(b.state_dict())
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                    b.state_dict().values()))
        c = pickle.loads(pickle.dumps(a))
        torch.testing.assert_close(c(sub)[ITEM], a(sub)[ITEM])


def test_basic_parameter_count():
    """Embeddings are (1000 + 5000 + 500) * 32 = 208,000; the three bipartite GATConvs (4 heads of
    8 concatenated) add 2*32*32 (lin_src, lin_dst) + 2*32 (att_src, att_dst) + 32 (bias) = 2,144
    each. The often-quoted "about 206K" cannot hold, as embeddings alone exceed it; the band is
    embeddings plus at most 5 % for the attention layer."""
    ets = [("user", "to", "song"), ("song", "to", "user"), ("song", "to", "artist"),
           ("artist", "to", "song")]
    model = build_model("basic", {"num_nodes": {"user": 1000, "song": 5000, "artist": 500},
                                  "owner_type": "user", "item_type": "song", "edge_types": ets,
                                  "feature_dims": {}, "edge_attr_dims": {}},
                        embedding_dim=32, heads=4, dropout=0.0)
    n = count_parameters(model)
    print(f"basic @ 1000/5000/500, D=32: {n:,} parameters")
    assert n == 208_000 + 3 * 2_144
    assert 208_000 < n <= 208_000 * 1.05


def _user_song() -> Subgraph:
    """5 users, 6 songs, 2 artists; song 0 is linked only to user 3."""
    us = [(3, 0), (3, 4), (1, 1), (1, 2), (0, 3), (0, 4), (2, 5), (2, 1), (4, 2), (4, 3)]
    sa = [(s, s % 2) for s in range(6)]
    ei = {}
    for et, pairs in ((("user", "to", "song"), us), (("song", "to", "artist"), sa)):
        t = torch.tensor(pairs).t().contiguous()
        ei[et], ei[rev(et)] = t, t.flip(0)
    return Subgraph(n_id={"user": torch.arange(5), "song": torch.arange(6),
                          "artist": torch.arange(2)}, edge_index=ei)


def test_basic_routes_messages_to_the_right_nodes():
    sub = _user_song()
    torch.manual_seed(0)
    model = GATRecommender({"user": 5, "song": 6, "artist": 2}, "user", "song",
                           list(sub.edge_index), embedding_dim=8, heads=2, dropout=0.0).eval()
    base = model(sub)

    def after(node_type: str, node: int) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            weight = model.emb[node_type].weight
            old = weight[node].clone()
            weight[node] += 1.0
            out = model(sub)
            weight[node] = old
        return out

    assert not torch.allclose(after("user", 3)["song"][0], base["song"][0])
    assert torch.equal(after("user", 1)["song"][0], base["song"][0])
    assert not torch.allclose(after("song", 0)["user"][3], base["user"][3])
    assert torch.equal(after("song", 0)["user"][1], base["user"][1])
    assert not torch.allclose(after("artist", 0)["song"][0], base["song"][0])  # song 0: artist 0
    assert torch.equal(after("artist", 1)["song"][0], base["song"][0])


def test_attention_is_kept_on_request():
    sub = _graph()
    for key in ("basic", "enhanced", "playlist"):
        model = _build(key, sub).eval()
        model(sub)
        assert model.last_attention == {}
        model.keep_attention = True
        model(sub)
        assert model.last_attention, key
        for et, (ei, alpha) in model.last_attention.items():
            assert torch.equal(ei, sub.edge_index[et])
            assert alpha.shape == (ei.size(1), CONFIGS[key]["heads"])
            sums = torch.zeros(N[et[2]], alpha.size(1)).index_add_(0, ei[1], alpha)
            has_in = torch.bincount(ei[1], minlength=N[et[2]]) > 0
            torch.testing.assert_close(sums[has_in], torch.ones_like(sums[has_in]))
    assert model.last_attention.keys() <= set(sub.edge_index)


def test_enhanced_genre_weight_mixes_scores():
    sub = _graph()
    owners, pos, _ = _triples(sub)
    changed = {}
    for w in (0.0, 0.5, 1.0):
        model = _build("enhanced", sub, genre_weight=w).eval()
        assert isinstance(model, EnhancedGATRecommender)
        collab, genre = model.components(sub)
        expected = ((1 - w) * (collab[OWNER][owners] * collab[ITEM][pos]).sum(-1)
                    + w * (genre[OWNER][owners] * genre[ITEM][pos]).sum(-1))
        base = score(model(sub), owners, pos)
        torch.testing.assert_close(base, expected, rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            model.genre_emb.weight.add_(torch.randn_like(model.genre_emb.weight))
        changed[w] = not torch.equal(score(model(sub), owners, pos), base)
    assert changed == {0.0: False, 0.5: True, 1.0: True}
    with pytest.raises(ValueError):
        _build("enhanced", sub, genre_weight=1.5)


def test_enhanced_without_genres():
    sub = _graph()
    sub.edge_index = {et: ei for et, ei in sub.edge_index.items() if "genre" not in et}
    meta = {**_meta(sub), "edge_types": list(sub.edge_index)}
    with pytest.raises(ValueError, match="genre"):
        build_model("enhanced", meta, **{**ENHANCED_HPARAMS, "genre_weight": 0.5})
    model = build_model("enhanced", meta, **{**ENHANCED_HPARAMS, "embedding_dim": 16,
                                             "genre_weight": 0.0})
    assert model(sub)[ITEM].shape == (N[ITEM], 16)


@pytest.mark.parametrize("key", ["playlist", "playlist-genre"])
def test_playlist_gat_cold_track_hears_its_artist(key):
    sub = _graph()
    assert COLD not in sub.edge_index[(OWNER, "to", ITEM)][1]
    model = _build(key, sub).eval()
    assert isinstance(model, PlaylistGAT)
    base = model(sub)[ITEM][COLD]
    assert base.norm() > 0.1
    artist = COLD % 5
    with torch.no_grad():
        model.emb["artist"].weight[artist] += 1.0
        assert not torch.allclose(model(sub)[ITEM][COLD], base)
    # With one layer only its own artist (not another, reachable in 2 hops via genres) counts.
    model = _build(key, sub, num_layers=1).eval()
    base = model(sub)[ITEM][COLD]
    with torch.no_grad():
        model.emb["artist"].weight[(artist + 1) % 5] += 1.0
        torch.testing.assert_close(model(sub)[ITEM][COLD], base)
        model.emb["artist"].weight[artist] += 1.0
        assert not torch.allclose(model(sub)[ITEM][COLD], base)


def test_playlist_gat_options():
    sub = _graph()
    meta = _meta(sub)
    every = ["playlist", "track", "artist"]
    model = build_model("playlist", meta, **{**PLAYLIST_HPARAMS, "embedding_dim": 16},
                        id_embeddings=["playlist", "genre"], feature_types=every)
    assert set(model.emb) == {"playlist", "genre"}
    assert model(sub)[ITEM].shape == (N[ITEM], 16)
    with pytest.raises(ValueError, match="neither"):
        build_model("playlist", meta, **PLAYLIST_HPARAMS,
                    id_embeddings=["playlist", "track", "artist"], feature_types=every)
    with pytest.raises(ValueError, match="neither"):
        build_model("playlist", meta, **PLAYLIST_HPARAMS,
                    id_embeddings=["playlist", "genre"])  # artist bare
    one = build_model("playlist", meta, **{**PLAYLIST_HPARAMS, "embedding_dim": 16,
                                           "num_layers": 1})
    assert all(et[2] in (OWNER, ITEM) for et in one.plan[0])
    with pytest.raises(ValueError):
        build_model("nope", meta)


# a saved run's model_options: every PlaylistGAT option away from its default
SAVED_OPTIONS = {"embedding_dim": 8, "heads": 1, "num_layers": 3, "dropout": 0.2,
                 "genre_weight": 0.5, "id_embeddings": ["playlist", "track", "artist", "genre"],
                 "genre_type": "genre", "artist_type": "artist", "layer_norm": True,
                 "activation": True, "residual": False, "init_std": 0.3, "degree_norm": True,
                 "feature_types": ["playlist", "track"], "skip_types": ["genre"],
                 "affinity_types": ["artist"], "affinity_init": 0.5, "affinity_tau": 1.0,
                 "message_init": "zeros",
                 # a training hyper-parameter since issue #10 (TrainConfig.knn_init, which
                 # make_model passes); 0 builds the model from before it
                 "knn_init": 0.0, **KNN_EXP}


def test_playlist_gat_options_object_and_keyword_dict_build_the_same_model():
    """``build_model`` with a saved run's flat ``model_options`` dict and the constructor with a
    :class:`PlaylistGATOptions` give the same state dict and outputs for the same seed; the
    options differ from the defaults, so a dropped or misrouted key shows."""
    sub = _graph()
    # the constructor keyword arguments of PlaylistGAT before it took an options object, and the
    # options added since (id_rows: issue #15, round 3; its default builds what it built before)
    assert model_option_names("playlist") == set(SAVED_OPTIONS) | {"id_rows"}
    torch.manual_seed(5)
    old = build_model("playlist", _meta(sub), strict=True, **SAVED_OPTIONS).eval()
    torch.manual_seed(5)
    new = PlaylistGAT(**_meta(sub), options=PlaylistGATOptions(**SAVED_OPTIONS)).eval()
    torch.manual_seed(5)
    default = PlaylistGAT(**_meta(sub), options=PlaylistGATOptions(**PLAYLIST_HPARAMS)).eval()
    assert old.options == new.options == PlaylistGATOptions(**SAVED_OPTIONS)
    assert list(old.state_dict()) == list(new.state_dict()) != list(default.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(old.state_dict().values(),
                                                new.state_dict().values()))
    with torch.no_grad():
        a, b = old(sub), new(sub)
        bias_a, bias_b = old.score_bias(sub), new.score_bias(sub)
    assert a.keys() == b.keys() and all(torch.equal(a[t], b[t]) for t in a)
    assert a[ITEM].shape == (N[ITEM], 16)  # the genre path's D more entries
    rows = torch.arange(N[OWNER])
    assert torch.equal(bias_a.rows(rows, N[ITEM]), bias_b.rows(rows, N[ITEM]))
    assert new.affinity_weight.shape == (1, 2) and float(new.affinity_weight[0, 0].detach()) == 0.5
    assert pickle.loads(pickle.dumps(new)).options == new.options


def test_playlist_gat_options_are_checked_and_unknown_keys_named():
    base = PLAYLIST_HPARAMS
    with pytest.raises(ValueError, match="num_layers"):
        PlaylistGATOptions(**{**base, "num_layers": 0})
    with pytest.raises(ValueError, match="genre_weight"):
        PlaylistGATOptions(**{**base, "genre_weight": 1.5})
    with pytest.raises(ValueError, match="message_init"):
        PlaylistGATOptions(**base, message_init="ones")
    with pytest.raises(ValueError, match="affinity_tau"):
        PlaylistGATOptions(**base, affinity_tau=-1.0)
    with pytest.raises(TypeError, match="no_such"):
        PlaylistGATOptions(**base, no_such=1)
    with pytest.raises(TypeError, match="heads"):  # a training hyper-parameter: no default
        PlaylistGATOptions(**{k: v for k, v in base.items() if k != "heads"})
    opts = PlaylistGATOptions(**base, skip_types=iter(["genre"]))  # read once, kept
    assert opts.skip_types == ("genre",)
    with pytest.raises(AttributeError):
        opts.heads = 8  # frozen
    meta = _meta(_graph())
    with pytest.raises(TypeError, match="no_such"):
        build_model("playlist", meta, strict=True, embedding_dim=8, no_such=1)
    # a key no model takes is an error strict or not (it used to be dropped with a warning)
    with pytest.raises(ValueError, match="no_such"):
        build_model("playlist", meta, **base, no_such=1)
    with pytest.raises(ValueError, match="haeds"):
        build_model("basic", meta, embedding_dim=8, haeds=2, dropout=0.0)
    with pytest.raises(TypeError, match="heads"):  # required: no default of the model's own
        build_model("playlist", meta, **{k: v for k, v in base.items() if k != "heads"})
    model = build_model("playlist", meta, **{**base, "embedding_dim": 8})
    assert model.options == PlaylistGATOptions(**{**base, "embedding_dim": 8})


def test_build_model_takes_one_shared_config():
    sub = _graph()
    shared = {"embedding_dim": 16, "heads": 2, "num_layers": 3, "dropout": 0.0,
              "genre_weight": 0.0, "knn_init": 0.0, **KNN_EXP}
    with pytest.warns(UserWarning, match="genre_weight"):
        basic = build_model("basic", _meta(sub), **shared)
    assert isinstance(basic, GATRecommender)
    with pytest.raises(TypeError):
        build_model("basic", _meta(sub), strict=True, **shared)
    enhanced = build_model("enhanced", _meta(sub), strict=True, **shared)
    assert len(enhanced.layers) == 3
    _bpr(enhanced, sub, _triples(sub)).backward()
    assert all(p.grad is not None for p in enhanced.parameters())


@pytest.mark.parametrize("key", ["basic", "enhanced", "playlist"])
def test_sparse_embeddings(key):
    """The training loop may mark ``nn.Embedding`` tables sparse and step them with SparseAdam."""
    sub = _graph()
    model = _build(key, sub)
    tables = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    for m in tables:
        m.sparse = True
    _bpr(model, sub, _triples(sub)).backward()
    assert all(m.weight.grad is not None and m.weight.grad.is_sparse for m in tables)
    before = [m.weight.detach().clone() for m in tables]
    torch.optim.SparseAdam([m.weight for m in tables], lr=0.01).step()
    assert all(not torch.equal(b, m.weight) for b, m in zip(before, tables))


@pytest.mark.parametrize("key", ["basic", "enhanced", "playlist"])
def test_missing_edge_type_in_subgraph(key):
    """A sampled subgraph without edges of some type still runs, and every parameter stays in the
    autograd graph (a zero gradient, not None: DDP needs no find_unused_parameters)."""
    sub = _graph()
    model = _build(key, sub)
    del sub.edge_index[("artist", "to", ITEM)]
    _bpr(model, sub, _triples(sub)).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_count_parameters_matches_sum():
    sub = _graph()
    model = _build("playlist", sub)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


@pytest.mark.filterwarnings("ignore:model 'basic' ignores hyper-parameters")
def test_full_graph_inference_by_destination_groups_matches_one_call(monkeypatch, tiny_playlists,
                                                                      tiny_sessions):
    """Without autograd a large edge type runs in destination groups (layers.gat_by_destination):
    the same vectors as one call, for every model, with edge features (sessions, recency)."""
    from engine.models import infer, layers
    from engine.training.config import TrainConfig, make_model
    from engine.training.run_data import RunData

    for name, ds in (("basic", tiny_sessions), ("enhanced", tiny_sessions),
                     ("playlist", tiny_playlists)):
        cfg = TrainConfig(dataset=str(ds), model=name, embedding_dim=8, heads=2, genre_weight=0.3,
                          recency=name == "playlist")
        g = RunData.load(cfg).graph("fit")
        torch.manual_seed(0)
        model = make_model(cfg, g)
        one = infer(model, g)
        calls: list[int] = []

        def counted(*a, _calls=calls, _grouped=layers.gat_by_destination, **k):
            _calls.append(1)
            return _grouped(*a, **k)

        monkeypatch.setattr(layers, "gat_by_destination", counted)
        monkeypatch.setattr(layers, "CHUNK_EDGES", 7)
        grouped = infer(model, g)
        monkeypatch.undo()
        assert calls, "the grouped path never ran"
        for t in one:
            torch.testing.assert_close(grouped[t], one[t], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", [{}, {"genre_weight": 0.4, "recency": True},
                                     {"fanouts": [6, 3, 2]}, {"fanouts": [8]}])
def test_trimmed_layers_give_the_seeds_the_untrimmed_vectors(monkeypatch, tiny_playlists,
                                                             options):
    """On sampled batches each layer computes only the nodes the next one reads
    (layers.layer_trim): the seeds' vectors, the only ones BPR reads, are those of the whole
    sampled subgraph (eval mode: no dropout), and the trimmed run really is smaller."""
    from engine.graph.sampler import BPRBatches
    from engine.models import layers, playlist_gat
    from engine.training.config import TrainConfig, make_model, owner_row_links
    from engine.training.run_data import RunData

    cfg = TrainConfig(dataset=str(tiny_playlists), embedding_dim=8, heads=2, batch_size=8,
                      **options)
    g = RunData.load(cfg).graph("fit")
    torch.manual_seed(0)
    model = make_model(cfg, g).eval()
    owners = torch.arange(g.num_nodes[g.owner_type])
    batches = BPRBatches(g, owners, batch_size=8, num_neg=cfg.num_neg, fanouts=cfg.fanouts,
                         seed=0, steps=3, pos_per_owner=4, neg_pool=cfg.neg_pool,
                         neg_popularity=0.0, owner_rows=owner_row_links(cfg, model))
    for batch in batches:
        trimmed = model(batch.sub)
        with monkeypatch.context() as m:
            m.setattr(playlist_gat, "layer_trim", lambda sub, n: None)
            whole = model(batch.sub)
        for t, v in trimmed.items():
            assert v.size(0) < whole[t].size(0) or t == g.owner_type
            torch.testing.assert_close(v, whole[t][:v.size(0)], rtol=1e-5, atol=1e-6)
            seeds = batch.sub.seed_local[t]
            assert int(seeds.max()) < v.size(0)  # every seed has its vector
    assert layers.layer_trim(g.full(), 2) is None  # full graphs: nothing to trim


def test_zero_message_start_keeps_the_input_tables_and_still_learns():
    """message_init='zeros': at step 0 every score vector is the node's input state (ID row,
    no features read here, up to the layer mean's rounding), so a spectral start reaches the score untouched; the message
    projections into the scored types get gradients at once, the others one step later."""
    sub = _graph()
    model = _build("playlist", sub, message_init="zeros", feature_types=[],
                   id_embeddings=["playlist", "track", "artist", "genre"])
    model.eval()
    vecs = model(sub)
    for t in (OWNER, ITEM):
        # the layer mean of L + 1 equal states: equal up to the mean's rounding
        torch.testing.assert_close(vecs[t], model.emb[t].weight, rtol=1e-6, atol=1e-7)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):
        opt.zero_grad()
        _bpr(model, sub, _triples(sub)).backward()
        for layer in model.layers:
            for et, conv in zip(layer.edge_types, layer.convs.values()):
                # step 0: the convs into the scored types (their messages are in the layer
                # mean); from step 1 on, the earlier layers' convs into other types too
                if step or et[2] in (OWNER, ITEM):
                    assert conv.lin_src.weight.grad.abs().sum() > 0, (step, et)
        opt.step()
    glorot = _build("playlist", sub, feature_types=[],
                    id_embeddings=["playlist", "track", "artist", "genre"]).eval()
    assert not torch.allclose(glorot(sub)[ITEM], glorot.emb[ITEM].weight)
    with pytest.raises(ValueError, match="message_init"):
        _build("playlist", sub, message_init="ones")


@pytest.mark.parametrize("genre_weight", [0.0, 0.3])
def test_inference_adds_in_place_and_gives_the_autograd_forwards_vectors(tiny_playlists,
                                                                          genre_weight):
    """Without autograd the states are summed in place (layers.plus; issue #15, round 3: a
    1.2 M-row copy less per sum at the Kaggle file's size): bit for bit the vectors of the same
    forward with autograd, the genre path (which reads the input states after the layers)
    included, and a second inference gives them again (nothing the model keeps was changed)."""
    from engine.models import infer
    from engine.training.config import TrainConfig, make_model
    from engine.training.run_data import RunData

    cfg = TrainConfig(dataset=str(tiny_playlists), embedding_dim=8, heads=2,
                      genre_weight=genre_weight, model_options={"message_init": "glorot"})
    g = RunData.load(cfg).graph("fit")
    torch.manual_seed(0)
    model = make_model(cfg, g).eval()
    with torch.enable_grad():
        want = {t: v.detach() for t, v in model(g.full()).items()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(2):
        got = infer(model, g)
        for t, v in want.items():
            assert torch.equal(got[t], v), t
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

"""Options added for the quick-mode quality work: whole-graph batches (``fanouts=[]``), positives
restricted to items with another owner, popularity-matched negatives, and PlaylistGAT's
``residual`` / ``degree_norm`` / ``init_std``."""
from __future__ import annotations

import pytest
import torch

from engine.graph.sampler import BPRBatches
from engine.models import PlaylistGAT, PlaylistGATOptions
from tests.probes import own_edge_bytes
from tests.test_models import CONFIGS, PLAYLIST_HPARAMS, _bpr, _build, _graph, _triples
from tests.test_sampler import PT, random_graph, sub_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_whole_graph_batches_drop_only_targets():
    g = random_graph(3)
    it = BPRBatches(g, torch.arange(40), batch_size=6, num_neg=2, fanouts=[], seed=0,
                    pos_per_owner=3, neg_pool=0, neg_popularity=0.0, owner_rows=None)
    for b in it:
        assert torch.equal(b.sub.n_id["track"], torch.arange(g.num_nodes["track"]))
        own = b.owner_idx.tolist()  # identity n_id: local = global
        targets = set(zip(own, b.pos_idx.tolist()))
        fwd = set(sub_pairs(b.sub, PT))
        assert not targets & fwd
        assert fwd == set(map(tuple, g.edge_index[PT].t().tolist())) - targets
        assert b.sub.edge_attr[PT].size(0) == b.sub.edge_index[PT].size(1)
    assert g.edge_index[PT].size(1) == g.csr[PT].num_edges  # the graph itself is untouched


def test_positives_have_another_owner():
    g = random_graph(5)
    item_deg = torch.bincount(g.edge_index[PT][1], minlength=g.num_nodes["track"])
    row = g.csr[PT]
    for min_deg, expect in ((None, 2), (1, 1)):
        it = BPRBatches(g, torch.arange(40), batch_size=8, num_neg=1, fanouts=[2], seed=0,
                        pos_per_owner=4, neg_pool=0, neg_popularity=0.0, owner_rows=None,
                        min_pos_degree=min_deg, backend="torch")
        for b in it:
            owners = b.sub.n_id["playlist"][b.owner_idx]
            pos = b.sub.n_id["track"][b.pos_idx]
            for o, t in zip(owners.tolist(), pos.tolist()):
                items = row.indices[row.indptr[o]:row.indptr[o + 1]]
                assert t in items.tolist()
                if (item_deg[items] >= expect).any():
                    assert item_deg[t] >= expect


@pytest.mark.timeout(60)
def test_positives_are_drawn_through_four_bytes_an_edge():
    """Each worker keeps where its positives are drawn from (the rows without items of one
    owner); the CSR is the node's graph store, so what a worker adds is one int32 position per
    kept entry (it was an int64 item and an int64 edge id: 42 MB a worker at the Kaggle file's
    3.3 M fit edges); without the restriction, nothing per edge."""
    g = random_graph(5)
    edges = g.csr[PT].num_edges
    for min_deg, most in ((2, 4 * edges), (1, 0)):
        it = BPRBatches(g, torch.arange(40), batch_size=8, num_neg=1, fanouts=[2], seed=0,
                        pos_per_owner=4, neg_pool=0, neg_popularity=0.0, owner_rows=None,
                        min_pos_degree=min_deg, backend="torch")
        assert own_edge_bytes(it, g, edges // 2) <= most


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_popularity_negatives_are_not_positives(share):
    g = random_graph(7)
    pos = set(map(tuple, g.edge_index[PT].t().tolist()))
    it = BPRBatches(g, torch.arange(40), batch_size=8, num_neg=4, fanouts=[], seed=0,
                    pos_per_owner=2, neg_pool=0, neg_popularity=share, owner_rows=None)
    for b in it:
        assert b.neg_idx.shape == (16, 4)
        for o, ns in zip(b.owner_idx.tolist(), b.neg_idx.tolist()):
            assert not any((o, n) in pos for n in ns)
    with pytest.raises(ValueError):
        BPRBatches(g, torch.arange(40), batch_size=8, num_neg=4, fanouts=[], seed=0,
                   pos_per_owner=4, neg_pool=0, neg_popularity=2.0, owner_rows=None)


@pytest.mark.parametrize("opts", [
    {"residual": False, "layer_norm": False, "activation": False},
    {"degree_norm": True, "residual": False, "layer_norm": False, "activation": False,
     "init_std": 0.01},
    {"degree_norm": True, "id_embeddings": ["playlist", "artist", "genre"]},
])
def test_playlist_options_every_parameter_gets_a_gradient(opts):
    sub = _graph()
    model = _build("playlist", sub, **opts)
    assert isinstance(model, PlaylistGAT)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    triples = _triples(sub)
    for _ in range(2):
        opt.zero_grad()
        _bpr(model, sub, triples).backward()
        opt.step()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not bad, f"no or all-zero gradient: {bad}"
    assert "playlist" in CONFIGS


# ----------------------------------------------------------- defaults from the quality work


def test_steps_per_epoch_covers_the_training_edges():
    from engine.graph.sampler import steps_per_epoch

    # 1,000 playlists, 84,701 training edges, batches of 128 playlists x 8 positives (quick mode)
    assert steps_per_epoch(1000, 1, 128, 0, 8) == 8  # owners only: a tenth of a pass over the edges
    assert steps_per_epoch(1000, 1, 128, 84_701, 8) == 83 == -(-84_701 // (128 * 8))
    assert steps_per_epoch(1000, 2, 128, 84_701, 8) == 42  # each rank half of them
    assert steps_per_epoch(1000, 1, 128, 10, 8) == 8  # never fewer than one visit per owner
    with pytest.raises(ValueError):
        steps_per_epoch(1000, 1, 128, 10, 0)


def test_playlist_gat_default_inputs():
    """Tracks (the item type, which has features) get no ID embedding by default; the other types
    do; ``feature_types`` / ``skip_types`` narrow the inputs and the edge types."""
    sub = _graph()
    model = _build("playlist", sub)
    assert set(model.emb) == {"playlist", "artist", "genre"}
    assert set(model.proj) == {"track"}  # owner and artist features only when asked for
    every = _build("playlist", sub, feature_types=["playlist", "track", "artist"])
    assert set(every.proj) == {"playlist", "track", "artist"}
    no_feat = _build("playlist", sub, feature_types=[])
    assert set(no_feat.emb) == {"playlist", "track", "artist", "genre"} and not no_feat.proj
    only_track = _build("playlist", sub, feature_types=["track"])
    assert set(only_track.proj) == {"track"}
    no_genre = _build("playlist", sub, skip_types=["genre"])
    assert "genre" not in no_genre.emb
    assert all("genre" not in (et[0], et[2]) for layer in no_genre.plan for et in layer)
    # genre_weight > 0 still builds its genre path from the genre edges the layers skip
    mixed = _build("playlist", sub, skip_types=["genre"], genre_weight=0.5)
    assert mixed.genre is not None and "genre" in mixed.emb
    assert all("genre" not in (et[0], et[2]) for layer in mixed.plan for et in layer)
    for m in (model, every, no_feat, only_track, no_genre, mixed):
        opt = torch.optim.Adam(m.parameters(), lr=0.01)
        opt.zero_grad()
        _bpr(m, sub, _triples(sub)).backward()
        bad = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.any()]
        assert not bad, f"no or all-zero gradient: {bad}"


def test_feature_projection_starts_at_embedding_scale():
    """For unit-variance features the projected input has the ID embeddings' std (``init_std``),
    so neither input swamps the other at the start."""
    sub = _graph()
    torch.manual_seed(0)
    model = PlaylistGAT(num_nodes={"playlist": 6, "track": 20, "artist": 5, "genre": 3},
                        owner_type="playlist", item_type="track",
                        edge_types=list(sub.edge_index), feature_dims={"track": 256},
                        options=PlaylistGATOptions(**PLAYLIST_HPARAMS, init_std=0.1))
    x = torch.randn(20_000, 256)
    with torch.no_grad():
        out = model.proj["track"](x)
    assert out.std().item() == pytest.approx(0.1, rel=0.05)
    assert model.emb["playlist"].weight.std().item() == pytest.approx(0.1, rel=0.3)

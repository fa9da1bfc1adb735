"""Options added for the quick-mode quality work: whole-graph batches (``fanouts=[]``), positives
restricted to items with another owner, popularity-matched negatives, and PlaylistGAT's
``residual`` / ``degree_norm`` / ``init_std``."""
from __future__ import annotations

import pytest
import torch

from engine.graph.sampler import BPRBatches
from engine.models import PlaylistGAT
from tests.test_models import CONFIGS, _bpr, _build, _graph, _triples
from tests.test_sampler import PT, random_graph, sub_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_whole_graph_batches_drop_only_targets():
    g = random_graph(3)
    it = BPRBatches(g, torch.arange(40), batch_size=6, num_neg=2, fanouts=[], pos_per_owner=3)
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
        it = BPRBatches(g, torch.arange(40), batch_size=8, num_neg=1, fanouts=[2],
                        pos_per_owner=4, min_pos_degree=min_deg, backend="torch")
        for b in it:
            owners = b.sub.n_id["playlist"][b.owner_idx]
            pos = b.sub.n_id["track"][b.pos_idx]
            for o, t in zip(owners.tolist(), pos.tolist()):
                items = row.indices[row.indptr[o]:row.indptr[o + 1]]
                assert t in items.tolist()
                if (item_deg[items] >= expect).any():
                    assert item_deg[t] >= expect


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_popularity_negatives_are_not_positives(share):
    g = random_graph(7)
    pos = set(map(tuple, g.edge_index[PT].t().tolist()))
    it = BPRBatches(g, torch.arange(40), batch_size=8, num_neg=4, fanouts=[], pos_per_owner=2,
                    neg_popularity=share)
    for b in it:
        assert b.neg_idx.shape == (16, 4)
        for o, ns in zip(b.owner_idx.tolist(), b.neg_idx.tolist()):
            assert not any((o, n) in pos for n in ns)
    with pytest.raises(ValueError):
        BPRBatches(g, torch.arange(40), batch_size=8, num_neg=4, fanouts=[], neg_popularity=2.0)


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

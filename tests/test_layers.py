"""layers.gat_compact: a GAT conv that projects only the nodes its edges touch gives the plain
conv's outputs (dropout draws included) and gradients."""
from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import GATConv

from engine.models import layers


def _plain(conv, x_src, x_dst, ei, ea):
    return conv((x_src, x_dst), ei, edge_attr=ea)


@pytest.mark.parametrize("edges,edge_dim", [(40, None), (40, 3), (0, None), (900, None)])
def test_compact_conv_matches_the_plain_conv(edges, edge_dim):
    torch.manual_seed(0)
    conv = GATConv((8, 8), 8, heads=2, concat=False, dropout=0.3, add_self_loops=False,
                   edge_dim=edge_dim)
    with torch.no_grad():
        conv.bias.normal_()  # untouched destinations get the bias: make it matter
    gen = torch.Generator().manual_seed(1)
    n_src, n_dst = 300, 200  # few touched rows at 40 edges; most at 900 (the plain call)
    ei = torch.stack([torch.randint(n_src, (edges,), generator=gen),
                      torch.randint(n_dst, (edges,), generator=gen)])
    ea = None if edge_dim is None else torch.randn(edges, edge_dim, generator=gen)
    x_src, x_dst = torch.randn(n_src, 8, requires_grad=True), torch.randn(n_dst, 8,
                                                                         requires_grad=True)
    w = torch.randn(n_dst, 8, generator=gen)
    out, grads = [], []
    for fn in (_plain, layers.gat_compact):
        for train in (False, True):
            conv.train(train)
            torch.manual_seed(5)  # the same dropout draws: one per edge either way
            y = fn(conv, x_src, x_dst, ei, ea)
            conv.zero_grad()
            x_src.grad = x_dst.grad = None
            (y * w).sum().backward()
            out.append(y.detach())
            grads.append([x_src.grad.clone(), x_dst.grad.clone(),
                          *(p.grad.clone() for p in conv.parameters() if p.grad is not None)])
    for a, b in ((0, 2), (1, 3)):  # eval and train mode, plain against compact
        assert out[b].shape == (n_dst, 8)
        torch.testing.assert_close(out[b], out[a], rtol=1e-6, atol=1e-6)
        assert len(grads[a]) == len(grads[b])
        for ga, gb in zip(grads[a], grads[b]):
            torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-5)
    assert not torch.equal(out[0], out[1]) or edges == 0  # dropout did act in train mode


def test_model_on_sampled_batches_is_unchanged_by_compaction(monkeypatch, tiny_playlists):
    """PlaylistGAT on sampled batches (train mode, same seed): the same score vectors with and
    without the compacted convs."""
    from engine.graph.sampler import BPRBatches
    from engine.training.config import TrainConfig, make_model, owner_row_links
    from engine.training.run_data import RunData

    cfg = TrainConfig(dataset=str(tiny_playlists), embedding_dim=8, heads=2, batch_size=8,
                      model_options={"message_init": "glorot"})
    g = RunData.load(cfg).graph("fit")
    torch.manual_seed(0)
    model = make_model(cfg, g).train()
    batches = BPRBatches(g, torch.arange(g.num_nodes[g.owner_type]), batch_size=8,
                         num_neg=cfg.num_neg, fanouts=cfg.fanouts, steps=3, seed=cfg.seed,
                         pos_per_owner=cfg.pos_per_owner, neg_pool=cfg.neg_pool,
                         neg_popularity=cfg.neg_popularity, owner_rows=owner_row_links(cfg, model))
    calls = []
    for batch in batches:
        torch.manual_seed(1)
        compact = model(batch.sub)
        with monkeypatch.context() as m:
            m.setattr(layers, "gat_compact", lambda *a: calls.append(1) or _plain(*a))
            torch.manual_seed(1)
            plain = model(batch.sub)
        for t in plain:
            torch.testing.assert_close(compact[t], plain[t], rtol=1e-6, atol=1e-6)
    assert calls, "the compacted path never ran"

"""The exact artist-affinity term of PlaylistGAT: values, full ranking, no label leak in training
batches, and how the model exposes it."""
from __future__ import annotations

import math

import pytest
import torch

from engine.graph.sampler import BPRBatches, owner_row_fanouts
from engine.graph.types import CSR, GraphData, Subgraph, rev
from engine.models import PlaylistGAT, build_model, graph_meta, infer, score, score_bias, score_fn
from engine.models.affinity import link_affinity

pytestmark = pytest.mark.usefixtures("one_thread")

TP, AT = ("track", "to", "playlist"), ("artist", "to", "track")


def hand_made() -> Subgraph:
    """Owner 0 holds tracks 0, 1 (artist 0); owner 1 holds track 2 (artist 1); track 3 has two
    artists (0 and 2) and no owner."""
    return Subgraph(n_id={"playlist": torch.arange(2), "track": torch.arange(4),
                          "artist": torch.arange(3)},
                    edge_index={TP: torch.tensor([[0, 1, 2], [0, 0, 1]]),
                                AT: torch.tensor([[0, 0, 1, 0, 2], [0, 1, 2, 3, 3]])})


def test_affinity_values_on_a_hand_made_graph():
    aff = link_affinity(hand_made(), "playlist", "track", "artist")
    owners = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    items = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    # owner 0: two tracks by artist 0 -> log(1 + 2); track 3 is half artist 0 -> log(3) / 2
    expected = torch.tensor([math.log(3), math.log(3), 0.0, math.log(3) / 2,
                             0.0, 0.0, math.log(2), 0.0])
    assert torch.allclose(aff.pairs(owners, items), expected)
    assert torch.allclose(aff.score_rows(torch.tensor([0, 1]), 4), expected.view(2, 4))
    assert torch.allclose(aff.pairs(owners.view(2, 4), items.view(2, 4)), expected.view(2, 4))


def test_affinity_of_a_subgraph_without_owner_rows_is_zero():
    sub = hand_made()
    sub.edge_index[TP] = torch.empty(2, 0, dtype=torch.long)
    aff = link_affinity(sub, "playlist", "track", "artist")
    assert not aff.pairs(torch.tensor([0, 1]), torch.tensor([0, 2])).any()
    assert not aff.score_rows(torch.tensor([0, 1]), 4).any()


def random_graph(seed: int = 0, n_p: int = 30, n_t: int = 90, n_a: int = 8) -> GraphData:
    gen = torch.Generator().manual_seed(seed)
    pairs = torch.unique(torch.stack([torch.randint(n_p, (500,), generator=gen),
                                      torch.randint(n_t, (500,), generator=gen)]), dim=1)
    ta = torch.stack([torch.arange(n_t), torch.randint(n_a, (n_t,), generator=gen)])
    ta = torch.cat([ta, torch.tensor([[0, 5], [(ta[1, 0] + 1) % n_a, (ta[1, 5] + 1) % n_a]])], 1)
    edge_index = {}
    for et, ei in ((("playlist", "to", "track"), pairs), (("track", "to", "artist"), ta)):
        edge_index[et], edge_index[rev(et)] = ei, ei.flip(0)
    num = {"playlist": n_p, "track": n_t, "artist": n_a}
    csr = {et: CSR.from_edge_index(ei, num[et[0]]) for et, ei in edge_index.items()}
    x = {"track": torch.randn(n_t, 1, generator=gen)}
    return GraphData("playlist", "track", num, edge_index, csr, x)


def brute_force(g: GraphData, owner: int, item: int, without: set[int]) -> float:
    """aff(p, t) from its definition, with plain Python over a small graph."""
    rows = g.edge_index[("playlist", "to", "track")].t().tolist()
    links = g.edge_index[("track", "to", "artist")].t().tolist()
    artists = {t: [a for tt, a in links if tt == t] for t in range(g.num_nodes["track"])}
    n: dict[int, float] = {}
    for p, j in rows:
        if p == owner and j not in without:
            for a in artists[j]:
                n[a] = n.get(a, 0.0) + 1.0 / len(artists[j])
    return sum(math.log1p(n.get(a, 0.0)) / len(artists[item]) for a in artists[item])


def test_training_batches_count_every_other_track_and_never_the_positive():
    """With whole owner rows at hop 1 the batch's affinity is exact, minus the batch's own
    positives (the sampler drops those edges), so a positive never counts itself."""
    g = random_graph()
    fan = owner_row_fanouts(g, [2, 2], ["artist"])
    assert fan[TP] == [-1, 2] and fan[AT] == [2, -1] and fan[("playlist", "to", "track")] == [2, 2]
    batch = next(iter(BPRBatches(g, torch.arange(30), batch_size=6, num_neg=3, fanouts=fan,
                                 seed=1, pos_per_owner=2, neg_popularity=0.5)))
    sub = batch.sub
    aff = link_affinity(sub, "playlist", "track", "artist")
    owner_g = sub.n_id["playlist"][batch.owner_idx]
    items = torch.cat([batch.pos_idx.unsqueeze(1), batch.neg_idx], 1)
    got = aff.pairs(batch.owner_idx.unsqueeze(1).expand_as(items), items)
    item_g = sub.n_id["track"][items]
    positives = {}  # every positive of the batch, per owner: all their edges are dropped
    for o, t in zip(owner_g.tolist(), sub.n_id["track"][batch.pos_idx].tolist()):
        positives.setdefault(o, set()).add(t)
    checked = 0
    for r in range(items.size(0)):
        o = int(owner_g[r])
        for c in range(items.size(1)):
            want = brute_force(g, o, int(item_g[r, c]), positives[o])
            assert got[r, c].item() == pytest.approx(want, abs=1e-6)
            checked += want > 0
    assert checked > 0  # the check saw non-zero affinities


def test_score_fn_adds_the_affinity_rows_to_the_dot_product():
    g = random_graph(1)
    torch.manual_seed(0)
    model = build_model("playlist", g, embedding_dim=8, heads=1, affinity_init=0.7).eval()
    vecs = infer(model, g)
    bias = score_bias(model, g.full())
    owners = torch.arange(g.num_nodes["playlist"])
    rows = score_fn(model, g)(owners)
    dot = vecs["playlist"] @ vecs["track"].T
    aff = link_affinity(g.full(), "playlist", "track", "artist")
    assert torch.allclose(rows, dot + 0.7 * aff.score_rows(owners, g.num_nodes["track"]),
                          atol=1e-5)
    o, t = torch.meshgrid(owners, torch.arange(g.num_nodes["track"]), indexing="ij")
    assert torch.allclose(score(vecs, o, t, bias=bias), rows, atol=1e-5)


def test_model_options_for_the_affinity():
    g = random_graph(2)
    assert build_model("playlist", g).affinity_types == ["artist"]  # default with artist edges
    off = build_model("playlist", g, affinity_types=[])
    assert off.affinity_weight is None and score_bias(off, g.full()) is None
    assert "affinity_weight" not in dict(off.named_parameters())
    with pytest.raises(ValueError, match="no edges into"):
        build_model("playlist", g, affinity_types=["genre"])
    meta = graph_meta(g)
    meta["edge_types"] = [et for et in meta["edge_types"] if "artist" not in et]
    meta["num_nodes"] = {t: n for t, n in meta["num_nodes"].items() if t != "artist"}
    assert PlaylistGAT(**meta).affinity_types == []  # no artists: no term

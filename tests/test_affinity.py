"""The exact artist-affinity term of PlaylistGAT: values, full ranking, no label leak in training
batches, and how the model exposes it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.graph.ops import ROW
from engine.graph.sampler import BPRBatches
from engine.graph.split import rank_within_owner
from engine.graph.types import CSR, GraphData, Subgraph, rev
from engine.models import (
    PlaylistGAT,
    PlaylistGATOptions,
    build_model,
    graph_meta,
    infer,
    score,
    score_bias,
    score_fn,
)
from engine.models.affinity import link_affinity
from engine.training.config import TrainConfig, owner_row_links
from engine.training.losses import bpr_loss
from tests.test_models import PLAYLIST_HPARAMS

pytestmark = pytest.mark.usefixtures("one_thread")

TP, AT = ("track", "to", "playlist"), ("artist", "to", "track")
ROW_TP = ("track", ROW, "playlist")


def hand_made() -> Subgraph:
    """Owner 0 holds tracks 0, 1 (artist 0; track 1 is the last of the row); owner 1 holds track
    2 (artist 1); track 3 has two artists (0 and 2) and no owner."""
    return Subgraph(n_id={"playlist": torch.arange(2), "track": torch.arange(4),
                          "artist": torch.arange(3)},
                    edge_index={TP: torch.tensor([[0, 1, 2], [0, 0, 1]]),
                                AT: torch.tensor([[0, 0, 1, 0, 2], [0, 1, 2, 3, 3]])},
                    edge_pos={TP: torch.tensor([1, 0, 0])})


OWNERS = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
ITEMS = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])


def test_affinity_values_on_a_hand_made_graph():
    aff = link_affinity(hand_made(), "playlist", "track", "artist", tau=10.0)
    l3, l2, e = math.log(3), math.log(2), math.exp(-0.1)
    # Full ranking: owner 0 has two tracks by artist 0 -> log(1 + 2); track 3 is half artist 0
    # -> log(3) / 2. Recency at the slot after the row: the last track (1) weighs 1, track 0
    # exp(-1 / 10).
    r0 = math.log1p(1 + e)
    rows = aff.score_rows(torch.tensor([0, 1]), 4, torch.tensor(0.5), torch.tensor(2.0))
    full_plain = torch.tensor([l3, l3, 0, l3 / 2, 0, 0, l2, 0])
    full_recent = torch.tensor([r0, r0, 0, r0 / 2, 0, 0, l2, 0])
    assert torch.allclose(rows, (0.5 * full_plain + 2.0 * full_recent).view(2, 4))
    # Pairs leave their own edge out: (0, 0) and (0, 1) count one other track by artist 0,
    # (1, 2) none; track 3 is no member of a row and keeps the full counts.
    plain, recent = aff.pairs(OWNERS, ITEMS)
    assert torch.allclose(plain, torch.tensor([l2, l2, 0, l3 / 2, 0, 0, 0, 0]))
    assert torch.allclose(recent, torch.tensor([math.log1p(1), math.log1p(e), 0, r0 / 2,
                                                0, 0, 0, 0]))
    again = aff.pairs(OWNERS, ITEMS, torch.full((8,), -1))
    assert torch.allclose(again[0], plain) and torch.allclose(again[1], recent)
    # Slot 0 (the last track's place): only track 0 (r = 1) came before it, at distance 1; as a
    # pair, track 0 itself does not count.
    _, at0 = aff.pairs(OWNERS, ITEMS, torch.zeros(8, dtype=torch.long))
    assert torch.allclose(at0, torch.tensor([0, l2, 0, l2 / 2, 0, 0, 0, 0]))
    p2, r2 = aff.pairs(OWNERS.view(2, 4), ITEMS.view(2, 4))
    assert torch.allclose(p2, plain.view(2, 4)) and torch.allclose(r2, recent.view(2, 4))


def test_affinity_without_owner_rows_or_positions():
    sub = hand_made()
    del sub.edge_pos[TP]  # no order: the recency count is 0, the plain one unchanged
    plain, recent = link_affinity(sub, "playlist", "track", "artist").pairs(OWNERS, ITEMS)
    assert plain.any() and not recent.any()
    sub.edge_index[TP] = torch.empty(2, 0, dtype=torch.long)
    aff = link_affinity(sub, "playlist", "track", "artist")
    assert not torch.cat(aff.pairs(OWNERS, ITEMS)).any()
    assert not aff.score_rows(torch.tensor([0, 1]), 4, torch.tensor(1.0), torch.tensor(1.0)).any()


def random_graph(seed: int = 0, n_p: int = 30, n_t: int = 90, n_a: int = 8) -> GraphData:
    """Random playlists (rows in a random order, ``edge_pos`` from it), one artist per track
    and a second one for tracks 0 and 5."""
    gen = torch.Generator().manual_seed(seed)
    pairs = torch.unique(torch.stack([torch.randint(n_p, (500,), generator=gen),
                                      torch.randint(n_t, (500,), generator=gen)]), dim=1)
    key = torch.rand(pairs.size(1), generator=gen)
    order = np.lexsort((key.numpy(), pairs[0].numpy()))
    pairs = pairs[:, torch.from_numpy(order)]
    rank, size = rank_within_owner(pairs[0].numpy())
    pos = torch.from_numpy(size - 1 - rank)
    ta = torch.stack([torch.arange(n_t), torch.randint(n_a, (n_t,), generator=gen)])
    ta = torch.cat([ta, torch.tensor([[0, 5], [(ta[1, 0] + 1) % n_a, (ta[1, 5] + 1) % n_a]])], 1)
    edge_index = {}
    for et, ei in ((("playlist", "to", "track"), pairs), (("track", "to", "artist"), ta)):
        edge_index[et], edge_index[rev(et)] = ei, ei.flip(0)
    num = {"playlist": n_p, "track": n_t, "artist": n_a}
    csr = {et: CSR.from_edge_index(ei, num[et[0]]) for et, ei in edge_index.items()}
    x = {"track": torch.randn(n_t, 1, generator=gen)}
    return GraphData("playlist", "track", num, edge_index, csr, x,
                     edge_pos={("playlist", "to", "track"): pos, TP: pos})


def brute_force(g: GraphData, owner: int, item: int, without: set[int], slot: int,
                tau: float = 10.0) -> tuple[float, float]:
    """(plain, recent) of the module docstring, with plain Python over a small graph."""
    rows = g.edge_index[("playlist", "to", "track")].t().tolist()
    where = g.edge_pos[("playlist", "to", "track")].tolist()
    links = g.edge_index[("track", "to", "artist")].t().tolist()
    artists = {t: [a for tt, a in links if tt == t] for t in range(g.num_nodes["track"])}
    n: dict[int, float] = {}
    m: dict[int, float] = {}
    for (p, j), r in zip(rows, where):
        if p == owner and j not in without:
            for a in artists[j]:
                n[a] = n.get(a, 0.0) + 1.0 / len(artists[j])
                if r > slot:
                    m[a] = m.get(a, 0.0) + math.exp(-(r - slot - 1) / tau) / len(artists[j])
    share = 1.0 / len(artists[item])
    return (sum(math.log1p(n.get(a, 0.0)) * share for a in artists[item]),
            sum(math.log1p(m.get(a, 0.0)) * share for a in artists[item]))


def test_training_batches_count_every_other_track_and_never_the_positive():
    """With whole owner rows in the batch the counts are exact: every track of the playlist but
    the scored one (a positive never counts itself, the batch's other positives do, as the rest
    of the row does at test time); each triple is scored at its positive's slot, whose position
    the batch carries."""
    g = random_graph()
    batch = next(iter(BPRBatches(g, torch.arange(30), batch_size=6, num_neg=3, fanouts=[2, 2],
                                 seed=1, pos_per_owner=2, neg_pool=0, neg_popularity=0.5,
                                 owner_rows=["artist"])))
    sub = batch.sub
    # the messages stay sampled: at most 2 tracks per seed playlist on the layers' edges
    seeds = torch.unique(batch.owner_idx)
    per_owner = torch.bincount(sub.edge_index[TP][1], minlength=sub.num_nodes("playlist"))
    assert per_owner[seeds].max() <= 2 and (ROW_TP in sub.edge_index)
    assert not (sub.edge_index[ROW_TP][1].unsqueeze(1) != seeds).all(1).any()  # seed rows only
    aff = link_affinity(sub, "playlist", "track", "artist", tau=10.0)
    owner_g = sub.n_id["playlist"][batch.owner_idx]
    pos_g = sub.n_id["track"][batch.pos_idx]
    true_pos = {(p, t): r for (p, t), r in zip(g.edge_index[("playlist", "to", "track")].t().tolist(),
                                              g.edge_pos[TP].tolist())}
    assert batch.pos_rank.tolist() == [true_pos[(p, t)] for p, t in
                                       zip(owner_g.tolist(), pos_g.tolist())]
    items = torch.cat([batch.pos_idx.unsqueeze(1), batch.neg_idx], 1)
    slots = batch.pos_rank.unsqueeze(1).expand_as(items)
    got_plain, got_recent = aff.pairs(batch.owner_idx.unsqueeze(1).expand_as(items), items, slots)
    item_g = sub.n_id["track"][items]
    seen = [0, 0]
    for r in range(items.size(0)):
        o = int(owner_g[r])
        for c in range(items.size(1)):
            t = int(item_g[r, c])
            plain, recent = brute_force(g, o, t, {t}, int(slots[r, c]))
            assert got_plain[r, c].item() == pytest.approx(plain, abs=1e-6)
            assert got_recent[r, c].item() == pytest.approx(recent, abs=1e-6)
            seen[0] += plain > 0
            seen[1] += recent > 0
    assert min(seen) > 0  # the check saw non-zero counts of both kinds


def test_score_fn_adds_the_affinity_rows_to_the_dot_product():
    g = random_graph(1)
    torch.manual_seed(0)
    model = build_model("playlist", g, **{**PLAYLIST_HPARAMS, "embedding_dim": 8, "heads": 1}, affinity_init=0.7).eval()
    with torch.no_grad():
        model.affinity_weight[0, 1] = -0.3  # beta 0.7, gamma -0.3
    vecs = infer(model, g)
    bias = score_bias(model, g.full())
    owners = torch.arange(g.num_nodes["playlist"])
    rows = score_fn(model, g)(owners)
    dot = vecs["playlist"] @ vecs["track"].T
    o, t = torch.meshgrid(owners, torch.arange(g.num_nodes["track"]), indexing="ij")
    plain, recent = link_affinity(g.full(), "playlist", "track", "artist",
                                  model.affinity_tau).pairs(o, t)
    # ranked pairs: the owners' own tracks are masked in ranking (and counted without their own
    # edge as pairs, with it in full rows)
    own = torch.zeros_like(rows, dtype=torch.bool)
    own[tuple(g.edge_index[("playlist", "to", "track")])] = True
    ranked = ~own
    assert recent[ranked].any() and not torch.allclose(plain, recent)
    assert torch.allclose(rows[ranked], (dot + 0.7 * plain - 0.3 * recent)[ranked], atol=1e-5)
    assert torch.allclose(score(vecs, o, t, bias=bias)[ranked], rows[ranked], atol=1e-5)


def test_model_options_for_the_affinity():
    g = random_graph(2)
    default = build_model("playlist", g, **PLAYLIST_HPARAMS)
    assert default.affinity_types == ["artist"]  # default with artist edges
    assert default.affinity_weight.shape == (1, 2)  # beta and gamma
    assert build_model("playlist", g, **PLAYLIST_HPARAMS, affinity_tau=0).affinity_weight.shape == (1, 1)
    with pytest.raises(ValueError, match="affinity_tau"):
        build_model("playlist", g, **PLAYLIST_HPARAMS, affinity_tau=-1)
    off = build_model("playlist", g, **PLAYLIST_HPARAMS, affinity_types=[])
    assert off.affinity_weight is None and score_bias(off, g.full()) is None
    assert "affinity_weight" not in dict(off.named_parameters())
    with pytest.raises(ValueError, match="no edges into"):
        build_model("playlist", g, **PLAYLIST_HPARAMS, affinity_types=["genre"])
    meta = graph_meta(g)
    meta["edge_types"] = [et for et in meta["edge_types"] if "artist" not in et]
    meta["num_nodes"] = {t: n for t, n in meta["num_nodes"].items() if t != "artist"}
    assert PlaylistGAT(**meta, options=PlaylistGATOptions(**PLAYLIST_HPARAMS)).affinity_types == []  # no artists: no term


def test_both_affinity_weights_learn_from_a_training_batch():
    g = random_graph(3)
    torch.manual_seed(0)
    model = build_model("playlist", g, **{**PLAYLIST_HPARAMS, "embedding_dim": 8, "heads": 1})
    batch = next(iter(BPRBatches(g, torch.arange(30), batch_size=8, num_neg=2, fanouts=[3, 2],
                                 seed=0, pos_per_owner=4, neg_pool=0, neg_popularity=0.0,
                                 owner_rows=["artist"])))
    loss = bpr_loss(model(batch.sub), "playlist", "track", batch, 0.0,
                    score_bias(model, batch.sub))
    loss.backward()
    assert (model.affinity_weight.grad != 0).all()  # beta (plain count) and gamma (recency)


def test_owner_rows_only_for_an_affinity_model():
    g = random_graph(4)
    playlist = build_model("playlist", g, **{**PLAYLIST_HPARAMS, "embedding_dim": 8, "heads": 1})
    assert owner_row_links(TrainConfig(), playlist) == ["artist"]
    off = build_model("playlist", g, **{**PLAYLIST_HPARAMS, "embedding_dim": 8, "heads": 1}, affinity_types=[])
    assert owner_row_links(TrainConfig(), off) is None
    assert owner_row_links(TrainConfig(owner_rows=False), playlist) is None

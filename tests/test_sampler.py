"""Tests for the sampler (engine.graph.neighbours, negatives, batches) on hand-made heterogeneous graphs."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.graph.neighbours import _sample_positions
from engine.graph.sampler import (
    BPRBatches,
    owner_shard,
    sample_negatives,
    sample_subgraph,
    steps_per_epoch,
)
from engine.graph.types import CSR, GraphData, rev

PT, TA = ("playlist", "to", "track"), ("track", "to", "artist")


def make_graph(num_nodes: dict, edges: dict, attr: dict | None = None, x: bool = True
               ) -> GraphData:
    """GraphData with every given edge type plus its reverse (same column order, mirrored)."""
    edge_index, edge_attr = {}, {}
    for et, (s, d) in edges.items():
        ei = torch.tensor([s, d], dtype=torch.long)
        edge_index[et], edge_index[rev(et)] = ei, ei.flip(0)
        if attr and et in attr:
            edge_attr[et] = edge_attr[rev(et)] = attr[et]
    csr = {et: CSR.from_edge_index(ei, num_nodes[et[0]]) for et, ei in edge_index.items()}
    feats = {t: torch.arange(n, dtype=torch.float).view(-1, 1) * 10 + i
             for i, (t, n) in enumerate(num_nodes.items()) if t != "artist"} if x else {}
    return GraphData("playlist", "track", dict(num_nodes), edge_index, csr, feats, edge_attr)


def tiny() -> GraphData:
    # playlist 0: tracks 0,1; playlist 1: tracks 1,2; track 0,1 -> artist 0; track 2 -> artist 1
    return make_graph({"playlist": 2, "track": 3, "artist": 2},
                      {PT: ([0, 0, 1, 1], [0, 1, 1, 2]), TA: ([0, 1, 2], [0, 0, 1])},
                      attr={PT: torch.tensor([[1.0], [2.0], [3.0], [4.0]])})


def random_graph(seed: int = 0, n_p: int = 40, n_t: int = 120, n_a: int = 15, e: int = 600):
    gen = torch.Generator().manual_seed(seed)
    pairs = torch.unique(torch.stack([torch.randint(n_p, (e,), generator=gen),
                                      torch.randint(n_t, (e,), generator=gen)]), dim=1)
    ta = torch.stack([torch.arange(n_t), torch.randint(n_a, (n_t,), generator=gen)])
    attr = torch.arange(pairs.size(1), dtype=torch.float).view(-1, 1)
    return make_graph({"playlist": n_p, "track": n_t, "artist": n_a},
                      {PT: pairs.tolist(), TA: ta.tolist()}, attr={PT: attr})


def global_pairs(g: GraphData, et) -> set:
    return set(map(tuple, g.edge_index[et].t().tolist()))


def sub_pairs(sub, et) -> list:
    ei = sub.edge_index[et]
    return list(zip(sub.n_id[et[0]][ei[0]].tolist(), sub.n_id[et[2]][ei[1]].tolist()))


# ------------------------------------------------------------------------------ sample_subgraph

def test_tiny_graph_exact_subgraph():
    g = tiny()
    sub = sample_subgraph(g, {"playlist": torch.tensor([1])}, [-1, -1], backend="torch")
    assert sub.n_id["playlist"].tolist() == [1, 0]
    assert sub.n_id["track"].tolist() == [1, 2]
    assert sub.n_id["artist"].tolist() == [0, 1]
    assert sorted(sub_pairs(sub, rev(PT))) == [(1, 1), (2, 1)]
    assert sorted(sub_pairs(sub, PT)) == [(0, 1), (1, 1), (1, 2)]
    assert sorted(sub_pairs(sub, rev(TA))) == [(0, 1), (1, 2)]
    assert sub.edge_index[TA].shape == (2, 0)  # artists are reached last: never expanded
    assert sub.num_sampled_nodes == {"playlist": [1, 0, 1], "track": [0, 2, 0],
                                     "artist": [0, 0, 2]}
    assert sub.num_sampled_edges[PT] == [0, 3]
    # Features follow n_id; edge attributes follow the exact global edge.
    assert sub.x["track"].flatten().tolist() == [11.0, 21.0]
    attr = {(0, 0): 1.0, (0, 1): 2.0, (1, 1): 3.0, (1, 2): 4.0}
    got = dict(zip(sub_pairs(sub, PT), sub.edge_attr[PT].flatten().tolist()))
    assert got == {p: attr[p] for p in got}
    got = dict(zip(sub_pairs(sub, rev(PT)), sub.edge_attr[rev(PT)].flatten().tolist()))
    assert got == {p: attr[(p[1], p[0])] for p in got}


def test_seeds_first_in_order_with_duplicates():
    g = random_graph()
    seeds = {"track": torch.tensor([7, 3, 7, 50, 3, 9]), "playlist": torch.tensor([5, 2, 5])}
    sub = sample_subgraph(g, seeds, [3, 2], torch.Generator().manual_seed(1), backend="torch")
    assert sub.n_id["track"][:4].tolist() == [7, 3, 50, 9]
    assert sub.n_id["playlist"][:2].tolist() == [5, 2]
    assert sub.seed_local["track"].tolist() == [0, 1, 0, 2, 1, 3]
    for t, s in seeds.items():
        assert torch.equal(sub.n_id[t][sub.seed_local[t]], s)
        assert sub.n_id[t].unique().numel() == sub.n_id[t].numel()  # one local id per node


@pytest.mark.parametrize("fanouts", [[3, 2], [1, 1, 1], [5]])
def test_edges_real_and_fanout_exact(fanouts):
    g = random_graph(3)
    seeds = {"playlist": torch.tensor([0, 4, 9, 13]), "track": torch.tensor([1, 2, 77])}
    sub = sample_subgraph(g, seeds, fanouts, torch.Generator().manual_seed(0), backend="torch")
    for et in g.edge_types:
        pairs = sub_pairs(sub, et)
        assert set(pairs) <= global_pairs(g, et)
        assert len(set(pairs)) == len(pairs)  # each node expanded once: no edge twice
        # In-degree of every local dst node is min(deg, k) of the hop it was expanded at, else 0.
        dst = et[2]
        indeg = torch.bincount(sub.edge_index[et][1], minlength=sub.num_nodes(dst))
        deg = g.csr[rev(et)].degree()[sub.n_id[dst]]
        hop_of = torch.repeat_interleave(torch.arange(len(fanouts) + 1),
                                         torch.tensor(sub.num_sampled_nodes[dst]))
        k = torch.tensor(fanouts + [0])[hop_of]
        assert torch.equal(indeg, torch.minimum(deg, k))


def test_all_neighbours_when_degree_small():
    g = random_graph(5)
    seeds = {"playlist": torch.tensor([0, 1, 2, 3])}
    sub = sample_subgraph(g, seeds, [1000], backend="torch")
    want = {p for p in global_pairs(g, rev(PT)) if p[1] in (0, 1, 2, 3)}
    assert set(sub_pairs(sub, rev(PT))) == want


def test_deterministic_with_generator():
    g = random_graph(2)
    seeds = {"playlist": torch.arange(10)}

    def run(s):
        sub = sample_subgraph(g, seeds, [2, 2], torch.Generator().manual_seed(s), backend="torch")
        return sub.n_id, sub.edge_index

    a, b, c = run(4), run(4), run(5)
    assert all(torch.equal(a[0][t], b[0][t]) for t in a[0])
    assert all(torch.equal(a[1][et], b[1][et]) for et in a[1])
    assert any(not torch.equal(a[1][et], c[1][et]) for et in a[1])


def test_replace_draws_exactly_k():
    g = random_graph(1)
    seeds = {"playlist": torch.tensor([0, 1, 2])}
    sub = sample_subgraph(g, seeds, [4], torch.Generator().manual_seed(0), replace=True,
                          backend="torch")
    deg = g.csr[PT].degree()[seeds["playlist"]]
    indeg = torch.bincount(sub.edge_index[rev(PT)][1], minlength=sub.num_nodes("playlist"))
    assert indeg[:3].tolist() == [4 if d > 0 else 0 for d in deg.tolist()]


def test_floyd_subsets_are_uniform_and_distinct():
    indptr = torch.tensor([0, 6])
    rows = torch.zeros(30000, dtype=torch.long)
    which, pos = _sample_positions(indptr, rows, 2, False, torch.Generator().manual_seed(0))
    pos = pos.view(-1, 2)
    assert torch.equal(which.view(-1, 2), torch.arange(30000).view(-1, 1).expand(-1, 2))
    assert (pos[:, 0] != pos[:, 1]).all() and pos.min() >= 0 and pos.max() <= 5
    lo, hi = pos.min(1).values, pos.max(1).values
    counts = torch.bincount(lo * 6 + hi, minlength=36)[(lo * 6 + hi).unique()]
    assert counts.numel() == 15  # all C(6,2) pairs occur, each about 2000 times
    assert (counts - 2000).abs().max() < 250


def test_dict_fanouts_and_errors():
    g = tiny()
    sub = sample_subgraph(g, {"playlist": torch.tensor([0])}, {rev(PT): [-1]}, backend="torch")
    assert sub.n_id["track"].tolist() == [0, 1] and sub.edge_index[PT].shape == (2, 0)
    with pytest.raises(ValueError):
        sample_subgraph(g, {"playlist": torch.tensor([0])}, {("a", "to", "b"): [1]})
    with pytest.raises(ValueError):
        sample_subgraph(g, {"playlist": torch.tensor([0])}, [1], backend="dgl")
    with pytest.raises(ValueError):
        sample_subgraph(g, {"user": torch.tensor([0])}, [1])


def test_pyg_lib_backend_matches_contract():
    pytest.importorskip("pyg_lib")
    g = random_graph(3)
    seeds = {"playlist": torch.tensor([0, 4, 4, 9]), "track": torch.tensor([1, 2])}
    sub = sample_subgraph(g, seeds, [3, 2], torch.Generator().manual_seed(0), backend="pyg_lib")
    for t, s in seeds.items():
        assert torch.equal(sub.n_id[t][sub.seed_local[t]], s)
    for et in g.edge_types:
        assert set(sub_pairs(sub, et)) <= global_pairs(g, et)
        indeg = torch.bincount(sub.edge_index[et][1], minlength=sub.num_nodes(et[2]))
        assert int(indeg.max(initial=0) if indeg.numel() else 0) <= 3


# ----------------------------------------------------------------------------- sample_negatives

@st.composite
def csr_case(draw):
    n_own, n_items = draw(st.integers(1, 6)), draw(st.integers(2, 12))
    rows = [sorted(draw(st.sets(st.integers(0, n_items - 1), max_size=n_items - 1)))
            for _ in range(n_own)]
    indptr = torch.tensor([0] + [len(r) for r in rows]).cumsum(0)
    indices = torch.tensor([i for r in rows for i in r], dtype=torch.long)
    owners = torch.tensor(draw(st.lists(st.integers(0, n_own - 1), min_size=1, max_size=8)))
    return rows, indptr, indices, owners, n_items, draw(st.integers(1, 5)), draw(st.integers(0, 99))


@settings(max_examples=60, deadline=None)
@given(csr_case())
def test_negatives_never_positive(case):
    rows, indptr, indices, owners, n_items, k, seed = case
    neg = sample_negatives(indptr, indices, owners, n_items, k, torch.Generator().manual_seed(seed))
    assert neg.shape == (owners.numel(), k)
    assert neg.min() >= 0 and neg.max() < n_items
    for o, ns in zip(owners.tolist(), neg.tolist()):
        assert not set(ns) & set(rows[o])


@settings(max_examples=60, deadline=None)
@given(csr_case())
def test_negatives_respect_candidates(case):
    rows, indptr, indices, owners, n_items, k, seed = case
    # Candidates: a non-positive per owner in the batch, plus some positives to be rejected.
    cand = {min(set(range(n_items)) - set(rows[o])) for o in owners.tolist()}
    cand |= {i for o in owners.tolist() for i in rows[o][:2]}
    cand_t = torch.tensor(sorted(cand))
    neg = sample_negatives(indptr, indices, owners, n_items, k,
                           torch.Generator().manual_seed(seed), candidates=cand_t)
    for o, ns in zip(owners.tolist(), neg.tolist()):
        assert set(ns) <= cand and not set(ns) & set(rows[o])


def test_negatives_exact_and_saturated():
    indptr, indices = torch.tensor([0, 3, 4]), torch.tensor([0, 1, 3, 2])
    neg = sample_negatives(indptr, indices, torch.tensor([0, 0]), 4, 5)
    assert (neg == 2).all()  # owner 0's only non-positive among 4 items
    with pytest.raises(ValueError, match="owner 0"):
        sample_negatives(indptr, indices, torch.tensor([1, 0]), 4, 2,
                         candidates=torch.tensor([0, 1, 3]))
    owners = torch.tensor([1, 1, 0])
    a = sample_negatives(indptr, indices, owners, 4, 3, torch.Generator().manual_seed(3))
    assert torch.equal(a, sample_negatives(indptr, indices, owners, 4, 3,
                                           torch.Generator().manual_seed(3)))


# --------------------------------------------------------------------------------- BPR batches

def test_owner_shard_and_steps():
    owners = torch.arange(10, 33)
    shards = [owner_shard(owners, r, 4, seed=7) for r in range(4)]
    assert sorted(torch.cat(shards).tolist()) == owners.tolist()
    assert {s.numel() for s in shards} == {5, 6}
    assert torch.equal(shards[2], owner_shard(owners, 2, 4, seed=7))
    assert steps_per_epoch(23, 4, 2, 0, 1) == 3 == math.ceil(6 / 2)
    assert steps_per_epoch(24, 4, 6, 0, 1) == 1
    with pytest.raises(ValueError):
        owner_shard(owners, 4, 4, seed=0)


def test_every_rank_same_steps_and_valid_triples():
    g = random_graph(4)
    has_pos = torch.nonzero(g.csr[PT].degree() > 0).flatten()
    steps = steps_per_epoch(has_pos.numel(), 3, 4, 0, 2)
    pos_set = global_pairs(g, PT)
    for r in range(3):
        shard = owner_shard(has_pos, r, 3, seed=1)
        it = BPRBatches(g, shard, batch_size=4, num_neg=3, fanouts=[3, 2], seed=1, rank=r,
                        steps=steps, pos_per_owner=2, neg_pool=0, neg_popularity=0.0,
                        owner_rows=None, backend="torch")
        batches = list(it)
        assert len(batches) == len(it) == steps
        for b in batches:
            assert b.num_triples == 8
            assert b.pos_idx.shape == (8,) and b.neg_idx.shape == (8, 3)
            own = b.sub.n_id["playlist"][b.owner_idx]
            assert set(own.tolist()) <= set(shard.tolist())
            pos = b.sub.n_id["track"][b.pos_idx]
            neg = b.sub.n_id["track"][b.neg_idx]
            assert all(p in pos_set for p in zip(own.tolist(), pos.tolist()))
            assert not any((o, n) in pos_set for o, ns in zip(own.tolist(), neg.tolist())
                           for n in ns)


def test_deterministic_per_seed_epoch_rank():
    g = random_graph(6)
    owners = torch.arange(40)

    def first(epoch, rank=0):
        b = next(iter(BPRBatches(g, owners, 8, 2, [2, 2], seed=3, epoch=epoch, rank=rank,
                                 pos_per_owner=4, neg_pool=0, neg_popularity=0.0,
                                 owner_rows=None, backend="torch")))
        return b.sub.n_id["playlist"][b.owner_idx], b.sub.n_id["track"][b.neg_idx]

    a, b, c, d = first(0), first(0), first(1), first(0, rank=1)
    batch = next(iter(BPRBatches(g, owners, 8, 2, [2, 2], seed=3, pos_per_owner=4, neg_pool=0,
                                 neg_popularity=0.0, owner_rows=None, backend="torch")))
    moved = batch.to("cpu")
    assert torch.equal(moved.neg_idx, batch.neg_idx)
    assert all(torch.equal(moved.sub.edge_index[et], v) for et, v in batch.sub.edge_index.items())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], d[0])


@pytest.mark.parametrize("drop", [True, False])
def test_target_edges_dropped(drop):
    g = random_graph(7)
    it = BPRBatches(g, torch.arange(40), batch_size=6, num_neg=2, fanouts=[-1, -1], seed=0,
                    pos_per_owner=3, neg_pool=0, neg_popularity=0.0, owner_rows=None,
                    drop_target_edges=drop, backend="torch")
    for b in it:
        own = b.sub.n_id["playlist"][b.owner_idx].tolist()
        targets = set(zip(own, b.sub.n_id["track"][b.pos_idx].tolist()))
        fwd, bwd = set(sub_pairs(b.sub, PT)), {(o, t) for t, o in sub_pairs(b.sub, rev(PT))}
        # Owners are seeds and fanout -1 takes every edge, so targets are sampled unless dropped.
        assert (targets <= bwd) != drop and (targets & bwd == set()) == drop
        assert (targets <= fwd) != drop and (targets & fwd == set()) == drop
        # Every non-target edge of a batch owner is still there.
        want = {p for p in global_pairs(g, PT) if p[0] in own} - (targets if drop else set())
        assert bwd == want | {p for p in bwd if p[0] not in own}
        for et in (PT, rev(PT)):
            assert b.sub.edge_attr[et].size(0) == b.sub.edge_index[et].size(1)
            assert sum(b.sub.num_sampled_edges[et]) == b.sub.edge_index[et].size(1)


def test_uniform_subset_distinct_uniform_seeded():
    """The negative pool's draw without a catalogue-sized randperm: k distinct values in range,
    the same for the same seed, each value (and each first position) equally likely."""
    from engine.graph.batches import uniform_subset

    for n, k in ((1_000_000, 1024), (100, 30), (100, 0), (10, 10), (50, 12)):  # sparse and dense
        x = uniform_subset(n, k, torch.Generator().manual_seed(1))
        assert x.numel() == k and x.unique().numel() == k and x.dtype == torch.long
        assert (k == 0) or (0 <= int(x.min()) and int(x.max()) < n)
        assert torch.equal(x, uniform_subset(n, k, torch.Generator().manual_seed(1)))
    assert not torch.equal(uniform_subset(10**6, 64, torch.Generator().manual_seed(1)),
                           uniform_subset(10**6, 64, torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError):
        uniform_subset(5, 6, torch.Generator())
    # uniform: 4,000 draws of 8 of 200 values; every value's count ~ Binomial(4000, 0.04) = 160 +- 12
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([uniform_subset(200, 8, gen) for _ in range(4000)])
    counts = torch.bincount(draws.flatten(), minlength=200).float()
    assert counts.min() > 100 and counts.max() < 220
    chi2 = float(((counts - 160) ** 2 / 160).sum())  # 199 degrees of freedom: mean 199, sd 20
    assert chi2 < 300
    first = torch.bincount(draws[:, 0], minlength=200).float()  # the order is uniform too
    assert float(((first - 20) ** 2 / 20).sum()) < 300


def test_neg_pool_draws_distinct_catalogue_items():
    """BPRBatches' shared uniform pool: neg_pool distinct items of the catalogue, redrawn each
    batch, the same batches for the same seed."""
    g = random_graph()  # 120 tracks, a pool of 8: the O(k) draw, not the randperm
    b = BPRBatches(g, torch.arange(40), batch_size=4, num_neg=2, fanouts=[2], neg_pool=8,
                   neg_popularity=0.0, steps=3, seed=0, pos_per_owner=4, owner_rows=None)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        pool = b._uniform_pool(gen)
        assert pool.numel() == 8 and pool.unique().numel() == 8
        assert 0 <= int(pool.min()) and int(pool.max()) < g.num_nodes["track"]
    first = [x.neg_idx for x in b]
    assert all(torch.equal(a, c) for a, c in zip(first, [x.neg_idx for x in b]))

"""Evaluation: exact metric values on hand-made rankings, masking, candidates, baselines."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.eval import (
    embedding_score_fn,
    evaluate_scores,
    evaluate_with_baselines,
    item_knn_score_fn,
    per_owner_metrics,
    popularity_score_fn,
)
from engine.eval.evaluate import Ranker, candidate_mask
from engine.eval.metrics import MetricAccumulator
from engine.graph.split import HeldOut, Split

KEYS = ["recall@10", "ndcg@10", "recall@50", "ndcg@50", "r_precision", "playlists", "coverable"]


def held(rows: list[list[int]], owners: list[int] | None = None) -> HeldOut:
    owners = list(range(len(rows))) if owners is None else owners
    o = np.repeat(owners, [len(r) for r in rows])
    return HeldOut.from_pairs(o.astype(np.int64), np.concatenate(rows).astype(np.int64))


def metrics_of(topk: list[list[int]], rel: list[list[int]], ks=(10,), valid=None):
    h = held(rel)
    return per_owner_metrics(torch.tensor(topk), h.indptr, h.items, ks, valid)


# ---------------------------------------------------------------- metrics on hand-made rankings

def test_recall_ndcg_rprec_exact() -> None:
    # rel = {1,2,3}; hits at ranks 1 and 4.
    #   recall@10 = 2/3; DCG@10 = 1/log2(2) + 1/log2(5) = 1 + 1/log2 5;
    #   IDCG@10 over min(10,3)=3 hits = 1 + 1/log2 3 + 1/log2 4 = 1 + 1/log2 3 + 1/2.
    #   recall@2 = 1/3; NDCG@2 = 1 / (1 + 1/log2 3)  (IDCG over min(2,3)=2 hits).
    #   R-precision: top-3 = [1,7,8] -> 1 hit / 3.
    # rel = {5}; hit at rank 3: recall = 1, NDCG = (1/log2 4) / 1 = 0.5, R-precision: top-1 = [6]
    #   -> 0.
    m = metrics_of([[1, 7, 8, 2, 9, 10, 11, 12, 13, 14],
                    [6, 0, 5, 9, 10, 11, 12, 13, 14, 15]], [[3, 1, 2], [5]], ks=(2, 10))
    assert m["recall@10"].tolist() == pytest.approx([2 / 3, 1.0])
    assert m["ndcg@10"][0].item() == pytest.approx(
        (1 + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 0.5))
    assert m["ndcg@10"][1].item() == pytest.approx(0.5)
    assert m["recall@2"].tolist() == pytest.approx([1 / 3, 0.0])
    assert m["ndcg@2"][0].item() == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert m["r_precision"].tolist() == pytest.approx([1 / 3, 0.0])


def test_more_relevant_than_k() -> None:
    # |rel| = 12 > K = 10, perfect ranking: recall@10 = 10/12, NDCG@10 = 1 (IDCG over 10 hits),
    # R-precision = 12/12 = 1 (needs the top 12).
    m = metrics_of([list(range(12))], [list(range(12))])
    assert m["recall@10"].item() == pytest.approx(10 / 12)
    assert m["ndcg@10"].item() == pytest.approx(1.0)
    assert m["r_precision"].item() == pytest.approx(1.0)
    with pytest.raises(ValueError):  # top-11 cannot give R-precision for |rel| = 12
        metrics_of([list(range(11))], [list(range(12))])


def test_invalid_entries_never_hit() -> None:
    # rel = {4}; 4 sits at rank 2 but that entry is padding (valid=False): all metrics 0.
    valid = torch.ones(1, 10, dtype=torch.bool)
    valid[0, 1] = False
    m = metrics_of([[0, 4, 1, 2, 3, 5, 6, 7, 8, 9]], [[4]], valid=valid)
    assert m["recall@10"].item() == 0.0 and m["ndcg@10"].item() == 0.0
    m = metrics_of([[0, -1, 1, 2, 3, 5, 6, 7, 8, 9]], [[4]])  # id -1 never hits
    assert m["recall@10"].item() == 0.0


def test_accumulator_means_and_keys() -> None:
    acc = MetricAccumulator((10, 50))
    h = held([[3, 1, 2], [5]])
    topk = torch.arange(50).repeat(2, 1)  # owner 0: hits at ranks 2,3,4 ; owner 1: rank 6
    cand = torch.tensor([True] * 5 + [False] * 45)
    acc.add(topk[:1], h.indptr[:2], h.items[:3], candidate=cand)
    acc.add(topk[1:], h.indptr[1:] - 3, h.items[3:], candidate=cand)
    r = acc.result()
    assert list(r) == KEYS + ["coverage@10"]  # a candidate mask was given
    assert r["playlists"] == 2
    assert r["coverable"] == pytest.approx(3 / 4)  # 1,2,3 candidates; 5 is not
    assert r["recall@10"] == pytest.approx((1 + 1) / 2)
    ndcg0 = (1 / math.log2(3) + 1 / math.log2(4) + 1 / math.log2(5)) / (
        1 + 1 / math.log2(3) + 1 / math.log2(4))
    assert r["ndcg@10"] == pytest.approx((ndcg0 + 1 / math.log2(7)) / 2)
    assert r["r_precision"] == pytest.approx((2 / 3 + 0) / 2)


def _naive(topk: list[int], rel: set[int], k: int) -> tuple[float, float, float]:
    hits = [t in rel for t in topk]
    dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hits[:k]) if h)
    idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(rel))))
    return sum(hits[:k]) / len(rel), dcg / idcg, sum(hits[:len(rel)]) / len(rel)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_matches_naive_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_items, b, kmax = 30, 6, 20
    rel = [sorted(rng.choice(n_items, rng.integers(1, 15), replace=False).tolist())
           for _ in range(b)]
    topk = [rng.permutation(n_items)[:kmax].tolist() for _ in range(b)]
    m = metrics_of(topk, rel, ks=(5, 20))
    for i in range(b):
        for k in (5, 20):
            rec, ndcg, rp = _naive(topk[i], set(rel[i]), k)
            assert m[f"recall@{k}"][i].item() == pytest.approx(rec)
            assert m[f"ndcg@{k}"][i].item() == pytest.approx(ndcg)
        assert m["r_precision"][i].item() == pytest.approx(rp)


# ---------------------------------------------------------------- masking and candidates

def edges(pairs: list[tuple[int, int]]) -> torch.Tensor:
    return torch.tensor(pairs, dtype=torch.int64).T


def const_scores(table: torch.Tensor):
    return lambda ids: table[ids]


def test_training_items_masked() -> None:
    # 2 owners, 20 items. Owner 0 trains 0..9 and scores them highest; its held-out item 10 is
    # next best -> after masking it is rank 1. Owner 1 trains 10..19, held out 0.
    train = edges([(0, i) for i in range(10)] + [(1, i) for i in range(10, 20)])
    table = torch.arange(20, 0, -1).float().repeat(2, 1)  # item 0 best, item 19 worst
    ranker = Ranker(candidate_mask(train, 20), train, 2)
    top, valid = ranker.topk(table, torch.tensor([0, 1]), 10)
    assert valid.all()
    assert set(top[0].tolist()) == set(range(10, 20))
    assert set(top[1].tolist()) == set(range(10))
    r = evaluate_scores(const_scores(table), train, held([[10], [0]]), 20, ks=(1, 10))
    assert r["recall@1"] == 1.0 and r["ndcg@1"] == 1.0 and r["r_precision"] == 1.0


def test_scores_not_modified() -> None:
    # The evaluator masks a copy: a scorer's cached table (returned as a view or as itself)
    # and popularity's expanded degree vector come out unchanged.
    train = edges([(0, 0), (0, 1), (1, 2), (1, 3)])
    table = torch.arange(8.0).reshape(2, 4)
    before = table.clone()
    evaluate_scores(lambda ids: table[int(ids[0]):int(ids[-1]) + 1], train, held([[2], [0]]), 4)
    evaluate_scores(lambda ids: table, train, held([[2], [0]]), 4, batch_size=2)
    assert torch.equal(table, before)
    pop = popularity_score_fn(train, 4)
    evaluate_scores(pop, train, held([[2], [0]]), 4)
    assert pop(torch.tensor([0])).tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_ties_not_broken_by_item_id() -> None:
    # 1,000 items all scored 0; owner 0 holds out items 1..10 (trains item 0). An id-order
    # tie-break (torch.topk keeps the lowest indices) would give recall@10 = 1; a random order
    # gives ~10/999 in expectation. Fixed seed -> same result every time, any batch size.
    n = 1000
    train = edges([(0, 0)] + [(1, j) for j in range(n)])
    h = held([list(range(1, 11))])
    flat = lambda ids: torch.zeros(ids.numel(), n)
    r = evaluate_scores(flat, train, h, n, ks=(10,))
    assert r["recall@10"] < 0.5
    assert r == evaluate_scores(flat, train, h, n, ks=(10,), batch_size=1)
    seeds = {evaluate_scores(flat, train, h, n, ks=(10, 50), seed=s)["recall@50"] for s in range(5)}
    assert len(seeds) > 1  # the seed really changes the tie order


def test_non_candidate_is_a_miss_and_coverable() -> None:
    # Items 0..5 have training edges; item 6 has none. Owner 0 trains {0}, holds out {1, 6};
    # item 6 gets the highest score but is not a candidate: never ranked, counted as a miss.
    # Ranking of owner 0 over candidates {1..5} by score: 1 first.
    #   recall@1 = 1/2, NDCG@1 = 1/1 = 1 (IDCG over min(1,2) = 1 hit), R-prec (top-2 = [1,2]) = 1/2
    #   coverable = 1/2 (item 1 yes, item 6 no).
    train = edges([(0, 0), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5)])
    table = torch.tensor([[9.0, 8, 7, 6, 5, 4, 100]] * 2)
    r = evaluate_scores(const_scores(table), train, held([[1, 6]]), 7, ks=(1, 10))
    assert r["recall@1"] == pytest.approx(0.5)
    assert r["ndcg@1"] == pytest.approx(1.0)
    assert r["r_precision"] == pytest.approx(0.5)
    assert r["recall@10"] == pytest.approx(0.5)
    assert r["coverable"] == pytest.approx(0.5)
    assert r["playlists"] == 1


def test_fewer_candidates_than_k() -> None:
    # 5 items; owner 0 trains {0,1,2,3,4}; held out: item 5 (no training edge, num_items = 6).
    # Nothing is rankable: all top-10 entries are -inf / padding and none may count as a hit.
    train = edges([(0, i) for i in range(5)])
    table = torch.zeros(1, 6)
    r = evaluate_scores(const_scores(table), train, held([[5]]), 6, ks=(10, 50))
    assert r["recall@10"] == 0.0 and r["recall@50"] == 0.0 and r["r_precision"] == 0.0
    assert r["coverable"] == 0.0
    # with an explicit all-items candidate set, item 5 is rankable and is the only one left
    r = evaluate_scores(const_scores(table), train, held([[5]]), 6, ks=(10,),
                        candidates=torch.arange(6))
    assert r["recall@10"] == 1.0 and r["ndcg@10"] == 1.0 and r["coverable"] == 1.0


# ---------------------------------------------------------------- baselines

def random_graph(seed: int, owners: int = 30, items: int = 40, p: float = 0.15):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(owners, items, generator=g) < p)
    x[:, -3:] = False  # some items without any edge
    return x, x.nonzero().T.contiguous()


# 30 floats: blocks of 2 of the 30 owners (ItemKNN.rows_of, which the baseline is)
@pytest.mark.parametrize("block_floats", [1 << 24, 30])
def test_item_knn_equals_dense_cosine(monkeypatch: pytest.MonkeyPatch, block_floats: int) -> None:
    monkeypatch.setattr("engine.graph.cooccur.BLOCK_FLOATS", block_floats)
    x, train = random_graph(0)
    xf = x.double()
    norms = xf.norm(dim=0)
    cos = (xf.T @ xf) / torch.outer(norms, norms).clamp(min=1e-12)  # 0 for empty columns
    expected = xf @ cos  # s(p, j) = Σ_{i ∈ train(p)} cos(i, j)
    score = item_knn_score_fn(train, x.size(0), x.size(1))
    got = score(torch.arange(x.size(0)))
    assert got.shape == expected.shape
    assert torch.allclose(got.double(), expected, atol=1e-5)
    assert torch.allclose(score(torch.tensor([7, 2])).double(), expected[[7, 2]], atol=1e-5)


def test_popularity_ranks_by_degree() -> None:
    # item j has j + 1 edges from owners 1..j+1 (distinct degrees); owner 0 trains item 0 only.
    train = edges([(0, 0)] + [(p, j) for j in range(1, 8) for p in range(1, j + 2)])
    score = popularity_score_fn(train, 8)
    assert score(torch.tensor([0, 3])).tolist() == [[1.0, 2, 3, 4, 5, 6, 7, 8]] * 2
    ranker = Ranker(candidate_mask(train, 8), train, 9)
    top, _ = ranker.topk(score(torch.tensor([0, 8])), torch.tensor([0, 8]), 3)
    assert top[0].tolist() == [7, 6, 5]
    assert top[1].tolist() == [6, 5, 4]  # owner 8 trains item 7 (the most popular)


def test_batching_invariance() -> None:
    x, train = random_graph(1, owners=50, items=60, p=0.2)
    g = torch.Generator().manual_seed(2)
    hp = [(p, j) for p in range(0, 50, 2) for j in torch.randperm(60, generator=g)[:4].tolist()
          if not x[p, j]]
    h = HeldOut.from_pairs(np.array([a for a, _ in hp]), np.array([b for _, b in hp]))
    emb = embedding_score_fn(torch.randn(50, 8, generator=g), torch.randn(60, 8, generator=g))
    fns = {"emb": emb,
           "knn": item_knn_score_fn(train, 50, 60), "pop": popularity_score_fn(train, 60)}
    for fn in fns.values():
        a = evaluate_scores(fn, train, h, 60, ks=(5, 10), batch_size=1)
        b = evaluate_scores(fn, train, h, 60, ks=(5, 10), batch_size=1000)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], abs=1e-12)
        assert a["playlists"] == len(h)


def test_memory_bound_chunks_give_the_unchunked_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """A score matrix is capped at SCORE_BYTES: at 60 items and 4 · 60 · 3 bytes the batches
    hold 3 owners whatever batch_size says, with exactly the metrics of one batch, and the
    progress wrapper sees every chunk."""
    from engine.eval import evaluate as ev

    x, train = random_graph(4, owners=40, items=60, p=0.2)
    h = HeldOut.from_pairs(*(a.numpy() for a in x.logical_not().nonzero()[::7].T))
    fn = item_knn_score_fn(train, 40, 60)
    whole = evaluate_scores(fn, train, h, 60, batch_size=1000)
    monkeypatch.setattr(ev, "SCORE_BYTES", 4 * 60 * 3)
    assert ev.owners_per_batch(1000, 60) == 3 and ev.owners_per_batch(2, 60) == 2
    seen = []

    def wrap(it, total, desc):
        seen.append((total, desc))
        return it

    chunked = evaluate_scores(fn, train, h, 60, batch_size=1000, progress=wrap, desc="val")
    assert chunked.keys() == whole.keys()
    for k in whole:  # the same per-owner values, summed in another order
        assert chunked[k] == pytest.approx(whole[k], abs=1e-12)
    assert seen == [(math.ceil(len(h) / 3), "val")]


def test_evaluate_with_baselines_contract() -> None:
    x, train = random_graph(3, owners=20, items=30, p=0.3)
    held_pairs = x.nonzero()[::5]
    keep = torch.ones(x.sum().item(), dtype=torch.bool)
    keep[::5] = False
    split = Split(kind="playlist", num_owners=20, num_items=30, fit=train[:, keep],
                  train=train[:, keep], val=HeldOut.from_pairs(np.zeros(0, np.int64),
                                                               np.zeros(0, np.int64)),
                  test=HeldOut.from_pairs(held_pairs[:, 0].numpy(), held_pairs[:, 1].numpy()),
                  item_artist=torch.arange(30) % 7)
    model = embedding_score_fn(torch.randn(20, 4), torch.randn(30, 4))
    out = evaluate_with_baselines(model, split)
    assert set(out) == {"test", "baselines"}
    assert set(out["baselines"]) == {"popularity", "item_knn"}
    for res in (out["test"], out["baselines"]["popularity"], out["baselines"]["item_knn"]):
        assert list(res) == KEYS + ["distinct_artists@10", "coverage@10"]  # PROTOCOL.md
        assert 1 <= res["distinct_artists@10"] <= 7 and 0 < res["coverage@10"] <= 1
        assert res["playlists"] == len(split.test)
        assert res["coverable"] == out["test"]["coverable"]
    assert out["baselines"]["item_knn"] == evaluate_scores(
        item_knn_score_fn(split.train, 20, 30), split.train, split.test, 30,
        item_artist=split.item_artist)
    assert set(evaluate_with_baselines(None, split)) == {"baselines"}


def test_diversity_and_coverage_on_a_hand_made_ranking():
    # 3 owners, 12 items; artist of item i is i // 3 (items 0-2 artist 0, 3-5 artist 1, ...)
    artist = torch.arange(12) // 3
    topk = torch.tensor([
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],   # artists 0,0,0,1,1,1,2,2,2,3 in the top 10 -> 4
        [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 11],  # artists 0,1,2,3,0,1,2,3,0,1 -> 4
        [8, 8, -1, -1, -1, -1, -1, -1, -1, -1, -1],  # one real item twice, then padding -> 1
    ])
    valid = topk >= 0
    valid[2, 1] = False  # a masked (-inf) entry is padding too
    cand = torch.ones(12, dtype=torch.bool)
    cand[7] = False  # 11 candidates
    rel_indptr = torch.tensor([0, 1, 2, 3])
    rel_items = torch.tensor([5, 0, 3])
    acc = MetricAccumulator((10,), item_group=artist)
    acc.add(topk, rel_indptr, rel_items, valid=valid, candidate=cand)
    r = acc.result()
    assert r["distinct_artists@10"] == pytest.approx((4 + 4 + 1) / 3)
    # top-10 lists show items 0..10; of the 11 candidates (0..11 but 7) 10 are shown (not 11)
    assert r["coverage@10"] == pytest.approx(10 / 11)
    from engine.eval.metrics import distinct_groups

    assert distinct_groups(topk[:, :10], artist, valid[:, :10]).tolist() == [4, 4, 1]

"""The exact item-kNN term of PlaylistGAT: values against a brute-force count (a training pair
scored as if held out), the baseline's full ranking, the sampler's per-pair values, the model's
parts and the weight's gradient."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from engine.graph.cooccur import ItemKNN
from engine.graph.ops import PAIR
from engine.graph.sampler import BPRBatches
from engine.models import build_model, infer, part_score_fns, score_bias, score_fn
from engine.training.config import pair_knn
from engine.training.losses import bpr_loss
from tests.probes import own_edge_bytes, rss_mb
from tests.test_affinity import random_graph
from tests.test_models import PLAYLIST_HPARAMS

pytestmark = pytest.mark.usefixtures("one_thread")

PT = ("playlist", "to", "track")
SMALL = {**PLAYLIST_HPARAMS, "embedding_dim": 8, "heads": 1}


def brute_knn(edges: set[tuple[int, int]], owner: int, item: int, n_items: int,
              pop_exp: float = 0.5, len_exp: float = 0.0) -> float:
    """Item-kNN of ``item`` for ``owner`` in plain Python (cosine with the default exponents),
    the pair's own edge removed first (for a pair that is not an edge, nothing changes): the
    owner's other items j, each co-occurring owner q counted n_q^-len_exp (n_q: q's row length
    with every edge; p itself never co-occurs once its edge is out), over d_j^1/2 d_t^pop_exp
    (degrees after the removal, as a held-out pair has them)."""
    e = edges - {(owner, item)}
    deg = [sum(1 for _, t in e if t == j) for j in range(n_items)]
    length = {p: sum(1 for q, _ in edges if q == p) for p, _ in edges}
    row = {t for p, t in e if p == owner}
    owners_of = {j: {p for p, t in e if t == j} for j in range(n_items)}
    total = 0.0
    for j in row - {item}:
        c = sum(length[q] ** -len_exp for q in owners_of[j] & owners_of[item])
        if c:
            total += c / (math.sqrt(deg[j]) * deg[item] ** pop_exp)
    return total


def dense_knn(ei: torch.Tensor, n_p: int, n_t: int, pop_exp: float = 0.5,
              len_exp: float = 0.0) -> torch.Tensor:
    """[n_p, n_t] item-kNN from the dense matrix (with the default exponents the protocol's
    cosine formula), no sparse code: X (D^-1/2 X^T N^-len_exp X D^-pop_exp)."""
    x = torch.zeros(n_p, n_t)
    x[ei[0], ei[1]] = 1.0
    deg, n = x.sum(0).clamp(min=1), x.sum(1).clamp(min=1)
    sim = (x.T * deg[:, None].rsqrt()) @ (x * n[:, None] ** -len_exp) * deg[None, :] ** -pop_exp
    return x @ sim


def test_pairs_leave_a_training_edge_out_and_rows_match_the_dense_formula():
    g = random_graph(5)
    ei = g.edge_index[PT]
    n_p, n_t = g.num_nodes["playlist"], g.num_nodes["track"]
    knn = ItemKNN(g.csr[PT], n_t)  # its own transpose
    assert knn.cols.indices.data_ptr() != g.csr[("track", "to", "playlist")].indices.data_ptr()
    shared = ItemKNN.of_graph(g)  # the graph's reverse CSR, not a copy
    assert shared.cols is g.csr[("track", "to", "playlist")]
    edges = set(map(tuple, ei.t().tolist()))
    gen = torch.Generator().manual_seed(0)
    own = torch.randint(ei.size(1), (40,), generator=gen)
    owner = torch.cat([ei[0, own], torch.randint(n_p, (60,), generator=gen)])
    item = torch.cat([ei[1, own], torch.randint(n_t, (60,), generator=gen)])
    got = knn.pairs(owner, item)
    want = torch.tensor([brute_knn(edges, int(p), int(t), n_t) for p, t in zip(owner, item)])
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(shared.pairs(owner, item), want, atol=1e-5)
    assert (want[:40] > 0).sum() >= 10 and knn.is_edge(owner[:40], item[:40]).all()
    # full rows: the protocol's item-kNN (which its baseline computes with rows_of) on every
    # non-own item
    rows = knn.rows_of(torch.arange(n_p))
    base = dense_knn(ei, n_p, n_t)
    ranked = torch.ones(n_p, n_t, dtype=torch.bool)
    ranked[tuple(ei)] = False
    assert torch.allclose(rows[ranked], base[ranked], atol=1e-5)
    assert (rows[ranked] > 0).any()


@pytest.mark.parametrize("pop_exp,len_exp", [(0.3, 0.5), (0.0, 1.0), (1.0, 0.25)])
def test_other_exponents_leave_a_training_edge_out_and_match_the_dense_formula(pop_exp, len_exp):
    g = random_graph(7)
    ei = g.edge_index[PT]
    n_p, n_t = g.num_nodes["playlist"], g.num_nodes["track"]
    knn = ItemKNN.of_graph(g, pop_exp=pop_exp, len_exp=len_exp)
    edges = set(map(tuple, ei.t().tolist()))
    gen = torch.Generator().manual_seed(1)
    own = torch.randint(ei.size(1), (40,), generator=gen)
    owner = torch.cat([ei[0, own], torch.randint(n_p, (60,), generator=gen)])
    item = torch.cat([ei[1, own], torch.randint(n_t, (60,), generator=gen)])
    want = torch.tensor([brute_knn(edges, int(p), int(t), n_t, pop_exp, len_exp)
                         for p, t in zip(owner, item)])
    assert torch.allclose(knn.pairs(owner, item), want, atol=1e-5)
    assert (want[:40] > 0).sum() >= 10
    cosine = ItemKNN.of_graph(g).pairs(owner, item)
    assert not torch.allclose(cosine, want, atol=1e-3)  # the exponents change the values
    rows = knn.rows_of(torch.arange(n_p))
    ranked = torch.ones(n_p, n_t, dtype=torch.bool)
    ranked[tuple(ei)] = False
    base = dense_knn(ei, n_p, n_t, pop_exp, len_exp)
    assert torch.allclose(rows[ranked], base[ranked], atol=1e-5)
    with pytest.raises(ValueError, match="pop_exp"):
        ItemKNN.of_graph(g, pop_exp=1.5)


def test_batches_carry_one_value_per_scored_pair():
    g = random_graph(6)
    knn = ItemKNN(g.csr[PT], g.num_nodes["track"])
    batch = next(iter(BPRBatches(g, torch.arange(30), batch_size=6, num_neg=3, fanouts=[2, 2],
                                 seed=1, pos_per_owner=2, neg_pool=0, neg_popularity=0.5,
                                 owner_rows=None, pair_knn=knn)))
    sub = batch.sub
    pair = sub.edge_index[("playlist", PAIR, "track")]
    items = torch.cat([batch.pos_idx[:, None], batch.neg_idx], 1)
    assert pair.size(1) == items.numel()
    glob_o = sub.n_id["playlist"][pair[0]]
    glob_t = sub.n_id["track"][pair[1]]
    assert torch.equal(sub.edge_attr[("playlist", PAIR, "track")], knn.pairs(glob_o, glob_t))
    # the layers never read PAIR edges: the same vectors without them
    model = build_model("playlist", g, **{**SMALL, "knn_init": 1.0}).eval()
    with torch.no_grad():
        with_pairs = model(sub)
        del sub.edge_index[("playlist", PAIR, "track")]
        without = model(sub)
    assert all(torch.equal(with_pairs[t], without[t]) for t in with_pairs)


def test_the_weight_learns_and_parts_add_up_to_the_score():
    g = random_graph(7)
    torch.manual_seed(0)
    model = build_model("playlist", g, **{**SMALL, "knn_init": 0.5})
    assert model.knn_weight.item() == 0.5
    knn = ItemKNN(g.csr[PT], g.num_nodes["track"])
    batch = next(iter(BPRBatches(g, torch.arange(30), batch_size=8, num_neg=2, fanouts=[3, 2],
                                 seed=0, pos_per_owner=4, neg_pool=0, neg_popularity=0.5,
                                 owner_rows=["artist"], pair_knn=knn)))
    bias = score_bias(model, batch.sub)
    own = bias.knn[1].pairs(batch.owner_idx, batch.pos_idx)
    want = knn.pairs(batch.sub.n_id["playlist"][batch.owner_idx],
                     batch.sub.n_id["track"][batch.pos_idx])
    assert torch.equal(own, want)
    loss = bpr_loss(model(batch.sub), "playlist", "track", batch, 0.0, bias)
    loss.backward()
    assert model.knn_weight.grad is not None and model.knn_weight.grad != 0
    model.eval()
    owners = torch.arange(g.num_nodes["playlist"])
    parts = part_score_fns(model, g)
    assert set(parts) == {"gat", "affinity", "knn"}
    total = score_fn(model, g)(owners)
    assert torch.allclose(sum(fn(owners) for fn in parts.values()), total, atol=1e-5)
    base = dense_knn(g.edge_index[PT], len(owners), g.num_nodes["track"])
    ranked = torch.ones_like(base, dtype=torch.bool)
    ranked[tuple(g.edge_index[PT])] = False  # own items keep their edge in full rows
    assert torch.allclose(parts["knn"](owners)[ranked], 0.5 * torch.log1p(base)[ranked],
                          atol=1e-5)
    vecs = infer(model, g)
    assert torch.allclose(parts["gat"](owners), vecs["playlist"] @ vecs["track"].T)


def test_options_and_a_batch_without_values():
    g = random_graph(8)
    assert build_model("playlist", g, **SMALL).knn_weight is None  # knn_init 0: no term
    with pytest.raises(ValueError, match="knn_init"):
        build_model("playlist", g, **{**SMALL, "knn_init": -1.0})
    model = build_model("playlist", g, **{**SMALL, "knn_init": 1.0}, affinity_types=[])
    batch = next(iter(BPRBatches(g, torch.arange(30), batch_size=4, num_neg=2, fanouts=[2, 2],
                                 seed=0, pos_per_owner=2, neg_pool=0, neg_popularity=0.0,
                                 owner_rows=None)))
    with pytest.raises(ValueError, match="pair_knn"):  # a batch from a sampler without values
        score_bias(model, batch.sub)


def test_an_epoch_plan_gives_values_only_to_a_model_with_the_term():
    from engine.training.config import TrainConfig
    from engine.training.loop import EpochPlan

    g = random_graph(9)
    cfg = TrainConfig(batch_size=8, num_neg=2, fanouts=[2, 2], pos_per_owner=2)
    with_term = build_model("playlist", g, **{**SMALL, "knn_init": 1.0})
    plan = EpochPlan.make(cfg, g, with_term, rank=0, world_size=1)
    batch = next(iter(plan.batches(cfg, g, epoch=0, rank=0)))
    assert ("playlist", PAIR, "track") in batch.sub.edge_index
    score_bias(with_term, batch.sub)  # the term finds its values
    plain = EpochPlan.make(cfg, g, build_model("playlist", g, **SMALL), rank=0, world_size=1)
    assert plain.knn is None
    assert ("playlist", PAIR, "track") not in next(iter(plain.batches(cfg, g, 0, 0))).sub.edge_index


def test_the_enhanced_model_takes_the_term_too(tiny_sessions):
    from engine.training.config import TrainConfig, make_model
    from engine.training.loop import EpochPlan
    from engine.training.run_data import RunData

    cfg = TrainConfig(dataset=str(tiny_sessions), model="enhanced", embedding_dim=8, heads=1,
                      batch_size=16, model_options={"knn_init": 2.0})
    data = RunData.load(cfg)
    g = data.graph("fit")
    model = make_model(cfg, g)
    assert model.knn_weight.item() == 2.0
    plan = EpochPlan.make(cfg, g, model, rank=0, world_size=1)
    batch = next(iter(plan.batches(cfg, g, epoch=0, rank=0)))
    loss = bpr_loss(model(batch.sub), g.owner_type, g.item_type, batch, 0.0,
                    score_bias(model, batch.sub))
    loss.backward()
    assert model.knn_weight.grad != 0
    model.eval()
    owners = torch.arange(g.num_nodes[g.owner_type])
    parts = part_score_fns(model, g)
    assert set(parts) == {"gat", "knn"}
    assert torch.allclose(parts["gat"](owners) + parts["knn"](owners), score_fn(model, g)(owners),
                          atol=1e-5)
    plain = make_model(TrainConfig(dataset=str(tiny_sessions), model="enhanced", knn_init=0.0), g)
    assert plain.knn_weight is None and score_bias(plain, g.full()) is None


def test_the_run_default_reaches_the_models_that_take_it_and_old_runs_keep_none(tiny_playlists):
    import warnings

    from engine.training.config import TrainConfig, make_model
    from engine.training.run_data import RunData

    cfg = TrainConfig(dataset=str(tiny_playlists), embedding_dim=8, heads=1)
    g = RunData.load(cfg).graph("fit")
    assert make_model(cfg, g).knn_weight.item() == cfg.knn_init == 1.0
    assert make_model(TrainConfig.from_dict({**cfg.to_dict(), "knn_init": 0.5}),
                      g).knn_weight.item() == 0.5
    over = TrainConfig.from_dict({**cfg.to_dict(), "model_options": {"knn_init": 2.0}})
    assert make_model(over, g).knn_weight.item() == 2.0  # model_options wins, as for any option
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the basic GAT has no such term, and no warning about it
        basic = make_model(TrainConfig.from_dict({**cfg.to_dict(), "model": "basic"}), g)
    assert not hasattr(basic, "knn_weight")
    assert not [w for w in caught if "knn_init" in str(w.message)]
    saved = {k: v for k, v in cfg.to_dict().items() if k != "knn_init"}  # a run from before
    assert make_model(TrainConfig.from_saved(saved), g).knn_weight is None
    # the exponents: the cosine by default and in runs saved before them; a run's own reach
    # the model and the sampler's scorer
    assert make_model(cfg, g).knn_exponents == (cfg.knn_pop_exp, cfg.knn_len_exp) == (0.5, 0.0)
    assert pair_knn(make_model(cfg, g), g).cosine
    other = TrainConfig.from_dict({**cfg.to_dict(), "knn_pop_exp": 0.3, "knn_len_exp": 0.5})
    model = make_model(other, g)
    assert model.knn_exponents == (0.3, 0.5)
    scorer = pair_knn(model, g)
    assert (scorer.pop_exp, scorer.len_exp) == (0.3, 0.5) and not scorer.cosine
    older = {k: v for k, v in other.to_dict().items() if k not in ("knn_pop_exp", "knn_len_exp")}
    assert make_model(TrainConfig.from_saved(older), g).knn_exponents == (0.5, 0.0)


def test_the_model_term_uses_its_exponents_in_batches_and_full_rows():
    g = random_graph(12)
    exps = {"knn_pop_exp": 0.3, "knn_len_exp": 0.5}
    model = build_model("playlist", g, **{**SMALL, "knn_init": 1.0, **exps}).eval()
    with pytest.raises(ValueError, match="len_exp"):
        build_model("playlist", g, **{**SMALL, "knn_init": 1.0, "knn_len_exp": -0.1})
    batch = next(iter(BPRBatches(g, torch.arange(30), batch_size=6, num_neg=3, fanouts=[2, 2],
                                 seed=0, pos_per_owner=2, neg_pool=0, neg_popularity=0.0,
                                 owner_rows=None, pair_knn=pair_knn(model, g))))
    pair = batch.sub.edge_index[("playlist", PAIR, "track")]
    n = batch.sub.n_id
    edges = set(map(tuple, g.edge_index[PT].t().tolist()))
    want = torch.tensor([brute_knn(edges, int(n["playlist"][p]), int(n["track"][t]),
                                   g.num_nodes["track"], 0.3, 0.5) for p, t in pair.t()])
    got = batch.sub.edge_attr[("playlist", PAIR, "track")].reshape(-1)
    assert torch.allclose(got, want, atol=1e-5) and (want > 0).any()
    owners = torch.arange(g.num_nodes["playlist"])
    base = dense_knn(g.edge_index[PT], len(owners), g.num_nodes["track"], 0.3, 0.5)
    ranked = torch.ones_like(base, dtype=torch.bool)
    ranked[tuple(g.edge_index[PT])] = False
    knn = part_score_fns(model, g)["knn"](owners)
    assert torch.allclose(knn[ranked], torch.log1p(base)[ranked], atol=1e-5)


def test_the_memory_estimate_counts_the_terms_index():
    from engine.training.config import TrainConfig
    from engine.training.memory import estimate, knn_bytes
    from tests.test_sampler import random_graph as sampled_graph

    g, denser = sampled_graph(10), sampled_graph(10, e=1200)  # the same nodes, more edges
    on, off = TrainConfig(embedding_dim=8, heads=1), TrainConfig(embedding_dim=8, heads=1,
                                                                 knn_init=0.0)
    worker, chief = knn_bytes(on, g)
    # nothing per fit edge on a worker (the CSRs are the node's graph store); rank 0's full
    # ranking has a value per fit edge
    assert knn_bytes(on, denser)[0] == worker > 0
    assert chief >= 4 * g.csr[PT].num_edges
    a, b = estimate(on, g, 2, 0), estimate(off, g, 2, 0)
    # and kappa itself: weight, gradient and two Adam moments per worker (the best weights are
    # a file)
    assert a.per_worker - b.per_worker == worker + 16
    assert a.chief_extra - b.chief_extra == chief


def test_pairs_in_blocks_of_owners_give_the_same_values(monkeypatch):
    from engine.graph import cooccur

    g = random_graph(11)
    knn = ItemKNN.of_graph(g)
    gen = torch.Generator().manual_seed(1)
    owner = torch.randint(g.num_nodes["playlist"], (300,), generator=gen)
    item = torch.randint(g.num_nodes["track"], (300,), generator=gen)
    whole = knn.pairs(owner, item)
    monkeypatch.setattr(cooccur, "BLOCK_FLOATS", 3 * g.num_nodes["playlist"])  # 3 owners a block
    assert torch.equal(knn.pairs(owner, item), whole) and (whole > 0).any()


@pytest.mark.timeout(60)
def test_the_scorer_keeps_no_array_per_edge_of_its_own():
    """Every worker of a node builds the scorer of the fit graph for its batches' pair values;
    the graph's CSRs are the node's graph store (one copy), so what the scorer adds must not grow
    with the edges: it finds a pair's own edge by a binary search in the owner's row, not in a
    key per edge (26 MB a worker at the Kaggle file's 3.3 M fit edges), with the same answers."""
    g = random_graph(9)
    knn = ItemKNN.of_graph(g)
    edges = g.csr[PT].num_edges
    assert own_edge_bytes(knn, g, edges) == 0
    gen = torch.Generator().manual_seed(0)
    owner = torch.randint(0, g.num_nodes["playlist"], (500,), generator=gen)
    item = torch.randint(0, g.num_nodes["track"], (500,), generator=gen)
    pairs = set(map(tuple, g.edge_index[PT].t().tolist()))
    want = torch.tensor([(o, t) in pairs for o, t in zip(owner.tolist(), item.tolist())])
    ei = g.edge_index[PT]
    owner, item = torch.cat([owner, ei[0, :50]]), torch.cat([item, ei[1, :50]])
    want = torch.cat([want, torch.ones(50, dtype=torch.bool)])
    assert torch.equal(knn.is_edge(owner, item), want) and want.any() and not want.all()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.timeout(60)
def test_overlaps_match_a_dense_product_and_do_not_leak():
    """M = X_b (X D^-1/2)^T exactly, and calls give their memory back (full rows too): torch's
    CPU sparse x sparse product, which this replaced, kept about half a megabyte a call on this
    shape (154 MB over these 300 calls; gigabytes over a full-size evaluation or epoch)."""
    g = torch.Generator().manual_seed(0)
    num_owners, num_items, num_edges = 2000, 10000, 100000
    item = (torch.rand(num_edges, generator=g) ** 3 * num_items).long()  # a few popular items
    owner = torch.randint(0, num_owners, (num_edges,), generator=g)
    knn = ItemKNN.of_edges(torch.stack([owner, item]), num_owners, num_items)
    owners = torch.tensor([0, 5, 5, 1999, 17])
    x = torch.zeros(num_owners, num_items)
    x[owner, item] = 1.0
    deg = x.sum(0)
    xn = x * torch.where(deg > 0, deg.clamp(min=1).rsqrt(), 0.0)
    assert torch.allclose(knn.overlaps(owners), x[owners] @ xn.T, rtol=1e-5, atol=1e-5)
    batch = torch.arange(32)
    for _ in range(20):
        knn.overlaps(batch)
    before = rss_mb()
    for _ in range(300):
        knn.overlaps(batch)
    kept = rss_mb() - before
    assert kept < 40, f"overlaps: {kept:.0f} MB kept over 300 calls"
    before = rss_mb()  # full rows: overlaps, then a sparse x dense product
    for _ in range(100):
        knn.rows_of(batch)
    kept = rss_mb() - before
    assert kept < 40, f"rows_of: {kept:.0f} MB kept over 100 calls"

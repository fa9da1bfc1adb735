"""SVD start of ID embeddings (engine.models.init) on a real prepared graph."""
from __future__ import annotations

import pytest
import torch

from engine.data.canonical import load_dataset
from engine.graph.build import build_graph
from engine.graph.split import make_split
from engine.models.init import interaction_matrix, svd_factors, svd_init_
from engine.training.config import TrainConfig, make_model
from tests.test_split import SPLIT


@pytest.fixture(scope="module")
def fit_graph(tiny_playlists):
    ds = load_dataset(tiny_playlists)
    return build_graph(ds, make_split(ds, holdout=2, **SPLIT), "fit")


def test_factors_reconstruct_the_training_matrix_best_at_rank_d(fit_graph) -> None:
    x = interaction_matrix(fit_graph).to_dense()
    csr = fit_graph.csr[fit_graph.interaction]
    assert x.sum() == csr.indices.numel()  # one entry per fit edge, nothing else
    d = 8
    u, v = svd_factors(fit_graph, d, seed=0)
    assert u.shape == (x.size(0), d) and v.shape == (x.size(1), d)
    err = torch.linalg.matrix_norm(x - u @ v.T)
    s = torch.linalg.svdvals(x)
    best = s[d:].pow(2).sum().sqrt()  # Eckart–Young: no rank-d matrix is closer
    assert best <= err <= 1.05 * best
    u2, v2 = svd_factors(fit_graph, d, seed=0)
    assert torch.equal(u, u2) and torch.equal(v, v2)  # same graph and seed, same start


def test_svd_init_sets_owner_and_item_tables(fit_graph, one_thread) -> None:
    cfg = TrainConfig(embedding_dim=8, heads=1, model_options={
        "id_embeddings": ["playlist", "track", "artist", "genre"]})
    model = make_model(cfg, fit_graph)
    artist_before = model.emb["artist"].weight.clone()
    std_before = {t: model.emb[t].weight.std().item() for t in ("playlist", "track")}
    assert svd_init_(model, fit_graph, seed=0) == ["playlist", "track"]
    for t in ("playlist", "track"):  # the scale of the random start, new values
        assert model.emb[t].weight.std().item() == pytest.approx(std_before[t], rel=1e-4)
        assert std_before[t] == pytest.approx(model.init_std, rel=0.1)
    assert torch.equal(model.emb["artist"].weight, artist_before)  # other tables untouched
    x = interaction_matrix(fit_graph).to_dense()
    no_edges = x.sum(0) == 0
    assert no_edges.any()
    assert model.emb["track"].weight[no_edges].abs().max() < 1e-6  # cold tracks start at zero
    # the start ranks a playlist's own training tracks far above the others (it is the SVD)
    s = model.emb["playlist"].weight @ model.emb["track"].weight.T
    own = (s * x).sum(1) / x.sum(1).clamp(min=1)
    other = (s * (1 - x)).sum(1) / (1 - x).sum(1)
    assert (own > other).float().mean() > 0.95
    # without item ID embeddings only the owner table is set
    plain = make_model(TrainConfig(embedding_dim=8, heads=1, id_init="normal"), fit_graph)
    assert svd_init_(plain, fit_graph, seed=0) == ["playlist"]


def test_the_default_run_gives_tracks_svd_started_id_tables(fit_graph, one_thread) -> None:
    cfg = TrainConfig(embedding_dim=8, heads=1)
    assert cfg.id_init == "svd"
    model = make_model(cfg, fit_graph)
    assert {"playlist", "track"} <= set(model.emb)
    legacy = make_model(TrainConfig(embedding_dim=8, heads=1, id_init="normal"), fit_graph)
    assert "track" not in legacy.emb  # tracks are their features and neighbours only


def test_score_parts_the_benchmark_ranks_add_up_to_the_model_score(fit_graph, one_thread) -> None:
    from engine.models import part_score_fns, score_fn

    model = make_model(TrainConfig(embedding_dim=8, heads=1), fit_graph)
    svd_init_(model, fit_graph, seed=0)
    parts = part_score_fns(model, fit_graph)
    assert set(parts) == {"gat", "affinity", "knn"}
    ids = torch.arange(5)
    total = score_fn(model, fit_graph)(ids)
    torch.testing.assert_close(parts["gat"](ids) + parts["affinity"](ids) + parts["knn"](ids),
                               total)
    assert all(parts[k](ids).abs().sum() > 0 for k in parts)
    off = make_model(TrainConfig(embedding_dim=8, heads=1, knn_init=0.0,
                                 model_options={"affinity_types": []}), fit_graph)
    assert set(part_score_fns(off, fit_graph)) == {"gat"}


def test_a_config_saved_before_id_init_means_the_random_start() -> None:
    from engine.training.config import config_diff

    old = TrainConfig().to_dict()
    del old["id_init"]  # as runs saved before the option wrote it
    assert TrainConfig.from_saved(old).id_init == "normal"  # what those runs trained with
    assert TrainConfig.from_dict(old).id_init == "svd"  # a fresh partial config: the default
    assert config_diff(old, TrainConfig().to_dict()) == {"id_init": ("normal", "svd")}
    assert config_diff(old, TrainConfig(id_init="normal").to_dict()) == {}

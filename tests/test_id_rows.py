"""ID rows only for items with enough fit edges (TrainConfig.id_min_edges, engine.models.id_rows)."""
from __future__ import annotations

import pytest
import torch

from engine.cold_start import fit_state
from engine.data.canonical import load_dataset
from engine.errors import BadInput
from engine.graph.build import build_graph
from engine.graph.split import make_split
from engine.models.id_rows import RowEmbedding, id_row_map
from engine.models.init import svd_init_
from engine.training.config import MODES, TrainConfig, make_model, mode_config
from tests.test_split import SPLIT

pytestmark = pytest.mark.timeout(60)
SMALL = {"embedding_dim": 8, "heads": 1}


@pytest.fixture(scope="module")
def graphs(tiny_playlists):
    ds = load_dataset(tiny_playlists)
    split = make_split(ds, holdout=2, **SPLIT)
    return build_graph(ds, split, "fit"), build_graph(ds, split, "train")


def fit_degree(graph) -> torch.Tensor:
    return torch.bincount(graph.csr[graph.interaction].indices.long(),
                          minlength=graph.num_nodes[graph.item_type])


def test_rows_go_to_the_items_with_enough_fit_edges_in_node_order(graphs, one_thread) -> None:
    fit, _ = graphs
    deg = fit_degree(fit)
    row = id_row_map(fit, 2)
    keep = deg >= 2
    assert 0 < int(keep.sum()) < keep.numel()  # the tiny graph has both kinds
    assert torch.equal(row >= 0, keep)
    assert torch.equal(row[keep], torch.arange(int(keep.sum()), dtype=torch.int32))
    assert torch.equal(id_row_map(fit, 1) >= 0, deg >= 1)
    model = make_model(TrainConfig(**SMALL, id_min_edges=2), fit)
    table = model.emb["track"]
    assert isinstance(table, RowEmbedding) and table.num_embeddings == int(keep.sum())
    assert torch.equal(table.row, row)
    assert dict(model.options.id_rows) == {"track": int(keep.sum())}
    hash(model.options)  # options stay hashable, as the other iterable fields
    assert type(model.emb["playlist"]) is torch.nn.Embedding  # owners keep a row each
    # the default (every mode but full) builds the table as before: a row per track
    assert type(make_model(TrainConfig(**SMALL), fit).emb["track"]) is torch.nn.Embedding


def test_the_svd_start_follows_the_row_map(graphs, one_thread) -> None:
    fit, _ = graphs
    every = make_model(TrainConfig(**SMALL), fit)
    some = make_model(TrainConfig(**SMALL, id_min_edges=2), fit)
    std = {m: m.emb["track"].weight.std().item() for m in (every, some)}
    svd_init_(every, fit, seed=0)
    svd_init_(some, fit, seed=0)
    row = some.emb["track"].row
    has = torch.nonzero(row >= 0).flatten()
    # a track with a row starts where it starts with a row for every track, at its table's scale
    want = every.emb["track"].weight[has] * (std[some] / std[every])
    torch.testing.assert_close(some.emb["track"].weight[row[has].long()], want)


def test_a_track_without_a_row_is_its_features_and_neighbours(graphs, one_thread) -> None:
    fit, _ = graphs
    model = make_model(TrainConfig(**SMALL, id_min_edges=2), fit)
    svd_init_(model, fit, seed=0)
    sub = fit.full()
    rowless = torch.nonzero(model.emb["track"].row < 0).flatten()
    h0 = model.encode(sub)["track"]
    x = sub.x["track"].float()
    torch.testing.assert_close(h0[rowless], model.proj["track"](x)[rowless])
    table = model.emb["track"]
    table.sparse = True  # as training runs it: SparseAdam steps the rows a gradient lists
    table(rowless).pow(2).sum().backward()
    # no row is even listed (a listed zero gradient would still move Adam's moments and the row)
    assert table.weight.grad is None or table.weight.grad.coalesce().indices().numel() == 0
    # its score vector still comes from its neighbours (the layers), not its features alone
    for layer in model.layers:
        for conv in layer.convs.values():
            torch.nn.init.normal_(conv.lin_src.weight, std=0.1)
    with torch.no_grad():
        vec = model(sub)["track"][rowless]
    assert not torch.allclose(vec, h0.detach()[rowless])


def test_a_checkpoint_brings_its_row_map(graphs, one_thread) -> None:
    fit, train = graphs
    cfg = TrainConfig(**SMALL, id_min_edges=2)
    trained = make_model(cfg, fit)
    state = trained.state_dict()
    # the test's graph has more edges, so more tracks pass the threshold there
    assert int((fit_degree(train) >= 2).sum()) > trained.emb["track"].num_embeddings
    for load in ("load_state_dict", "fit_state"):
        model = make_model(cfg, train)
        assert model.emb["track"].num_embeddings != trained.emb["track"].num_embeddings
        if load == "fit_state":
            state_in = fit_state(state, model, "ckpt")
        else:
            state_in = state
        model.load_state_dict(state_in)
        assert torch.equal(model.emb["track"].row, trained.emb["track"].row)
        assert torch.equal(model.emb["track"].weight, trained.emb["track"].weight)


def test_a_checkpoint_saved_before_the_field_still_loads(graphs, one_thread) -> None:
    fit, _ = graphs
    saved = TrainConfig(**SMALL).to_dict()
    del saved["id_min_edges"]  # as configs saved before the field
    cfg = TrainConfig.from_saved(saved)
    assert cfg.id_min_edges == 1
    old = make_model(cfg, fit).state_dict()
    assert not any(k.endswith(".row") for k in old)  # nothing new in such a checkpoint
    model = make_model(cfg, fit)
    model.load_state_dict(old)  # strict
    assert torch.equal(model.emb["track"].weight, old["emb.track.weight"])


def test_id_min_edges_is_validated_and_only_full_mode_sets_it() -> None:
    for bad in (0, -1, "2", 1.5):
        with pytest.raises(BadInput, match="id_min_edges"):
            TrainConfig.validate({"id_min_edges": bad})
    assert TrainConfig().id_min_edges == 1
    assert TrainConfig.validate({"id_min_edges": 3}).id_min_edges == 3
    assert mode_config("full")["id_min_edges"] == MODES["full"]["id_min_edges"] > 1
    for mode in ("mini", "quick", "balanced"):
        assert TrainConfig(**mode_config(mode)).id_min_edges == 1


def test_id_rows_by_hand_is_refused(graphs, one_thread) -> None:
    """``id_rows`` is derived (a row count that needs its map): set by hand in model_options it
    gave a table without a map, so no track had a row. It is exit 2, naming id_min_edges."""
    fit = graphs[0]
    with pytest.raises(BadInput, match="'id_rows' is derived from id_min_edges"):
        make_model(TrainConfig(**SMALL, model_options={"id_rows": {"track": 3}}), fit)


def test_a_row_map_of_another_size_is_refused() -> None:
    table = RowEmbedding(5, 2, 3)
    assert torch.equal(table(torch.arange(5)), torch.zeros(5, 3))  # no rows until set
    with pytest.raises(ValueError, match="rows"):
        table.set_rows(torch.tensor([0, 1, 2, -1, -1], dtype=torch.int32))
    table.set_rows(torch.tensor([-1, 0, -1, 1, -1], dtype=torch.int32))
    out = table(torch.tensor([3, 0, 1]))
    assert torch.equal(out, torch.stack([table.weight[1], torch.zeros(3), table.weight[0]]))

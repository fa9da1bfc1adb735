"""The per-worker loop without Ray: training, early stopping, checkpoints, resume, metrics.json."""
from __future__ import annotations

import json

import pytest
import torch

from engine.training.checkpoint import load_state
from engine.training.config import TrainConfig
from engine.training.loop import train_loop_per_worker
from engine.training.losses import bpr_loss
from engine.training.state import BEST_FILE

KEYS = {"recall@10", "ndcg@10", "recall@50", "ndcg@50", "r_precision", "playlists", "coverable",
        "distinct_artists@10", "coverage@10"}  # shared/PROTOCOL.md's metrics.json contract


def _run(dataset, out, **kw):
    cfg = {"dataset": str(dataset), "output": str(out), "epochs": 2, "batch_size": 32,
           "pos_per_owner": 4, "embedding_dim": 16, "heads": 2, "progress": False,
           "max_val_owners": 100}
    cfg.update(kw)
    return train_loop_per_worker(cfg)


def test_bpr_loss_matches_formula():
    class B:
        owner_idx = torch.tensor([0, 1])
        pos_idx = torch.tensor([0, 1])
        neg_idx = torch.tensor([[1], [0]])

    vecs = {"o": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "i": torch.tensor([[2.0, 0.0], [0.0, 3.0]])}
    # triple 0: s+ = 2, s- = 0; triple 1: s+ = 3, s- = 0
    expected = -(torch.log(torch.sigmoid(torch.tensor(2.0))) + torch.log(torch.sigmoid(torch.tensor(3.0)))) / 2
    assert torch.isclose(bpr_loss(vecs, "o", "i", B, l2=0.0), expected)


def test_loop_writes_protocol_metrics_and_resumes_without_retraining(tiny_playlists, tmp_path):
    out = tmp_path / "run"
    result = _run(tiny_playlists, out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert KEYS <= set(metrics["test"])
    assert KEYS <= set(metrics["baselines"]["popularity"]) and KEYS <= set(metrics["baselines"]["item_knn"])
    assert metrics["params"] > 0 and metrics["train_seconds"] > 0
    assert metrics["epochs_run"] == 2 and result["test"] == metrics["test"]
    # both evaluations rank the same test playlists
    assert metrics["test"]["playlists"] == metrics["baselines"]["item_knn"]["playlists"] > 0
    for name in ("best_model.pt", "final_model.pt"):
        state = load_state(out / name)  # weights_only=True
        assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert not (out / BEST_FILE).exists()  # rank 0's file of the best so far: best_model.pt now
    ckpts = sorted((out / "checkpoints").glob("epoch_*/state.pt"))
    assert [c.parent.name for c in ckpts] == ["epoch_0001", "epoch_0002"]
    assert load_state(ckpts[-1])["finished"] is True
    # a rerun of a finished run does not train again
    again = _run(tiny_playlists, out)
    assert again["epochs_run"] == 2 and again["history"] == metrics["history"]


class _StopAt:
    """A test hook: the run stops (as if killed) when ``epoch`` (0-based) starts."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def __call__(self, event, epoch=None, **info):
        if event == "epoch_start" and epoch == self.epoch:
            raise KeyboardInterrupt


def test_resume_continues_from_last_checkpoint(tiny_playlists, tmp_path):
    import pytest

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):  # interrupted after epoch 1 of 3
        _run(tiny_playlists, out, epochs=3, hooks=[_StopAt(1)])
    assert load_state(out / "checkpoints" / "epoch_0001" / "state.pt")["finished"] is False
    result = _run(tiny_playlists, out, epochs=3)
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]
    assert result["resumes"] and result["resumes"][0]["from_epoch"] == 1


def test_early_stopping_stops_when_validation_stalls(tiny_playlists, tmp_path):
    # lr so small that val Recall@10 cannot improve after the first epoch
    result = _run(tiny_playlists, tmp_path / "run", epochs=6, lr=1e-9, patience=1, min_lr=1e-9)
    assert result["epochs_run"] < 6


def test_full_mode_stops_early_and_prints_its_eta(tiny_playlists, tmp_path, capsys):
    """Full mode's settings on the path full mode takes (the graph store every worker maps):
    early stopping ends the run, and every epoch line says how long it took and what is left."""
    from engine.training.config import mode_config
    from engine.training.run_data import RunData

    cfg = TrainConfig(dataset=str(tiny_playlists), max_val_owners=100)  # _run's data settings
    store = RunData.save_store(cfg, tmp_path / "store")
    result = _run(tiny_playlists, tmp_path / "run", lr=1e-9, patience=1, min_lr=1e-9,
                  graph_store=str(store), **mode_config("full"))
    # the start is validated first and sets the best; at lr 1e-9 the first epoch stalls
    assert result["epochs_run"] == 1
    assert result["best_val_recall@10"] == result["start_val_recall@10"]
    out = capsys.readouterr().out
    assert "early stopping: no val_recall@10 gain for 1 epoch(s)" in out
    assert "ms/step incl. validation), ~" in out and "left at most" in out


def test_eta_line():
    from engine.training.loop import eta_line

    history = [{"epoch": 1, "epoch_seconds": 90.0, "epoch_wall_seconds": 100.0},
               {"epoch": 2, "epoch_seconds": 300.0}]  # a resumed run: saved before wall times
    assert eta_line(history, 50, 20) == "300 s (6000 ms/step incl. validation), ~1.0 h left at most"
    assert eta_line(history[:1], 50, 1).endswith("last epoch")
    assert eta_line(history[:1], 50, 2).endswith("~2 min left at most")
    assert eta_line([{"epoch": 1, "epoch_seconds": 20.0}], 50, 3).endswith("~40 s left at most")


def test_session_pipeline_enhanced_model(tiny_sessions, tmp_path):
    result = _run(tiny_sessions, tmp_path / "run", model="enhanced", genre_weight=0.5, epochs=1)
    assert result["data"]["kind"] == "session"
    assert KEYS <= set(result["test"])


def test_make_model_skips_title_genres_only(tiny_playlists):
    """PlaylistGAT leaves out title-derived genre edges (they leak a playlist's own title into
    its positives) unless told otherwise; artist-sourced genres are used."""
    from engine.data.canonical import load_dataset
    from engine.graph.build import build_graph
    from engine.graph.split import make_split
    from engine.training.config import make_model, model_options
    from tests.test_split import SPLIT

    ds = load_dataset(tiny_playlists)
    graph = build_graph(ds, make_split(ds, holdout=2, **SPLIT))
    assert graph.genre_source == "titles" and "genre" in graph.num_nodes
    cfg = TrainConfig(model="playlist", embedding_dim=8, heads=1)
    assert model_options(cfg, graph)["skip_types"] == ["genre"]
    assert "genre" not in make_model(cfg, graph).emb
    kept = TrainConfig(model="playlist", embedding_dim=8, heads=1,
                       model_options={"skip_types": []})
    assert "genre" in make_model(kept, graph).emb
    graph.genre_source = "artists"
    assert "skip_types" not in model_options(cfg, graph)
    assert "skip_types" not in model_options(TrainConfig(model="enhanced"), graph)


def test_run_data_applies_the_config_to_split_and_graphs(tiny_playlists):
    """One place turns a config into split and graphs: holdout and recency reach both stages."""
    from engine.training.run_data import RunData

    data = RunData.load(TrainConfig(dataset=str(tiny_playlists), holdout=3, recency=True))
    assert data.artist_genres is None
    assert data.split.test.items.numel() == 3 * len(data.split.test)
    for stage in ("fit", "train"):
        g = data.graph(stage)
        assert g.edge_attr[g.interaction].shape == (g.edge_index[g.interaction].size(1), 2)
    plain = RunData.load(TrainConfig(dataset=str(tiny_playlists)))
    assert plain.split.test.items.numel() == 5 * len(plain.split.test)
    assert not plain.graph("fit").edge_attr


def test_softmax_loss_matches_formula_with_in_batch_negatives():
    """Each positive competes with its own negatives and the batch's other positives, except
    the items its own owner has as positives (itself included)."""
    from engine.training.losses import loss_fn, softmax_loss

    class B:
        owner_idx = torch.tensor([0, 0, 1])
        pos_idx = torch.tensor([0, 1, 0])  # triple 2's positive is a copy of triple 0's
        neg_idx = torch.tensor([[2], [2], [1]])

    vecs = {"o": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
            "i": torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])}
    s = vecs["o"] @ vecs["i"].T  # s[o, i]
    lse = torch.logsumexp
    expected = torch.stack([
        # o0's positives are items 0 and 1: triples 1 and 2 bring no negative to o0
        lse(torch.stack([s[0, 0], s[0, 2]]), 0) - s[0, 0],
        lse(torch.stack([s[0, 1], s[0, 2]]), 0) - s[0, 1],
        # o1: its negative, and triple 1's positive (item 1); triple 0's is a copy of its own
        lse(torch.stack([s[1, 0], s[1, 1], s[1, 1]]), 0) - s[1, 0],
    ]).mean()
    assert torch.isclose(softmax_loss(vecs, "o", "i", B, l2=0.0), expected)
    assert loss_fn("softmax") is softmax_loss


def test_softmax_logq_shifts_only_the_in_batch_negatives():
    """logq subtracts log q of each in-batch negative's global item from its logit; the
    positive and its own sampled negatives are not shifted."""
    from types import SimpleNamespace

    from engine.training.losses import loss_fn

    batch = SimpleNamespace(owner_idx=torch.tensor([0, 1]), pos_idx=torch.tensor([0, 1]),
                            neg_idx=torch.tensor([[2], [2]]),
                            sub=SimpleNamespace(n_id={"i": torch.tensor([5, 6, 7])},
                                                edge_index={}))
    vecs = {"o": torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
            "i": torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])}
    log_q = torch.zeros(8)
    log_q[5], log_q[6] = -1.0, -2.0  # global items 5 and 6: local 0 and 1
    s = vecs["o"] @ vecs["i"].T
    lse = torch.logsumexp
    expected = torch.stack([
        lse(torch.stack([s[0, 0], s[0, 2], s[0, 1] + 2.0]), 0) - s[0, 0],
        lse(torch.stack([s[1, 1], s[1, 2], s[1, 0] + 1.0]), 0) - s[1, 1],
    ]).mean()
    got = loss_fn("softmax", log_q)(vecs, "o", "i", batch, 0.0)
    assert torch.isclose(got, expected)
    assert not torch.isclose(got, loss_fn("softmax")(vecs, "o", "i", batch, 0.0))


def test_dot_loss_adds_the_loss_of_the_dot_product_alone():
    """dot_loss w: BPR on the full score (dot product + bias) plus w x BPR on the dot product
    alone; without a bias the criterion is the plain one."""
    from types import SimpleNamespace

    from engine.training.losses import loss_fn

    class B:
        owner_idx = torch.tensor([0, 1])
        pos_idx = torch.tensor([0, 1])
        neg_idx = torch.tensor([[1], [0]])

    vecs = {"o": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "i": torch.tensor([[2.0, 0.0], [0.0, 3.0]])}
    # a bias of +1 on item 1 for every owner: full scores s+ = (2, 4), s- = (1, 0)
    bias = SimpleNamespace(pairs=lambda o, i, slot=None: (i == 1).float())
    ls = torch.nn.functional.logsigmoid
    full = -(ls(torch.tensor(2.0 - 1.0)) + ls(torch.tensor(4.0 - 0.0))) / 2
    dot = -(ls(torch.tensor(2.0)) + ls(torch.tensor(3.0))) / 2
    got = loss_fn("bpr", dot_weight=0.5)(vecs, "o", "i", B, 0.0, bias)
    assert torch.isclose(got, full + 0.5 * dot)
    assert torch.isclose(loss_fn("bpr")(vecs, "o", "i", B, 0.0, bias), full)
    assert torch.isclose(loss_fn("bpr", dot_weight=0.5)(vecs, "o", "i", B, 0.0), dot)


def test_id_lr_sets_the_learning_rate_of_the_id_tables_only(tiny_playlists):
    from engine.training.config import make_model
    from engine.training.optim import make_optimisers
    from engine.training.run_data import RunData

    cfg = TrainConfig(dataset=str(tiny_playlists), embedding_dim=8, lr=0.01, id_lr=1e-4)
    model = make_model(cfg, RunData.load(cfg).graph("fit"))
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    assert tables
    opts = make_optimisers(cfg, model)
    assert [g["lr"] for g in opts.sparse_adam.param_groups] == [1e-4]
    assert {id(p) for p in opts.sparse_adam.param_groups[0]["params"]} == tables
    assert [g["lr"] for g in opts.adam.param_groups] == [0.01]
    dense = make_optimisers(TrainConfig(**{**cfg.to_dict(), "sparse_embeddings": False}), model)
    assert dense.sparse_adam is None
    assert [g["lr"] for g in dense.adam.param_groups] == [0.01, 1e-4]
    assert {id(p) for p in dense.adam.param_groups[1]["params"]} == tables
    assert not tables & {id(p) for p in dense.adam.param_groups[0]["params"]}
    same = make_optimisers(TrainConfig(**{**cfg.to_dict(), "id_lr": 0.0}), model)
    assert [g["lr"] for g in same.sparse_adam.param_groups] == [0.01]


@pytest.mark.parametrize("maximize", [False, True])
def test_row_adam_is_sparse_adam_bit_for_bit(maximize):
    """RowAdam (the loop's sparse optimiser) gives torch's SparseAdam's weights and moments bit
    for bit over several steps of embedding gradients with repeated and untouched rows, and its
    state dict loads into SparseAdam and back."""
    from engine.training.row_adam import RowAdam

    torch.manual_seed(0)
    ref, new = (torch.nn.Embedding(50, 8, sparse=True) for _ in range(2))
    new.weight.data.copy_(ref.weight.data)
    o_ref = torch.optim.SparseAdam(ref.parameters(), lr=0.05, maximize=maximize)
    o_new = RowAdam(new.parameters(), lr=0.05, maximize=maximize)
    gen = torch.Generator().manual_seed(1)
    for step in range(6):
        idx = torch.randint(50, (30,), generator=gen)  # repeats: coalesced sums
        w = torch.randn(30, 8, generator=gen)
        for emb, opt in ((ref, o_ref), (new, o_new)):
            opt.zero_grad()
            (emb(idx) * w).sum().backward()
            opt.step()
        assert torch.equal(ref.weight, new.weight), step
        for key in ("exp_avg", "exp_avg_sq", "step"):
            a, b = o_ref.state[ref.weight][key], o_new.state[new.weight][key]
            assert torch.equal(a, b) if torch.is_tensor(a) else a == b
    o_ref.load_state_dict(o_new.state_dict())
    o_new.load_state_dict(o_ref.state_dict())
    assert o_new.state[new.weight]["step"] == 6


def test_rank0_borrows_its_nodes_threads_to_evaluate():
    """borrowed_threads: a node's ranks' threads, capped by the CPUs the process may use, and
    the count restored afterwards, also after an error."""
    import os

    from engine.training.steps import borrowed_threads

    before = torch.get_num_threads()
    cpus = len(os.sched_getaffinity(0))
    torch.set_num_threads(1)
    try:
        with borrowed_threads(4):
            assert torch.get_num_threads() == min(4, cpus)
        assert torch.get_num_threads() == 1
        with pytest.raises(RuntimeError), borrowed_threads(64):
            assert torch.get_num_threads() == cpus
            raise RuntimeError
        assert torch.get_num_threads() == 1
        with borrowed_threads(1):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)

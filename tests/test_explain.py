"""Recommendations with reasons from a finished run."""
from __future__ import annotations

import shutil

import pytest
import torch

from engine.errors import BadInput
from engine.explain import explain, recommend
from engine.graph.types import CSR, GraphData
from jobs import recommend as recommend_job


def test_recommend_excludes_owned_and_non_candidates():
    row = torch.tensor([3.0, 2.0, 1.0, 0.5])
    items, scores = recommend(row, exclude=torch.tensor([0]),
                              candidates=torch.tensor([True, True, False, True]), k=5)
    assert items.tolist() == [1, 3] and scores.tolist() == [2.0, 0.5]
    assert row.tolist() == [3.0, 2.0, 1.0, 0.5]  # the caller's row is left as it was


def test_explain_ranks_similar_items_and_attention():
    ei = torch.tensor([[0, 1], [2, 2]])  # artists 0 and 1 -> track 2
    g = GraphData(owner_type="playlist", item_type="track",
                  num_nodes={"playlist": 1, "track": 3, "artist": 2},
                  edge_index={("artist", "to", "track"): ei},
                  csr={("artist", "to", "track"): CSR.from_edge_index(ei, 2)})
    vecs = {"playlist": torch.tensor([[1.0, 0.0]]),
            "track": torch.tensor([[1.0, 0.1], [0.0, 1.0], [1.0, 0.0]])}
    attention = {("artist", "to", "track"): (ei, torch.tensor([[0.2, 0.4], [0.8, 0.6]]))}
    why = explain(g, vecs, attention, owner=0, item=2, owner_items=torch.tensor([0, 1]), top=2)
    assert why.score == 1.0
    assert [i for i, _ in why.similar_items] == [0, 1]
    assert [(t, i) for t, i, _ in why.attention] == [("artist", 1), ("artist", 0)]
    assert abs(why.attention[0][2] - 0.7) < 1e-6


def test_recommend_job_on_a_finished_run(tiny_run, tmp_path, capsys):
    out = tmp_path / "run"  # a copy: this test replaces its checkpoint
    shutil.copytree(tiny_run, out, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    capsys.readouterr()
    assert recommend_job.main(["--run", str(out), "--playlist", "0", "--top", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("playlist 0 (")
    assert sum(line.lstrip().startswith(("1.", "2.", "3.")) for line in printed) == 3
    assert any("like:" in line for line in printed)
    first = next(line for line in printed if line.lstrip().startswith("1."))
    assert "= GAT " in first and " + artist " in first

    # a checkpoint that does not fit the run's model is a bad input, not a traceback
    torch.save({"emb.playlist.weight": torch.zeros(1, 1)}, out / "best_model.pt")
    with pytest.raises(BadInput, match="best_model.pt: does not fit"):
        recommend_job.main(["--run", str(out), "--playlist", "0"])

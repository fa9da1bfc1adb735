"""The protocol's two baselines, and one call that reports a model beside them.

Let ``X ∈ {0,1}^{P×N}`` be the training owner×item matrix (``X[p, i] = 1`` iff (p, i) is a
training edge).

* Popularity: ``s(p, j) = deg(j) = Σ_p X[p, j]``, the same for every owner.
* Item-kNN: ``cos(i, j) = X[:, i]·X[:, j] / (‖X[:, i]‖ ‖X[:, j]‖)`` and
  ``s(p, j) = Σ_{i ∈ train(p)} cos(i, j)``. With ``Xn = X D^{-1/2}`` (columns L2-normalised,
  ``D = diag(deg)``; zero columns stay zero) the item–item cosine matrix is ``Xnᵀ Xn``, so for a
  batch of owner rows ``X_b``: ``S_b = X_b (Xnᵀ Xn) = (X_b Xnᵀ) Xn``. The right-hand grouping
  only forms the [b × P] matrix ``X_b Xnᵀ``; the dense N×N cosine matrix never exists.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from engine.eval.evaluate import (
    Progress,
    ScoreFn,
    candidate_mask,
    evaluate_scores,
)
from engine.graph.cooccur import ItemKNN
from engine.graph.split import HeldOut, Split


def unique_edges(train_edges: Tensor, num_items: int) -> tuple[Tensor, Tensor]:
    """Distinct (owner, item) training pairs sorted by owner, then item."""
    edges = train_edges.cpu().long()
    key = torch.unique(edges[0] * num_items + edges[1])
    return key // num_items, key % num_items


def popularity_score_fn(train_edges: Tensor, num_items: int) -> ScoreFn:
    """``s(p, j) = deg(j)``, the number of training edges of item j."""
    deg = torch.bincount(train_edges[1].cpu().long(), minlength=num_items)[:num_items].float()

    def score(owner_ids: Tensor) -> Tensor:
        return deg.expand(owner_ids.numel(), -1)
    return score


def item_knn_score_fn(train_edges: Tensor, num_owners: int, num_items: int) -> ScoreFn:
    """``s(p, j) = Σ_{i ∈ train(p)} cos(i, j)`` computed per batch as ``(X_b Xnᵀ) Xn``
    (:meth:`engine.graph.cooccur.ItemKNN.rows_of`, which PlaylistGAT's item-kNN term uses too)."""
    knn = ItemKNN.of_edges(train_edges, num_owners, num_items)

    def score(owner_ids: Tensor) -> Tensor:
        return knn.rows_of(owner_ids)
    return score


def evaluate_with_baselines(model_score_fn: ScoreFn | None, split: Split,
                            stage_edges: Tensor | None = None, heldout: HeldOut | None = None,
                            ks: Sequence[int] = (10, 50), batch_size: int = 1024,
                            progress: Progress = False, key: str = "test") -> dict:
    """Model (if given), popularity and item-kNN on the same owners, candidates, masking and call.

    ``stage_edges`` defaults to ``split.train`` (all non-test edges), ``heldout`` to
    ``split.test``. Returns ``{key: {...}, "baselines": {"popularity": {...},
    "item_knn": {...}}}``; ``key`` is omitted when ``model_score_fn`` is None.
    """
    edges = split.train if stage_edges is None else stage_edges
    held = split.test if heldout is None else heldout
    cand = candidate_mask(edges, split.num_items)

    def run(fn: ScoreFn, name: str) -> dict:
        return evaluate_scores(fn, edges, held, split.num_items, ks=ks, batch_size=batch_size,
                               candidates=cand, progress=progress, item_artist=split.item_artist,
                               desc=f"{key} {name}")

    out: dict = {}
    if model_score_fn is not None:
        out[key] = run(model_score_fn, "model")
    out["baselines"] = {
        "popularity": run(popularity_score_fn(edges, split.num_items), "popularity"),
        "item_knn": run(item_knn_score_fn(edges, split.num_owners, split.num_items), "item-kNN"),
    }
    return out

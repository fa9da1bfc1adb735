"""Recommendations with their reasons.

For a recommended (owner, item) pair:

* **similar training items** — the owner's own training items whose score vectors are closest
  (cosine) to the recommended item's: "because the playlist has ...";
* **artist affinity** — the part of the score that the model's exact artist term adds (how many
  of the playlist's tracks share the item's artist, :mod:`engine.models.affinity`);
* **attention** — in the last GAT layer that writes the item's vector, the neighbours (playlists,
  artist, genres) with the largest attention weights into the item node, averaged over heads:
  which parts of the graph shaped the item's representation. Weights are a softmax over one edge
  type's neighbours of one node, so they sum to 1 per (node, neighbour type): a track's only
  artist has weight 1.00 (:func:`attention_into` keeps the neighbour count beside them);
* **score parts** (:func:`score_parts`) — the score split into what adds up to it: the GAT dot
  product, the genre path's dot product (models with ``genre_weight > 0``), the exact artist
  term and the exact item-kNN term (:mod:`engine.models.knn_term`).

Everything is computed from one full-graph forward with ``model.keep_attention = True``.
:func:`ranked_rows` gives the masked top-K of many owners in chunks (batch export) through the
evaluation's :class:`~engine.eval.evaluate.Ranker`, so a list is the one evaluation scores, and
:func:`limit_per_group` re-ranks a list for diversity (at most N per artist).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from engine.eval.evaluate import Ranker
from engine.graph.types import GraphData
from engine.models import infer
from engine.models.affinity import ScoreBias


@dataclass
class Explained:
    item: int
    score: float
    bias: float = 0.0  # the score's sparse terms (artist affinity, item-kNN); 0 without them
    similar_items: list[tuple[int, float]] = field(default_factory=list)
    attention: list[tuple[str, int, float]] = field(default_factory=list)  # (type, id, weight)
    # per neighbour type: (top (id, weight) pairs, number of such neighbours)
    drew_on: dict[str, tuple[list[tuple[int, float]], int]] = field(default_factory=dict)


def vectors_with_attention(model: torch.nn.Module, graph: GraphData) -> tuple[dict, dict]:
    """Full-graph score vectors and the attention weights of that forward."""
    model.keep_attention = True
    try:
        vecs = infer(model, graph)
    finally:
        model.keep_attention = False
    return vecs, dict(model.last_attention)


def recommend(scores: Tensor, exclude: Tensor, candidates: Tensor, k: int
              ) -> tuple[Tensor, Tensor]:
    """Top-``k`` candidate items for one owner from its score row ``scores`` [num_items] (e.g.
    ``engine.models.score_fn(model, graph)(owner)[0]``), its own training items excluded."""
    scores = scores.clone()
    scores[~candidates] = float("-inf")
    scores[exclude] = float("-inf")
    top = torch.topk(scores, min(k, int(torch.isfinite(scores).sum())))
    return top.indices, top.values


def explain(graph: GraphData, vecs: dict, attention: dict, owner: int, item: int,
            owner_items: Tensor, top: int = 3, bias: ScoreBias | None = None) -> Explained:
    """Reasons for recommending ``item`` to ``owner`` (global ids; see the module docstring).
    ``bias``: the model's :func:`~engine.models.score_bias` on the full graph, if it has one."""
    o_vecs, i_vecs = vecs[graph.owner_type], vecs[graph.item_type]
    extra = 0.0
    if bias is not None:
        with torch.no_grad():
            extra = float(bias.pairs(torch.tensor([owner]), torch.tensor([item]))[0])
    out = Explained(item=item, score=float(o_vecs[owner] @ i_vecs[item]) + extra, bias=extra)
    if owner_items.numel():
        target = torch.nn.functional.normalize(i_vecs[item], dim=0)
        sims = torch.nn.functional.normalize(i_vecs[owner_items], dim=1) @ target
        best = torch.topk(sims, min(top, sims.numel()))
        out.similar_items = [(int(owner_items[i]), float(s)) for s, i in zip(best.values, best.indices)]
    out.drew_on = attention_into(attention, graph.item_type, item, top)
    out.attention = sorted(((t, i, w) for t, (pairs, _) in out.drew_on.items() for i, w in pairs),
                           key=lambda t: -t[2])[:top]
    return out


def attention_into(attention: dict, node_type: str, node: int, top: int = 3
                   ) -> dict[str, tuple[list[tuple[int, float]], int]]:
    """Per source type, the ``top`` neighbours with the largest attention weight into global
    node ``node`` of ``node_type`` (averaged over heads) and how many such neighbours it has."""
    out: dict[str, tuple[list[tuple[int, float]], int]] = {}
    for (src, _, dst), (edge_index, alpha) in attention.items():  # a loop over edge types
        if dst != node_type:
            continue
        into = edge_index[1] == node
        n = int(into.sum())
        if n:
            weights = alpha[into].mean(-1) if alpha.dim() > 1 else alpha[into]
            best = torch.topk(weights, min(top, n))
            ids = edge_index[0][into][best.indices]
            out[src] = ([(int(i), float(w)) for i, w in zip(ids, best.values)], n)
    return out


def genre_split(model: torch.nn.Module, vecs: dict) -> int | None:
    """Where a score vector splits into its GAT and genre halves (``[sqrt(1-w) c || sqrt(w)
    g]``), for a model with a genre path; ``None`` without one."""
    if getattr(model, "genre", None) is None or getattr(model, "genre_weight", 0.0) <= 0:
        return None
    width = next(iter(vecs.values())).size(1)
    return width // 2


@torch.no_grad()
def score_parts(vecs: dict, bias: ScoreBias | None, owner_type: str, item_type: str, owner: int,
                items: Tensor, split_at: int | None = None, bias_name: str = "artist"
                ) -> dict[str, Tensor]:
    """The scores of ``items`` for ``owner`` (global ids, full-graph ``vecs``) as parts that add
    up to :func:`engine.models.rank_scores`'s score of a candidate outside the owner's row:
    ``"GAT"`` (the dot product, or its first ``split_at`` dimensions), ``"genre"`` (the rest,
    with ``split_at``), ``bias_name`` (the model's attribute affinity, when it has one) and
    ``"kNN"`` (its item-kNN term, when it has one)."""
    o, i = vecs[owner_type][owner], vecs[item_type][items]
    if split_at is None:
        parts = {"GAT": i @ o}
    else:
        parts = {"GAT": i[:, :split_at] @ o[:split_at], "genre": i[:, split_at:] @ o[split_at:]}
    if bias is not None:
        names = {"affinity": bias_name, "knn": "kNN"}
        for key, part in bias.pair_parts(torch.full_like(items, owner), items).items():
            parts[names[key]] = part
    return parts


def ranked_rows(scores: Callable[[Tensor], Tensor], ranker: Ranker, owners: Tensor, k: int,
                chunk: int = 1024) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """``(owners, items [b, k], scores [b, k], valid [b, k])`` per chunk of ``owners``: the
    evaluation's masked top-K (own training items and non-candidates out, seeded tie-break)."""
    for lo in range(0, owners.numel(), chunk):  # chunks of owners: memory is chunk x items
        ids = owners[lo:lo + chunk]
        s = scores(ids)
        top, valid = ranker.topk(s, ids, k)
        val = s.cpu().gather(1, top.clamp(min=0))
        yield ids, top, val.masked_fill(~valid, float("nan")), valid


def limit_per_group(items: Tensor, group: Tensor, limit: int, k: int) -> Tensor:
    """The first ``k`` of the ranked ``items`` keeping at most ``limit`` per group
    (``group[item]``, e.g. its artist), in rank order."""
    g = group[items]
    order = torch.argsort(g, stable=True)  # each group's items in rank order
    sorted_g = g[order]
    start = torch.searchsorted(sorted_g, sorted_g)  # first position of each item's group
    within = torch.empty_like(order)
    within[order] = torch.arange(order.numel()) - start
    return items[within < limit][:k]

"""Recommendations with their reasons.

For a recommended (owner, item) pair:

* **similar training items** — the owner's own training items whose score vectors are closest
  (cosine) to the recommended item's: "because the playlist has ...";
* **artist affinity** — the part of the score that the model's exact artist term adds (how many
  of the playlist's tracks share the item's artist, :mod:`engine.models.affinity`);
* **attention** — in the last GAT layer that writes the item's vector, the neighbours (playlists,
  artist, genres) with the largest attention weights into the item node, averaged over heads:
  which parts of the graph shaped the item's representation.

Everything is computed from one full-graph forward with ``model.keep_attention = True``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from engine.graph.types import GraphData
from engine.models import infer
from engine.models.affinity import ScoreBias


@dataclass
class Explained:
    item: int
    score: float
    bias: float = 0.0  # the score's sparse term (artist affinity); 0 for dot-product models
    similar_items: list[tuple[int, float]] = field(default_factory=list)
    attention: list[tuple[str, int, float]] = field(default_factory=list)  # (type, id, weight)


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
    for (src, _, dst), (edge_index, alpha) in attention.items():
        if dst != graph.item_type:
            continue
        into = edge_index[1] == item
        if into.any():
            weights = alpha[into].mean(-1) if alpha.dim() > 1 else alpha[into]
            for s, w in zip(edge_index[0][into].tolist(), weights.tolist()):
                out.attention.append((src, int(s), float(w)))
    out.attention.sort(key=lambda t: -t[2])
    out.attention = out.attention[:top]
    return out

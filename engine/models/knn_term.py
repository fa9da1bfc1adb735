r"""An exact item-kNN term in the score: :math:`\kappa \log(1 + k(p, t))`, :math:`\kappa` learnt.

:math:`k(p, t)` is an item-kNN score of track :math:`t` for playlist :math:`p`
(:mod:`engine.graph.cooccur`): how often :math:`t` shares a training playlist with each of
:math:`p`'s tracks, normalised by the degrees, with the exponents ``(pop_exp, len_exp)``
(:math:`(1/2, 0)` is the protocol's cosine item-kNN; the models' defaults are
``TrainConfig.knn_pop_exp`` and ``knn_len_exp``, chosen on validation). A :math:`D`-dimensional dot product holds only a
rank-:math:`D` view of that co-occurrence; the sparse term keeps it exact (full rank), the way the
artist affinity (:mod:`.affinity`) keeps the artist count exact, and it grows more accurate as
playlists are added, which a fixed-width dot product does not. The log puts it on the scale of
the other terms whatever a playlist's length; BPR sets :math:`\kappa` from training triples.

Where the values come from:

- on a batch subgraph, from ``(owner, PAIR, item)`` edges whose ``edge_attr`` the sampler computed
  on the whole training graph, one per scored pair, with the pair's own edge left out (a
  training positive is scored as if it were held out: no label leak);
- on a full graph (evaluation), from its owner -> item edges, every item of every owner's row.
"""
from __future__ import annotations

import torch
from torch import Tensor

from engine.graph.cooccur import ItemKNN
from engine.graph.neighbours import SampledSubgraph
from engine.graph.ops import PAIR
from engine.graph.types import Subgraph


class KnnTerm:
    """:math:`k(p, t)` on one (sub)graph, in local indices (module docstring)."""

    def __init__(self, sub: Subgraph, owner_type: str, item_type: str,
                 exponents: tuple[float, float]) -> None:
        """``exponents``: :class:`~engine.graph.cooccur.ItemKNN`'s ``(pop_exp, len_exp)`` for a
        full graph (a batch's values were computed by the sampler's scorer with the same)."""
        self.n_items = sub.num_nodes(item_type)
        pair = sub.edge_index.get((owner_type, PAIR, item_type))
        self.knn = None
        if pair is not None:  # a batch: the sampler's values, one per scored pair
            key = pair[0] * max(self.n_items, 1) + pair[1]
            self.keys, order = key.sort()
            self.values = sub.edge_attr[(owner_type, PAIR, item_type)].reshape(-1)[order]
        elif isinstance(sub, SampledSubgraph):  # its owner rows are sampled: wrong counts
            raise ValueError("a batch without item-kNN values: the model's item-kNN term needs "
                             "BPRBatches(..., pair_knn=ItemKNN.of_graph(graph)) to add them "
                             "(engine.graph.cooccur)")
        else:  # a full graph: every owner's whole row
            self.knn = ItemKNN.of_edges(sub.edge_index[(owner_type, "to", item_type)],
                                        sub.num_nodes(owner_type), self.n_items, *exponents)

    def pairs(self, owner_idx: Tensor, item_idx: Tensor) -> Tensor:
        """:math:`k` of each (owner, item), local indices of one shape."""
        if self.knn is not None:
            return self.knn.pairs(owner_idx.cpu(), item_idx.cpu()).to(item_idx.device)
        key = owner_idx.reshape(-1) * max(self.n_items, 1) + item_idx.reshape(-1)
        at = torch.searchsorted(self.keys, key).clamp(max=max(self.keys.numel() - 1, 0))
        if self.keys.numel() == 0 or not bool((self.keys[at] == key).all()):
            raise ValueError("a scored pair has no item-kNN value in the batch: the sampler "
                             "adds one per (owner, positive or negative) triple only")
        return self.values[at].view(item_idx.shape)

    def rows(self, owner_ids: Tensor, num_items: int) -> Tensor:
        """[b, num_items]: :math:`k` of every item for local ``owner_ids`` (full graph only); a
        fresh tensor, which the caller may change in place."""
        if self.knn is None:
            raise ValueError("full-ranking item-kNN rows need a full graph, not a batch")
        return self.knn.rows_of(owner_ids.cpu())[:, :num_items].to(owner_ids.device)

"""ID embedding rows for only some nodes of a type (``TrainConfig.id_min_edges``).

At the Kaggle file's size most tracks have one training edge or none: 643 k of the 1.18 M
tracks of full mode's 50,000 playlists have fewer than two fit edges (docs/benchmarks.md, round
3). A free row per such track is mostly memory (the row, two Adam moments, its share of every
gradient sync) fitted to one edge. :class:`RowEmbedding` keeps rows only for the nodes
:func:`id_row_map` picks (the items with at least ``min_edges`` edges in the fit graph); the
others read a zero vector, so a track without a row is its features plus its neighbours, as a
track without training edges already was (:mod:`.playlist_gat`).

The map is a buffer of the module (``row``, int32 [num_nodes], -1 = no row), saved in the state
dict beside the weights: a checkpoint brings the map it trained with, and loading it into a model
built from another stage's graph (the test's "train" graph has more edges) takes the saved map and
row count (:meth:`RowEmbedding.match_rows`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.graph.types import GraphData


def id_row_map(graph: GraphData, min_edges: int) -> Tensor:
    """int32 [num_items]: each item's row in the item ID table, in node order, for the items with
    at least ``min_edges`` owner -> item edges in ``graph``; -1 for the others."""
    n = graph.num_nodes[graph.item_type]
    deg = torch.bincount(graph.csr[graph.interaction].indices.long(), minlength=n)
    keep = deg >= min_edges
    return torch.where(keep, torch.cumsum(keep, 0) - 1, -1).to(torch.int32)


class RowEmbedding(nn.Embedding):
    """``nn.Embedding`` of ``rows`` rows for ``num_nodes`` nodes: node ``v`` reads row
    ``row[v]``, or a zero vector (no gradient anywhere) when ``row[v] < 0``. Until
    :meth:`set_rows`, no node has a row.

    Rowless nodes are left out of the lookup rather than pointed at a shared zero row: a sparse
    gradient entry, even a zero one, would make Adam move that row's moments and weights."""

    def __init__(self, num_nodes: int, rows: int, embedding_dim: int, **kwargs):
        super().__init__(rows, embedding_dim, **kwargs)
        self.register_buffer("row", torch.full((num_nodes,), -1, dtype=torch.int32))

    def set_rows(self, row: Tensor) -> None:
        """Use the map ``row`` ([num_nodes], -1: no row); its rows must be this table's."""
        if row.shape != self.row.shape:
            raise ValueError(f"row map for {self.row.numel()} nodes, got {tuple(row.shape)}")
        if int((row >= 0).sum()) != self.num_embeddings:
            raise ValueError(f"row map gives {int((row >= 0).sum())} rows to a table of "
                             f"{self.num_embeddings}")
        if not self.row.is_meta:  # a memory estimate builds on the meta device
            self.row.copy_(row)

    def forward(self, ids: Tensor) -> Tensor:
        r = self.row[ids]
        has = torch.nonzero(r >= 0).flatten()
        vec = F.embedding(r[has].long(), self.weight, sparse=self.sparse)
        return vec.new_zeros(ids.size(0), self.embedding_dim).index_add_(0, has, vec)

    def match_rows(self, state: dict, prefix: str) -> None:
        """Resize the table to the rows of ``state``'s (a saved model's) weight, so that its
        weights and map load over a model built from another graph."""
        saved = state.get(prefix + "weight")
        if saved is not None and saved.size(0) != self.num_embeddings:
            self.num_embeddings = saved.size(0)
            self.weight = nn.Parameter(self.weight.new_empty(saved.shape))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.match_rows(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

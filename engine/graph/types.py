"""Containers shared by the graph builder, the sampler, the models and evaluation.

Node types are plain strings. A graph has an *owner* type (``"playlist"`` or ``"user"``), an *item*
type (``"track"`` or ``"song"``) and, when known, ``"artist"`` and ``"genre"``. Every edge type is
``(src, "to", dst)`` and comes with its reverse ``(dst, "to", src)``.

Score convention: a model maps a (sub)graph to one vector per owner node and per item node, and
the recommendation score of (owner, item) is the dot product of the two vectors, plus the
model's sparse ``score_bias`` term where it has one (``engine.models.score_fn``). BPR,
full-catalogue evaluation and explanation go through those two.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

EdgeType = tuple[str, str, str]


def rev(edge_type: EdgeType) -> EdgeType:
    """The reverse edge type of ``(src, "to", dst)``."""
    src, rel, dst = edge_type
    return (dst, rel, src)


@dataclass
class CSR:
    """Compressed sparse rows of one edge type: neighbours of src ``i`` are
    ``indices[indptr[i]:indptr[i+1]]`` (sorted ascending within a row); ``perm`` maps each CSR
    position back to the column of ``GraphData.edge_index[et]`` it came from."""

    indptr: Tensor  # int64 [num_src + 1]
    indices: Tensor  # int64 [E]
    perm: Tensor  # int64 [E]

    @property
    def num_edges(self) -> int:
        return int(self.indices.numel())

    def degree(self) -> Tensor:
        return self.indptr[1:] - self.indptr[:-1]

    @staticmethod
    def from_edge_index(edge_index: Tensor, num_src: int) -> CSR:
        src, dst = edge_index[0].long(), edge_index[1].long()
        # One stable sort by (src, dst): rows in order, neighbours ascending within a row.
        key = src * (int(dst.max()) + 1 if dst.numel() else 1) + dst
        perm = torch.argsort(key, stable=True)
        counts = torch.bincount(src, minlength=num_src)
        indptr = torch.zeros(num_src + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(counts, 0)
        return CSR(indptr=indptr, indices=dst[perm].contiguous(), perm=perm)


@dataclass
class GraphData:
    """The full message-passing graph of one split (training edges only) plus node features.

    ``num_nodes[t]`` nodes of each type; ``x[t]`` float features (absent for ID-only types such as
    genre); ``edge_index[et]`` int64 [2, E]; ``edge_attr[et]`` float [E, F] where an edge type has
    weights (session listens: log play count and mean completion); ``csr[et]`` for every edge type.
    ``edge_pos[et]`` int64 [E] for the owner <-> item edge types: how far the item sits from the end
    of its owner's row in this stage (0 = the last one, in playlist or first-listen order); the
    artist affinity's recency feature reads it (:mod:`engine.models.affinity`).
    ``genre_source`` says where the genre edges come from: ``"artists"`` (artist -> genre facts),
    ``"titles"`` (playlist title words, spread to the tracks and artists of those playlists) or
    ``""`` (no genre nodes).
    """

    owner_type: str
    item_type: str
    num_nodes: dict[str, int]
    edge_index: dict[EdgeType, Tensor]
    csr: dict[EdgeType, CSR]
    x: dict[str, Tensor] = field(default_factory=dict)
    edge_attr: dict[EdgeType, Tensor] = field(default_factory=dict)
    genre_source: str = ""
    edge_pos: dict[EdgeType, Tensor] = field(default_factory=dict)

    @property
    def node_types(self) -> list[str]:
        return list(self.num_nodes)

    @property
    def edge_types(self) -> list[EdgeType]:
        return list(self.edge_index)

    @property
    def interaction(self) -> EdgeType:
        """The owner -> item edge type (playlist contains track, user listened to song)."""
        return (self.owner_type, "to", self.item_type)

    def metadata(self) -> tuple[list[str], list[EdgeType]]:
        """Same shape as ``HeteroData.metadata()``, for ``to_hetero``-style model construction."""
        return self.node_types, self.edge_types

    def feature_dims(self) -> dict[str, int]:
        return {t: int(v.size(1)) for t, v in self.x.items()}

    def full(self) -> Subgraph:
        """The whole graph as a Subgraph (every node, every edge), for full-graph inference."""
        n_id = {t: torch.arange(n) for t, n in self.num_nodes.items()}
        return Subgraph(
            n_id=n_id,
            edge_index=dict(self.edge_index),
            x=dict(self.x),
            edge_attr=dict(self.edge_attr),
            edge_pos=dict(self.edge_pos),
        )

    def to_hetero_data(self):
        """A PyG ``HeteroData`` view (shares tensors), for users who want PyG's tooling."""
        from torch_geometric.data import HeteroData

        data = HeteroData()
        for t, n in self.num_nodes.items():
            data[t].num_nodes = n
            if t in self.x:
                data[t].x = self.x[t]
        for et, ei in self.edge_index.items():
            data[et].edge_index = ei
            if et in self.edge_attr:
                data[et].edge_attr = self.edge_attr[et]
        return data


@dataclass
class Subgraph:
    """A sampled (or full) subgraph in local indices.

    ``n_id[t]`` are the global ids of the local nodes of type ``t`` (seeds first, in the order they
    were given); ``edge_index[et]`` are local [2, E] indices; ``x[t]`` / ``edge_attr[et]`` are the
    features gathered for those nodes / edges; ``edge_pos[et]`` the edges' positions from the end of
    their owner's row (see :class:`GraphData`).
    """

    n_id: dict[str, Tensor]
    edge_index: dict[EdgeType, Tensor]
    x: dict[str, Tensor] = field(default_factory=dict)
    edge_attr: dict[EdgeType, Tensor] = field(default_factory=dict)
    edge_pos: dict[EdgeType, Tensor] = field(default_factory=dict)

    def num_nodes(self, node_type: str) -> int:
        return int(self.n_id[node_type].numel()) if node_type in self.n_id else 0

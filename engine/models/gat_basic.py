r"""The basic GAT recommender: ID embeddings and one bipartite attention layer.

Owners (users), items (songs) and artists get ID embeddings
:math:`\mathbf{e}_u, \mathbf{e}_s, \mathbf{e}_a \in \mathbb{R}^D`. One GAT layer passes messages
along the interaction edges in both directions and from artists to their songs, with a residual
connection:

.. math::
    \mathbf{u}_u = \mathbf{e}_u + \mathrm{GAT}_{s \to u}\big(\{\mathbf{e}_s : s \in
    \mathcal{N}(u)\}\big), \qquad
    \mathbf{v}_s = \mathbf{e}_s + \mathrm{GAT}_{u \to s}\big(\{\mathbf{e}_u\}\big)
    + \mathrm{GAT}_{a \to s}\big(\{\mathbf{e}_a\}\big),

where each :math:`\mathrm{GAT}` is a bipartite :class:`~torch_geometric.nn.conv.GATConv` with
``heads`` heads of size ``D / heads`` concatenated back to ``D`` and no self loops, and the score is
:math:`\langle \mathbf{u}_u, \mathbf{v}_s \rangle`. The layer is linear (no activation), as in
LightGCN. Node features and edge weights are not used; see :mod:`.playlist_gat` for those.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATConv

from engine.graph.types import EdgeType, Subgraph
from engine.models.layers import Attention, edge_key, node_ids, run_gat


class GATRecommender(nn.Module):
    r"""One-layer bipartite GAT with artist messages; see the module docstring for the math.

    Args:
        num_nodes: nodes per type (global), e.g. ``{"user": 1000, "song": 5000, "artist": 500}``.
        owner_type, item_type: the owner and item node types.
        edge_types: the graph's edge types; it must hold owner->item and item->owner, and uses
            ``(artist_type, "to", item_type)`` when present.
        feature_dims, edge_attr_dims: accepted for a common constructor, not used.
        embedding_dim: :math:`D`; must be divisible by ``heads``.
        heads: attention heads per conv.
        dropout: attention dropout inside each conv and dropout on its output.
        artist_type: name of the artist node type.

    The training hyper-parameters (``embedding_dim``, ``heads``, ``dropout``) have no default:
    theirs is :class:`engine.training.config.TrainConfig`'s, which a model cannot import.
    """

    def __init__(
        self,
        num_nodes: dict[str, int],
        owner_type: str,
        item_type: str,
        edge_types: list[EdgeType],
        feature_dims: dict[str, int] | None = None,
        edge_attr_dims: dict[EdgeType, int] | None = None,
        *,
        embedding_dim: int,
        heads: int,
        dropout: float,
        artist_type: str = "artist",
    ):
        super().__init__()
        if embedding_dim % heads:
            raise ValueError(f"embedding_dim {embedding_dim} is not divisible by heads {heads}")
        self.owner_type, self.item_type = owner_type, item_type
        self.embedding_dim, self.heads, self.dropout = embedding_dim, heads, dropout
        self.keep_attention = False
        self.last_attention: Attention = {}

        edge_types = [tuple(et) for et in edge_types]
        o2i, i2o = (owner_type, "to", item_type), (item_type, "to", owner_type)
        a2i = (artist_type, "to", item_type)
        missing = [et for et in (o2i, i2o) if et not in edge_types]
        if missing:
            raise ValueError(f"GATRecommender needs edge types {missing}")
        self.edge_types: list[EdgeType] = [o2i, i2o] + ([a2i] if a2i in edge_types else [])
        types = [owner_type, item_type] + ([artist_type] if a2i in edge_types else [])

        self.emb = nn.ModuleDict({t: nn.Embedding(num_nodes[t], embedding_dim) for t in types})
        self.convs = nn.ModuleDict({
            edge_key(et): GATConv((embedding_dim, embedding_dim), embedding_dim // heads,
                                  heads=heads, concat=True, dropout=dropout,
                                  add_self_loops=False)
            for et in self.edge_types
        })
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for emb in self.emb.values():
            nn.init.normal_(emb.weight, std=0.1)
        for conv in self.convs.values():
            conv.reset_parameters()

    def forward(self, sub: Subgraph) -> dict[str, Tensor]:
        """Score vectors ``{owner_type: [n_owner, D], item_type: [n_item, D]}`` of all local owner
        and item nodes of ``sub``."""
        device = next(iter(self.emb.values())).weight.device
        h = {t: emb(node_ids(sub, t, device)) for t, emb in self.emb.items()}
        out = dict(h)  # residual
        attention: Attention | None = {} if self.keep_attention else None
        for et in self.edge_types:
            src, _, dst = et
            y = run_gat(self.convs[edge_key(et)], et, h[src], h[dst], sub, attention)
            out[dst] = out[dst] + F.dropout(y, self.dropout, self.training)
        if attention is not None:
            self.last_attention = attention
        return {self.owner_type: out[self.owner_type], self.item_type: out[self.item_type]}

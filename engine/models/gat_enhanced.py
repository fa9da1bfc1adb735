r"""The genre-aware GAT recommender: a collaborative hetero-GAT stack plus a genre-affinity path.

**Collaborative part.** Owners, items and artists get ID embeddings
:math:`\mathbf{h}^{(0)}_v`. ``num_layers`` heterogeneous GAT layers
(:class:`~.layers.HeteroGAT`: one :class:`~torch_geometric.nn.conv.GATConv` per edge type, summed
per destination type, edge features via ``edge_dim``) run over the edge types that do not touch
genres:

.. math::
    \mathbf{h}^{(l+1)}_v = \mathbf{h}^{(l)}_v + \sigma_l\Big(\sum_{r = (\cdot, \cdot, t(v))}
    \mathrm{GAT}_r(\mathbf{h}^{(l)})_v\Big),

:math:`\sigma_l = \mathrm{ELU}` between layers and the identity after the last, and
:math:`\mathbf{c}_v = \mathbf{h}^{(L)}_v` for owners and items. The last layer only has the edge
types into owners and items, each earlier layer only those whose destinations a later layer reads
(:func:`~.layers.plan_layers`), so every parameter reaches the score (DDP needs no
``find_unused_parameters``).

**Genre part.** A separate genre embedding table is attention-pooled into genre-affinity vectors
:math:`\mathbf{g}_i` for items (over item-genre edges, or genre -> artist -> item) and
:math:`\mathbf{g}_o` for owners (over owner-genre edges, or else over the genre vectors of the
owner's items); see :class:`~.layers.GenreAffinity`.

**Score.** With ``genre_weight`` :math:`w \in [0, 1]` the model returns
:math:`[\sqrt{1-w}\,\mathbf{c}_v \,\|\, \sqrt{w}\,\mathbf{g}_v]` for owners and items, so that

.. math::
    \mathrm{score}(o, i) = (1 - w)\,\langle \mathbf{c}_o, \mathbf{c}_i \rangle
    + w\,\langle \mathbf{g}_o, \mathbf{g}_i \rangle .

With ``knn_init`` :math:`> 0` the score adds :math:`\kappa \log(1 + k(o, i))`, an exact
item-kNN score (exponents ``knn_pop_exp``, ``knn_len_exp``) with a learnt weight
(:mod:`.knn_term`).

:math:`w = 0` is the purely collaborative model (the genre path is still computed, times zero,
so its parameters keep a (zero) gradient under DDP); :math:`w = 1` scores by genre affinity only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.graph.cooccur import check_exponents
from engine.graph.types import EdgeType, Subgraph
from engine.models.affinity import ScoreBias
from engine.models.knn_term import KnnTerm
from engine.models.layers import (
    Attention,
    GenreAffinity,
    HeteroGAT,
    input_types,
    node_ids,
    plan_layers,
)


class EnhancedGATRecommender(nn.Module):
    r"""Genre-aware hetero GAT; see the module docstring for the math.

    Args:
        num_nodes: nodes per type (global).
        owner_type, item_type: the owner and item node types.
        edge_types: the graph's edge types (genre edge types feed the genre path only).
        feature_dims: accepted for a common constructor, not used (ID embeddings only).
        edge_attr_dims: edge feature width per edge type; those convs use ``edge_dim``.
        embedding_dim: :math:`D`; the output vectors have :math:`2D` entries (:math:`D` without
            a genre route).
        heads: attention heads per conv (averaged, ``concat=False``).
        num_layers: collaborative GAT layers :math:`L \ge 1`.
        dropout: attention dropout and dropout on each layer's messages.
        genre_weight: :math:`w \in [0, 1]`; :math:`w > 0` needs a genre route.
        knn_init: start value of :math:`\kappa`, the weight of the exact item-kNN term
            (:mod:`.knn_term`); 0 means no such term.
        knn_pop_exp, knn_len_exp: the term's exponents :math:`(\beta, \lambda)`
            (:mod:`engine.graph.cooccur`).
        genre_type, artist_type: names of those node types.

    The training hyper-parameters (``embedding_dim`` to ``knn_len_exp``) have no default: theirs
    is :class:`engine.training.config.TrainConfig`'s, which a model cannot import.

    With ``keep_attention = True`` a forward stores detached ``(edge_index, alpha)`` per edge type
    in ``last_attention`` (collaborative layers; for an edge type in both layers, the layer nearest
    the output) and ``last_genre_attention`` (genre path).
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
        num_layers: int,
        dropout: float,
        genre_weight: float,
        knn_init: float,
        knn_pop_exp: float,
        knn_len_exp: float,
        genre_type: str = "genre",
        artist_type: str = "artist",
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= genre_weight <= 1.0:
            raise ValueError(f"genre_weight must be in [0, 1], got {genre_weight}")
        if knn_init < 0:
            raise ValueError(f"knn_init must be >= 0 (0: no item-kNN term), got {knn_init}")
        check_exponents(knn_pop_exp, knn_len_exp)
        edge_types = [tuple(et) for et in edge_types]
        edge_attr_dims = dict(edge_attr_dims or {})
        self.owner_type, self.item_type, self.genre_type = owner_type, item_type, genre_type
        self.genre_weight, self.dropout = float(genre_weight), dropout
        self.keep_attention = False
        self.last_attention: Attention = {}
        self.last_genre_attention: Attention = {}

        collab = [et for et in edge_types if genre_type not in (et[0], et[2])]
        self.plan = plan_layers(collab, {owner_type, item_type}, num_layers)
        if not self.plan[-1]:
            raise ValueError(f"no edge types into {owner_type} or {item_type}: {edge_types}")
        self.layers = nn.ModuleList(
            HeteroGAT(ets, embedding_dim, heads, dropout, edge_attr_dims) for ets in self.plan)
        types = input_types(self.plan, [owner_type, item_type])

        self.genre: GenreAffinity | None = None
        if GenreAffinity.routes(owner_type, item_type, edge_types, genre_type, artist_type):
            self.genre = GenreAffinity(owner_type, item_type, edge_types, embedding_dim, heads,
                                       dropout, edge_attr_dims, genre_type, artist_type)
            types += [t for t in self.genre.query_types() if t not in types]
        elif genre_weight > 0:
            raise ValueError(f"genre_weight {genre_weight} > 0 but no genre route in {edge_types}")
        self.emb = nn.ModuleDict({t: nn.Embedding(num_nodes[t], embedding_dim) for t in types})
        self.genre_emb = (nn.Embedding(num_nodes[genre_type], embedding_dim)
                          if self.genre is not None else None)
        self.knn_init = float(knn_init)
        self.knn_weight = nn.Parameter(torch.empty(())) if knn_init > 0 else None
        self.knn_exponents = (float(knn_pop_exp), float(knn_len_exp))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.knn_weight is not None:
            nn.init.constant_(self.knn_weight, self.knn_init)
        for emb in [*self.emb.values(), self.genre_emb]:
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.1)
        for module in [*self.layers, self.genre]:
            if module is not None:
                for conv in module.convs.values():
                    conv.reset_parameters()

    def components(self, sub: Subgraph) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
        """``(collab, genre)`` vectors ``{owner_type: ..., item_type: ...}`` before mixing
        (``genre`` is ``None`` without a genre route)."""
        device = next(iter(self.emb.values())).weight.device
        attention: Attention | None = {} if self.keep_attention else None
        h0 = {t: emb(node_ids(sub, t, device)) for t, emb in self.emb.items()}
        h = h0
        for depth, layer in enumerate(self.layers):
            msg = layer(h, sub, attention)
            last = depth == len(self.layers) - 1
            h = {t: v + F.dropout(msg[t] if last else F.elu(msg[t]), self.dropout, self.training)
                 if t in msg else v for t, v in h.items()}
        collab = {self.owner_type: h[self.owner_type], self.item_type: h[self.item_type]}
        if attention is not None:
            self.last_attention = attention
        if self.genre is None or self.genre_emb is None:
            return collab, None
        g_att: Attention | None = {} if self.keep_attention else None
        z = self.genre_emb(node_ids(sub, self.genre_type, device))
        g_owner, g_item = self.genre(z, h0, sub, g_att)
        if g_att is not None:
            self.last_genre_attention = g_att
        return collab, {self.owner_type: g_owner, self.item_type: g_item}

    def score_bias(self, sub: Subgraph) -> ScoreBias | None:
        r""":math:`\kappa \log(1 + k)` on ``sub`` (:mod:`.knn_term`), or ``None`` without it."""
        if self.knn_weight is None:
            return None
        term = KnnTerm(sub, self.owner_type, self.item_type, self.knn_exponents)
        return ScoreBias([], (self.knn_weight, term))

    def forward(self, sub: Subgraph) -> dict[str, Tensor]:
        """Score vectors ``[sqrt(1-w) c || sqrt(w) g]`` of all local owner and item nodes."""
        collab, genre = self.components(sub)
        if genre is None:
            return collab
        a, b = math.sqrt(1.0 - self.genre_weight), math.sqrt(self.genre_weight)
        return {t: torch.cat([a * collab[t], b * genre[t]], dim=-1) for t in collab}

r"""Heterogeneous GAT over playlists, tracks, artists and genres, with content features.

**Input.** Every node type :math:`t` the layers read gets

.. math::
    \mathbf{h}^{(0)}_v = \mathbf{E}_t[\mathrm{id}(v)] + \mathbf{W}_t \mathbf{x}_v ,

an ID embedding (types in ``id_embeddings``) plus a linear projection of its features (types in
``feature_types``, default the item type only); a type needs at least one of the two. By default
every type has an ID embedding *except the item type when it has features*: a track is its
features (standardised log-degree, audio features when joined) plus what its artist and playlists
send it. That makes the model inductive (a new track is represented by its features and
neighbours) and it generalises better: most tracks of a playlist collection are seen once or
twice, and a free vector per track overfits those few edges, while the artist and playlist vectors
are shared by many tracks (measured in docs/results.md, "Where PlaylistGAT's defaults come from").
Feature projections start at the scale of the ID embeddings (``init_std``) so neither swamps the
other. A training run may instead give tracks ID embeddings too and start the playlist and track
tables from a truncated SVD of the training matrix (``id_init = "svd"``, :mod:`.init`): then the
track table starts from co-occurrence rather than noise, and a track without training edges starts
at zero and is still its features plus its neighbours; with ``id_rows`` (:mod:`.id_rows`) so is a
track below ``id_min_edges`` fit edges, which has no row at all.

**Layers.** ``num_layers`` heterogeneous GAT layers (:class:`~.layers.HeteroGAT`: one
``GATConv(heads, concat=False, add_self_loops=False)`` per edge type, summed per destination):

.. math::
    \mathbf{h}^{(l+1)}_v = \mathrm{Norm}_{t(v)}\Big(\mathbf{h}^{(l)}_v
    + \mathrm{Dropout}\big(\sigma_l(\mathbf{m}^{(l)}_v)\big)\Big),

with, by default, no norm and no activation (the layers are linear, as in LightGCN; the
comparison with LayerNorm + ELU is in docs/results.md); ``layer_norm=True`` makes the norm a
per-type LayerNorm and ``activation=True`` makes :math:`\sigma_l` ELU except in the last layer.
The last layer only has edge
types into the owner and item types, each earlier layer only those whose destination a later layer
reads (:func:`~.layers.plan_layers`), so every parameter reaches the score. A track without
playlist edges is still reached through track <- artist and track <- genre edges.

**Output.** LightGCN-style layer combination of the owner and item states,
:math:`\mathbf{c}_v = \frac{1}{L+1}\sum_{l=0}^{L} \mathbf{h}^{(l)}_v`. With ``genre_weight``
:math:`w > 0` and a genre route, genre-affinity vectors :math:`\mathbf{g}_v`
(:class:`~.layers.GenreAffinity`, pooling the genres' input states
:math:`\mathbf{h}^{(0)}`) are appended as :math:`[\sqrt{1-w}\,\mathbf{c}_v \,\|\,
\sqrt{w}\,\mathbf{g}_v]`, so the score is :math:`(1-w)\langle\mathbf{c}_o, \mathbf{c}_i\rangle +
w\langle\mathbf{g}_o, \mathbf{g}_i\rangle`. The default :math:`w = 0` builds no genre path at all
(genres still take part in the layers), and the vectors have :math:`D` entries.

**Start.** With ``message_init = "zeros"`` every conv's message projection :math:`\mathbf{W}_r`
(``lin_src``) and bias start at zero, so at step 0 the messages are zero, attention is uniform,
and :math:`\mathbf{c}_v = \mathbf{h}^{(0)}_v`: the score is that of the input tables
(with the SVD start, PureSVD's). The messages are linear in :math:`\mathbf{W}_r`, so the convs into
the owner and item types get gradients from the first step (their messages are in the layer
mean), and an earlier layer's convs into other types from the second, once the layer that reads
them has moved off zero: the zero-initialised residual branch of Fixup / ReZero. PyG's Glorot start instead adds random projections of the
neighbours to every state, which scrambles a spectral start before training begins
(docs/results.md measures both).

**Affinity.** The full score adds an exact sparse term (:mod:`.affinity`, :meth:`score_bias`):

.. math::
    s(p, t) = \langle \mathbf{c}_p, \mathbf{c}_t \rangle
    + \sum_{T} \mathrm{aff}_T(p, t; \rho),

for each node type :math:`T` in ``affinity_types`` (default: the artists): learnt weights on how
many of the playlist's tracks share the track's artist, and how many of its tracks just before the
scored slot :math:`\rho` do (scale ``affinity_tau``; 0 drops that count). A playlist's vector
is an average of its tracks' states, so in :math:`D` dimensions the share of one of thousands of
artists reaches the dot product only blurred by the others; the sparse term keeps it exact.
With ``knn_init`` :math:`> 0` the score also adds :math:`\kappa \log(1 + k(p, t))`, an exact
item-kNN score (exponents ``knn_pop_exp``, ``knn_len_exp``) with a learnt weight
(:mod:`.knn_term`): the co-occurrence a rank-:math:`D` dot product can only approximate.
Consumers score with :func:`engine.models.score_fn` (full ranking) or
:func:`engine.models.score` with ``bias`` (pairs).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.graph.cooccur import check_exponents
from engine.graph.types import EdgeType, Subgraph
from engine.models.affinity import ScoreBias, link_affinity
from engine.models.id_rows import RowEmbedding
from engine.models.knn_term import KnnTerm
from engine.models.layers import (
    Attention,
    GenreAffinity,
    HeteroGAT,
    edge_key,
    input_types,
    layer_trim,
    local_edges,
    node_ids,
    plan_layers,
    plus,
    run_gat,
)


@dataclass(frozen=True, kw_only=True)
class PlaylistGATOptions:
    r"""The hyper-parameters of :class:`PlaylistGAT` (everything but the graph's metadata).

    A saved run's ``model_options`` is a flat dict of these fields
    (``PlaylistGATOptions(**model_options)``); :func:`engine.models.build_model` builds it from
    keyword arguments. Checks that need no graph run here; those that do, in the model.

    The first six fields are training hyper-parameters without a default here: their one default
    is :class:`engine.training.config.TrainConfig`'s (a model cannot import it), so leaving one out
    is an error. The others are this model's own, set through ``TrainConfig.model_options``.
    """

    embedding_dim: int
    """:math:`D`, the width of every node state."""
    heads: int
    """attention heads per conv (averaged)."""
    num_layers: int
    r""":math:`L \ge 1` message-passing layers."""
    dropout: float
    """attention dropout and dropout on each layer's messages."""
    genre_weight: float
    r""":math:`w \in [0, 1]`, the genre-affinity share of the score (module docstring)."""
    knn_init: float
    r"""start value of :math:`\kappa`, the weight of the exact item-kNN term (:mod:`.knn_term`);
    0 means no such term."""
    knn_pop_exp: float
    r"""the term's candidate-popularity exponent :math:`\beta` (:mod:`engine.graph.cooccur`)."""
    knn_len_exp: float
    r"""the term's playlist-length exponent :math:`\lambda` (:mod:`engine.graph.cooccur`)."""
    id_embeddings: Iterable[str] | None = None
    """node types with ID embeddings; ``None``: every type read except a featured item type."""
    id_rows: dict[str, int] | tuple[tuple[str, int], ...] | None = None
    """rows of the ID table of types where only some nodes have one (:mod:`.id_rows`)."""
    genre_type: str = "genre"
    """name of the genre node type."""
    artist_type: str = "artist"
    """name of the artist node type."""
    layer_norm: bool = False
    """a per-type LayerNorm after each layer (default: none, linear layers as in LightGCN)."""
    activation: bool = False
    """ELU on every layer's messages but the last's."""
    residual: bool = True
    """each layer adds its messages to the previous state."""
    init_std: float = 0.1
    """std of the ID embeddings; feature projections start at the same scale."""
    degree_norm: bool = False
    r"""LightGCN's symmetric :math:`1/\sqrt{d_u d_v}` around each conv."""
    feature_types: Iterable[str] | None = None
    """node types whose features ``x`` are read; ``None``: the item type only."""
    skip_types: Iterable[str] = ()
    """node types whose edges the layers ignore (the genre path still reads genre edges)."""
    affinity_types: Iterable[str] | None = None
    """types whose exact affinity term joins the score; ``None``: artists when linked."""
    affinity_init: float = 2.0
    """start value of the affinity weights (beta and gamma)."""
    affinity_tau: float = 2.0
    """distance scale of the recency count; 0 means no recency count."""
    message_init: str = "glorot"
    """``"glorot"`` (PyG's start) or ``"zeros"`` (each layer starts as the identity)."""

    def __post_init__(self) -> None:
        for name in ("id_embeddings", "feature_types", "skip_types", "affinity_types"):
            value = getattr(self, name)
            if value is not None:  # one pass over a generator; hashable, order kept
                object.__setattr__(self, name, tuple(value))
        if self.id_rows is not None:  # hashable too: (type, rows) pairs
            object.__setattr__(self, "id_rows", tuple(sorted(dict(self.id_rows).items())))
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if not 0.0 <= self.genre_weight <= 1.0:
            raise ValueError(f"genre_weight must be in [0, 1], got {self.genre_weight}")
        if self.message_init not in ("glorot", "zeros"):
            raise ValueError(
                f"message_init must be 'glorot' or 'zeros', got {self.message_init!r}")
        if self.affinity_tau < 0:
            raise ValueError(
                f"affinity_tau must be >= 0 (0: no recency count), got {self.affinity_tau}")
        if self.knn_init < 0:
            raise ValueError(f"knn_init must be >= 0 (0: no item-kNN term), got {self.knn_init}")
        check_exponents(self.knn_pop_exp, self.knn_len_exp)


class PlaylistGAT(nn.Module):
    r"""Feature-aware heterogeneous GAT; see the module docstring for the math.

    Args:
        num_nodes: nodes per type (global).
        owner_type, item_type: the owner and item node types.
        edge_types: the graph's edge types.
        feature_dims: feature width per node type (types with ``x``); may be empty.
        edge_attr_dims: edge feature width per edge type; those convs use ``edge_dim``.
        options: the hyper-parameters (:class:`PlaylistGATOptions`).

    With ``keep_attention = True`` a forward stores detached ``(edge_index, alpha)`` per edge type
    in ``last_attention`` (for an edge type in several layers, the layer nearest the output) and
    ``last_genre_attention`` (genre path, when built).
    """

    Options = PlaylistGATOptions  # what build_model builds from a flat keyword dict

    def __init__(
        self,
        num_nodes: dict[str, int],
        owner_type: str,
        item_type: str,
        edge_types: list[EdgeType],
        feature_dims: dict[str, int] | None = None,
        edge_attr_dims: dict[EdgeType, int] | None = None,
        *,
        options: PlaylistGATOptions,
    ):
        super().__init__()
        o = self.options = options
        embedding_dim, heads, num_layers = o.embedding_dim, o.heads, o.num_layers
        dropout, genre_weight = o.dropout, o.genre_weight
        genre_type, artist_type = o.genre_type, o.artist_type
        all_edge_types = [tuple(et) for et in edge_types]
        skip = set(o.skip_types)  # left out of the layers; the genre path still reads genres
        edge_types = [et for et in all_edge_types if not skip & {et[0], et[2]}]
        feature_dims = dict(feature_dims or {})
        feature_types = [item_type] if o.feature_types is None else o.feature_types
        feature_dims = {t: d for t, d in feature_dims.items() if t in set(feature_types)}
        edge_attr_dims = dict(edge_attr_dims or {})
        self.owner_type, self.item_type, self.genre_type = owner_type, item_type, genre_type
        self.genre_weight, self.dropout = float(genre_weight), dropout
        self.embedding_dim = embedding_dim
        self.activation, self.residual, self.init_std = o.activation, o.residual, \
            float(o.init_std)
        self.degree_norm = o.degree_norm
        self.keep_attention = False
        self.last_attention: Attention = {}
        self.last_genre_attention: Attention = {}

        self.plan = plan_layers(edge_types, {owner_type, item_type}, num_layers)
        if not self.plan[-1]:
            raise ValueError(f"no edge types into {owner_type} or {item_type}: {edge_types}")
        self.layers = nn.ModuleList(
            HeteroGAT(ets, embedding_dim, heads, dropout, edge_attr_dims) for ets in self.plan)
        self.norms = nn.ModuleList(
            nn.ModuleDict({dst: nn.LayerNorm(embedding_dim) if o.layer_norm else nn.Identity()
                           for dst in dict.fromkeys(
                et[2] for et in ets)})
            for ets in self.plan)
        types = input_types(self.plan, [owner_type, item_type])

        self.genre: GenreAffinity | None = None
        if genre_weight > 0:
            self.genre = GenreAffinity(owner_type, item_type, all_edge_types, embedding_dim, heads,
                                       dropout, edge_attr_dims, genre_type, artist_type)
            types += [t for t in [genre_type, *self.genre.query_types()] if t not in types]

        id_embeddings = o.id_embeddings
        if id_embeddings is None:
            id_embeddings = [t for t in types if t != item_type or t not in feature_dims]
        with_id = set(id_embeddings)
        bare = [t for t in types if t not in with_id and t not in feature_dims]
        if bare:
            raise ValueError(f"node types {bare} have neither ID embeddings nor features")
        rows = dict(o.id_rows or {})  # the others: a row per node
        self.emb = nn.ModuleDict(
            {t: RowEmbedding(num_nodes[t], rows[t], embedding_dim) if t in rows
             else nn.Embedding(num_nodes[t], embedding_dim) for t in types if t in with_id})
        self.proj = nn.ModuleDict(
            {t: nn.Linear(feature_dims[t], embedding_dim) for t in types if t in feature_dims})
        self.types = types

        affinity_types = o.affinity_types
        if affinity_types is None:  # default: the artist term, where the graph links artists
            affinity_types = [artist_type] if (artist_type, "to", item_type) in all_edge_types \
                else []
        self.affinity_types = list(affinity_types)
        missing = [t for t in self.affinity_types if (t, "to", item_type) not in all_edge_types]
        if missing:
            raise ValueError(f"affinity_types {missing} have no edges into {item_type}")
        self.message_init = o.message_init
        self.affinity_init, self.affinity_tau = float(o.affinity_init), float(o.affinity_tau)
        # per type: (beta, gamma) for the plain and the recency count; no gamma with tau = 0
        width = 2 if o.affinity_tau > 0 else 1
        self.affinity_weight = (nn.Parameter(torch.empty(len(self.affinity_types), width))
                                if self.affinity_types else None)
        self.knn_init = float(o.knn_init)
        self.knn_weight = nn.Parameter(torch.empty(())) if o.knn_init > 0 else None
        self.knn_exponents = (float(o.knn_pop_exp), float(o.knn_len_exp))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.affinity_weight is not None:
            nn.init.constant_(self.affinity_weight, self.affinity_init)
        if self.knn_weight is not None:
            nn.init.constant_(self.knn_weight, self.knn_init)
        for emb in self.emb.values():
            nn.init.normal_(emb.weight, std=self.init_std)
        for proj in self.proj.values():
            # same scale as an ID embedding for unit-variance features, so neither swamps the other
            nn.init.normal_(proj.weight, std=self.init_std / math.sqrt(proj.in_features))
            nn.init.zeros_(proj.bias)
        for module in self.norms.modules():
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        for module in [*self.layers, self.genre]:
            if module is not None:
                for conv in module.convs.values():
                    conv.reset_parameters()
        if self.message_init == "zeros":  # every layer starts as the identity (module docstring)
            for layer in self.layers:
                for conv in layer.convs.values():
                    nn.init.zeros_(conv.lin_src.weight)
                    nn.init.zeros_(conv.bias)

    def encode(self, sub: Subgraph) -> dict[str, Tensor]:
        r"""Input states :math:`\mathbf{h}^{(0)}` of the local nodes of every type it reads."""
        device = next(self.parameters()).device
        h: dict[str, Tensor] = {}
        for t in self.types:
            n = sub.num_nodes(t)
            v = torch.zeros(n, self.embedding_dim, device=device)
            if t in self.emb:
                v = plus(v, self.emb[t](node_ids(sub, t, device)))
            if t in self.proj:
                x = sub.x.get(t)
                width = self.proj[t].in_features
                if x is None and n:
                    raise ValueError(f"node type {t!r} needs features x of width {width}")
                x = torch.zeros(0, width) if x is None else x  # keeps proj in the autograd graph
                v = plus(v, self.proj[t](x.to(device=device, dtype=torch.float)))
            h[t] = v
        return h

    def _propagate(self, layer: HeteroGAT, h: dict[str, Tensor], sub: Subgraph,
                   attention: Attention | None, rows: dict[str, int] | None = None
                   ) -> dict[str, Tensor]:
        r"""One hetero GAT layer; with ``degree_norm`` each conv reads
        :math:`d_u^{-1/2}\mathbf{h}_u` and its output is scaled by :math:`d_v^{1/2}` (degrees
        within the edge type in ``sub``), so uniform attention gives LightGCN's symmetric
        :math:`\sum_u \mathbf{h}_u / \sqrt{d_u d_v}` instead of a plain mean: popular neighbours
        and well-connected destinations keep their weight, and a degree-1 item no longer copies
        its single playlist's vector at full norm."""
        if not self.degree_norm:
            return layer(h, sub, attention, rows)  # rows: the layer's trim (never with degree_norm)
        out: dict[str, Tensor] = {}
        for et in layer.edge_types:
            src, _, dst = et
            x_src, x_dst = h[src], h[dst]
            ei = local_edges(sub, et, x_src.device)
            d_src = torch.bincount(ei[0], minlength=x_src.size(0)).clamp(min=1).to(x_src.dtype)
            d_dst = torch.bincount(ei[1], minlength=x_dst.size(0)).clamp(min=1).to(x_src.dtype)
            y = run_gat(layer.convs[edge_key(et)], et, x_src * d_src.rsqrt().unsqueeze(1), x_dst,
                        sub, attention) * d_dst.sqrt().unsqueeze(1)
            out[dst] = out[dst] + y if dst in out else y
        return out

    def components(self, sub: Subgraph) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
        """``(collab, genre)`` vectors ``{owner_type: ..., item_type: ...}`` before mixing."""
        attention: Attention | None = {} if self.keep_attention else None
        h0 = self.encode(sub)
        h = h0
        keep = (self.owner_type, self.item_type)
        # Without autograd (full-graph inference: 1.2 M tracks at the Kaggle file's size) the
        # layer mean is a running sum, so the layers' states are not all held at once; the sum
        # in layer order divided by L + 1 is bit for bit torch.stack(...).mean(0).
        running = not torch.is_grad_enabled()
        states = {t: [h0[t].clone() if running else h0[t]] for t in keep}
        genre_in = None if self.genre is None else (h0[self.genre_type], h0)
        del h0
        # A sampled subgraph: each layer computes only the nodes the next one reads (exact for
        # the seeds, layers.layer_trim); the degree-normalised and attention-recording paths
        # read whole edge types and are left untrimmed.
        trim = None if self.degree_norm or self.keep_attention else layer_trim(
            sub, len(self.layers))
        if trim:  # nodes farther than L hops from the seeds are never read
            h = {t: v[:sum(sub.num_sampled_nodes[t][:len(self.layers) + 1])]
                 for t, v in h.items()}
        for depth, (layer, norms) in enumerate(zip(self.layers, self.norms)):
            rows, view = trim[depth] if trim else (None, sub)
            msg = self._propagate(layer, h, view, attention, rows)
            last = depth == len(self.layers) - 1
            act = (lambda m: m) if last or not self.activation else F.elu
            h = {t: v[:rows[t]] if rows else v for t, v in h.items()}
            # in place without autograd (layers.plus) unless the genre path still reads h0
            add = plus if genre_in is None or depth else torch.add
            h = {t: norms[t](add(v, F.dropout(act(msg[t]), self.dropout, self.training))
                             if self.residual else F.dropout(act(msg[t]), self.dropout,
                                                             self.training))
                 if t in msg else v for t, v in h.items()}
            del msg
            for t in keep:
                if running:
                    states[t][0] = states[t][0][:h[t].size(0)].add_(h[t])
                else:
                    states[t].append(h[t])
        if attention is not None:
            self.last_attention = attention
        n = {t: states[t][-1].size(0) for t in keep}  # the seeds, when trimmed
        collab = {t: (states[t][0].div_(len(self.layers) + 1) if running
                      else torch.stack([s[:n[t]] for s in states[t]]).mean(0)) for t in keep}
        if genre_in is None:
            return collab, None
        g_att: Attention | None = {} if self.keep_attention else None
        g_owner, g_item = self.genre(genre_in[0], genre_in[1], sub, g_att)
        if g_att is not None:
            self.last_genre_attention = g_att
        return collab, {self.owner_type: g_owner[:n[self.owner_type]],
                        self.item_type: g_item[:n[self.item_type]]}

    def score_bias(self, sub: Subgraph) -> ScoreBias | None:
        r""":math:`\sum_T \mathrm{aff}_T` (:mod:`.affinity`) and :math:`\kappa \log(1 + k)`
        (:mod:`.knn_term`) on ``sub``, or ``None`` without either term."""
        if self.affinity_weight is None and self.knn_weight is None:
            return None
        w, terms = self.affinity_weight, []
        for k, t in enumerate(self.affinity_types):
            if w.size(1) == 2:
                aff = link_affinity(sub, self.owner_type, self.item_type, t, self.affinity_tau)
                terms.append((w[k, 0], w[k, 1], aff))
            else:  # no recency count: gamma = 0 (a constant, not a parameter)
                aff = link_affinity(sub, self.owner_type, self.item_type, t)
                terms.append((w[k, 0], w.new_zeros(()), aff))
        knn = None if self.knn_weight is None else (
            self.knn_weight, KnnTerm(sub, self.owner_type, self.item_type, self.knn_exponents))
        return ScoreBias(terms, knn)

    def forward(self, sub: Subgraph) -> dict[str, Tensor]:
        """Score vectors of all local owner and item nodes of ``sub`` (``D`` entries, or ``2D``
        with a genre path)."""
        collab, genre = self.components(sub)
        if genre is None:
            return collab
        a, b = math.sqrt(1.0 - self.genre_weight), math.sqrt(self.genre_weight)
        return {t: torch.cat([a * collab[t], b * genre[t]], dim=-1) for t in collab}

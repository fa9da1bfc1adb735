r"""GAT building blocks shared by the recommenders (:mod:`.gat_basic`, :mod:`.gat_enhanced`,
:mod:`.playlist_gat`).

* :func:`run_gat` runs one bipartite :class:`~torch_geometric.nn.conv.GATConv` over the local
  edges of one edge type of a :class:`~engine.graph.types.Subgraph` (with edge features when the
  conv has ``edge_dim``) and can record its attention weights;
* :class:`HeteroGAT` is one heterogeneous layer: a conv per edge type, summed per destination;
* :func:`plan_layers` chooses the edge types of each layer so that every conv reaches the score;
* :class:`GenreAffinity` attention-pools genre vectors into genre-affinity vectors of items and
  owners.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv

from engine.graph.types import EdgeType, Subgraph

Attention = dict[EdgeType, tuple[Tensor, Tensor]]
# Without autograd (full-graph inference), an edge type with more edges runs by destination groups
# of this many edges (gat_by_destination); training steps and small graphs never reach it. Each
# group's per-edge tensors ([E, heads, D]) set the forward's peak at the Kaggle file's size: 64 k
# edges instead of 256 k take 0.35 GB off rank 0's validation at the same speed (docs/benchmarks.md,
# round 3).
CHUNK_EDGES = 1 << 16


def edge_key(edge_type: EdgeType) -> str:
    """``ModuleDict`` key of an edge type (the same ``src__rel__dst`` spelling as PyG's
    ``to_hetero``)."""
    return "__".join(edge_type)


def node_ids(sub: Subgraph, node_type: str, device: torch.device) -> Tensor:
    """Global ids of the local nodes of ``node_type`` (empty if the subgraph lacks the type)."""
    n_id = sub.n_id.get(node_type)
    if n_id is None:
        return torch.empty(0, dtype=torch.long, device=device)
    return n_id.to(device=device, dtype=torch.long)


def local_edges(sub: Subgraph, edge_type: EdgeType, device: torch.device) -> Tensor:
    """Local ``[2, E]`` edges of ``edge_type``; row 0 indexes src nodes, row 1 dst nodes. A missing
    edge type is empty, so its conv still runs and its parameters still join the autograd graph."""
    ei = sub.edge_index.get(edge_type)
    if ei is None:
        return torch.empty(2, 0, dtype=torch.long, device=device)
    return ei.to(device=device, dtype=torch.long)


def local_edge_attr(sub: Subgraph, edge_type: EdgeType, dim: int | None, num_edges: int,
                    device: torch.device) -> Tensor | None:
    """Edge features for a conv built with ``edge_dim=dim`` (``None`` if it has none)."""
    if dim is None:
        return None
    ea = sub.edge_attr.get(edge_type)
    if ea is None:
        if num_edges:
            raise ValueError(f"edge type {edge_type} needs edge_attr of width {dim}")
        return torch.zeros(0, dim, device=device)
    return ea.to(device=device, dtype=torch.float).view(-1, dim)


def plus(a: Tensor, b: Tensor) -> Tensor:
    """``a + b``; without autograd (full-graph inference), into ``a``: at the Kaggle file's size
    each such sum of track states is a 300 MB copy (``a`` must be a fresh tensor of the
    caller's). The same values either way."""
    return a + b if torch.is_grad_enabled() else a.add_(b)


def run_gat(conv: GATConv, edge_type: EdgeType, x_src: Tensor, x_dst: Tensor, sub: Subgraph,
            attention: Attention | None = None) -> Tensor:
    """``conv((x_src, x_dst), edges)`` over the local edges of ``edge_type`` (with their edge
    features when the conv has ``edge_dim``); records detached ``(edge_index, alpha)`` into
    ``attention`` when given. The output has one row per dst node."""
    ei = local_edges(sub, edge_type, x_src.device)
    ea = local_edge_attr(sub, edge_type, conv.edge_dim, ei.size(1), x_src.device)
    if attention is None and not torch.is_grad_enabled() and ei.size(1) > CHUNK_EDGES:
        return gat_by_destination(conv, x_src, x_dst, ei, ea)  # full-graph inference
    if attention is None and conv.res is None:
        return gat_compact(conv, x_src, x_dst, ei, ea)
    y, (ei_used, alpha) = conv((x_src, x_dst), ei, edge_attr=ea, return_attention_weights=True)
    if attention is not None:
        attention[edge_type] = (ei_used.detach(), alpha.detach())
    return y


def _touched(index: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """(the sorted distinct values of ``index``, each entry's position among them), in O(n + E)
    without a sort."""
    used = torch.zeros(n, dtype=torch.bool, device=index.device)
    used[index] = True
    local = torch.cumsum(used, 0) - 1
    return torch.nonzero(used).flatten(), local[index]


def gat_compact(conv: GATConv, x_src: Tensor, x_dst: Tensor, ei: Tensor,
                ea: Tensor | None) -> Tensor:
    """``conv((x_src, x_dst), ei)`` projecting only the sources and destinations that ``ei``
    touches. GATConv projects every row of ``x_src`` and ``x_dst``, but on a sampled subgraph an
    edge type often touches few of them (the last layer's edges reach only the seeds; 165
    track -> genre edges against 40 k local tracks), and those projections were the largest cost
    of a full-mode step. Each edge's message and attention read only its two endpoints' rows, so
    the touched destinations' outputs are the same; an untouched destination gets what GATConv
    gives a node without in-edges, its bias (no residual: the caller checks ``conv.res``).
    Dropout draws one value per edge, as before."""
    n_src, n_dst = x_src.size(0), x_dst.size(0)
    src, s_loc = _touched(ei[0], n_src)
    dst, d_loc = _touched(ei[1], n_dst)
    if 2 * src.numel() > n_src:  # most rows touched: the gather would cost more than it saves
        src, s_loc = None, ei[0]
    if 2 * dst.numel() > n_dst:
        dst, d_loc = None, ei[1]
    if src is None and dst is None:
        return conv((x_src, x_dst), ei, edge_attr=ea)
    xs = x_src if src is None else x_src[src]
    xd = x_dst if dst is None else x_dst[dst]
    y = conv((xs, xd), torch.stack([s_loc, d_loc]), edge_attr=ea,
             size=(xs.size(0), xd.size(0)))
    if dst is None:
        return y
    base = y.new_zeros(n_dst, y.size(1))
    if conv.bias is not None:
        base = base + conv.bias
    return base.index_copy(0, dst, y)


def gat_by_destination(conv: GATConv, x_src: Tensor, x_dst: Tensor, ei: Tensor,
                       ea: Tensor | None, chunk: int | None = None) -> Tensor:
    """``conv((x_src, x_dst), ei)`` in groups of about ``chunk`` edges (default
    :data:`CHUNK_EDGES`), each group all the in-edges of a range of destinations and projecting
    only the sources it reads. GAT's softmax normalises over a destination's in-edges, so the rows
    are those of one call, while the per-edge messages ([E, heads, D]) never exist all at once:
    a full-graph forward at the Kaggle file's size needs a few hundred MB here, not gigabytes."""
    chunk = chunk or CHUNK_EDGES
    n_dst = x_dst.size(0)
    order = torch.argsort(ei[1], stable=True)
    ends = torch.bincount(ei[1], minlength=n_dst).cumsum(0)  # in-edges of dst < v+1
    if not n_dst:
        return conv((x_src, x_dst), ei, edge_attr=ea)
    # each group writes its rows into one output: no list of groups plus their concatenation,
    # two copies of a 1.2 M-row state at once (round 3 of issue #15)
    out, lo = None, 0
    while lo < n_dst:  # a loop over groups (E / chunk of them), not over edges
        first = int(ends[lo - 1]) if lo else 0
        hi = int(torch.searchsorted(ends, first + chunk, right=True))
        hi = min(max(hi, lo + 1), n_dst)
        sel = order[first:int(ends[hi - 1])]
        src, inverse = torch.unique(ei[0, sel], return_inverse=True)
        y = conv((x_src[src], x_dst[lo:hi]), torch.stack([inverse, ei[1, sel] - lo]),
                 edge_attr=None if ea is None else ea[sel], size=(src.numel(), hi - lo))
        if out is None:
            out = y.new_empty(n_dst, y.size(1))
        out[lo:hi] = y
        lo = hi
    return out


def layer_trim(sub: Subgraph, num_layers: int
               ) -> list[tuple[dict[str, int], Subgraph]] | None:
    r"""What each of ``num_layers`` layers needs of a *sampled* subgraph (PyG's
    ``trim_to_layer``), or None when ``sub`` has no hop counts.

    The sampler lays local nodes out by the hop that first reached them and edges by the hop
    that drew them (the edges drawn at hop :math:`h` point into nodes first reached at hop
    :math:`h`; :class:`~engine.graph.neighbours.SampledSubgraph`). Layer :math:`d` of :math:`L`
    (from 0) only matters for nodes fewer than :math:`L - d` hops from the seeds, so it writes
    the first ``rows[t]`` nodes of each type (hops :math:`< L - d`) and reads the edges drawn at
    those hops, which hold every in-edge of those nodes: the seeds' outputs are exactly those of
    the untrimmed layers, at a fraction of the work (the last layer reads only the edges into
    the seeds). Returns ``(rows, view)`` per layer, ``view`` sharing ``sub``'s tensors."""
    nodes = getattr(sub, "num_sampled_nodes", None)
    edges = getattr(sub, "num_sampled_edges", None)
    if not nodes or not edges:
        return None
    out = []
    for depth in range(num_layers):
        k = num_layers - depth
        counts = {et: sum(c[:k]) for et, c in edges.items()}
        view = Subgraph(n_id=sub.n_id, x=sub.x,
                        edge_index={et: ei[:, :counts.get(et, ei.size(1))]
                                    for et, ei in sub.edge_index.items()},
                        edge_attr={et: ea[:counts.get(et, ea.size(0))]
                                   for et, ea in sub.edge_attr.items()},
                        edge_pos={et: ep[:counts.get(et, ep.size(0))]
                                  for et, ep in sub.edge_pos.items()})
        out.append(({t: sum(c[:k]) for t, c in nodes.items()}, view))
    return out


def plan_layers(edge_types: list[EdgeType], targets: set[str],
                num_layers: int) -> list[list[EdgeType]]:
    """Edge types per layer such that every conv's output reaches ``targets`` after the last
    layer: the last layer has the edge types into ``targets``; each earlier layer those into
    ``targets`` or into a source type of a later layer. Keeps the order of ``edge_types``."""
    plan: list[list[EdgeType]] = []
    need = set(targets)
    for _ in range(num_layers):
        layer = [et for et in edge_types if et[2] in need]
        plan.append(layer)
        need |= {et[0] for et in layer}
    return plan[::-1]


def input_types(plan: list[list[EdgeType]], targets: list[str]) -> list[str]:
    """Node types whose input states a layer plan reads, in first-seen order."""
    seen = dict.fromkeys(targets)
    for layer in plan:
        for src, _, dst in layer:
            seen.setdefault(src)
            seen.setdefault(dst)
    return list(seen)


class HeteroGAT(nn.Module):
    r"""One heterogeneous GAT layer, ``HeteroConv({r: GATConv}, aggr="sum")`` in effect:

    .. math::
        \mathbf{m}_v = \sum_{r = (s, \cdot, t(v))} \mathrm{GAT}_r\big((\mathbf{h}_s,
        \mathbf{h}_{t(v)}), \mathcal{E}_r\big)_v

    with bipartite ``GATConv((dim, dim), dim, heads, concat=False, add_self_loops=False,
    edge_dim=edge_attr_dims.get(r))``. Unlike ``HeteroConv`` an edge type missing from the subgraph
    runs on zero edges (its parameters stay in the autograd graph), and attention weights can be
    recorded. Returns messages only for destination types; the caller adds the residual.
    """

    def __init__(self, edge_types: list[EdgeType], dim: int, heads: int, dropout: float,
                 edge_attr_dims: dict[EdgeType, int]):
        super().__init__()
        self.edge_types = list(edge_types)
        self.convs = nn.ModuleDict({
            edge_key(et): GATConv((dim, dim), dim, heads=heads, concat=False, dropout=dropout,
                                  add_self_loops=False, edge_dim=edge_attr_dims.get(et))
            for et in self.edge_types
        })

    def forward(self, h: dict[str, Tensor], sub: Subgraph, attention: Attention | None = None,
                rows: dict[str, int] | None = None) -> dict[str, Tensor]:
        """Messages into every destination type; with ``rows``, only into its first ``rows[t]``
        local nodes (:func:`layer_trim`)."""
        out: dict[str, Tensor] = {}
        for et in self.edge_types:
            src, _, dst = et
            x_dst = h[dst] if rows is None else h[dst][:rows[dst]]
            y = run_gat(self.convs[edge_key(et)], et, h[src], x_dst, sub, attention)
            out[dst] = plus(out[dst], y) if dst in out else y
        return out


class GenreAffinity(nn.Module):
    r"""Genre-affinity vectors of items and owners by attention pooling of genre vectors.

    .. math::
        \mathbf{g}_i = \mathrm{GAT}_{\mathrm{genre} \to i}(\mathbf{z}) \quad\text{or}\quad
        \mathbf{g}_i = \mathrm{GAT}_{\mathrm{artist} \to i}\big(
        \mathrm{GAT}_{\mathrm{genre} \to \mathrm{artist}}(\mathbf{z})\big),
        \qquad
        \mathbf{g}_o = \mathrm{GAT}_{\mathrm{genre} \to o}(\mathbf{z}) \quad\text{or}\quad
        \mathbf{g}_o = \mathrm{GAT}_{i \to o}(\mathbf{g})

    where :math:`\mathbf{z}` are genre vectors and each GAT attends with the destination node's
    ``query`` state (its collaborative input state), so which of its genres count is learnt per
    node. The first route that the edge types allow is used (:meth:`routes`).
    """

    def __init__(self, owner_type: str, item_type: str, edge_types: list[EdgeType], dim: int,
                 heads: int, dropout: float, edge_attr_dims: dict[EdgeType, int],
                 genre_type: str = "genre", artist_type: str = "artist"):
        super().__init__()
        found = self.routes(owner_type, item_type, edge_types, genre_type, artist_type)
        if found is None:
            raise ValueError(f"no genre -> {item_type} route in edge types {edge_types}")
        self.item_route, self.owner_edge = found
        self.owner_type, self.item_type = owner_type, item_type
        self.convs = nn.ModuleDict({
            edge_key(et): GATConv((dim, dim), dim, heads=heads, concat=False, dropout=dropout,
                                  add_self_loops=False, edge_dim=edge_attr_dims.get(et))
            for et in [*self.item_route, self.owner_edge]
        })

    @staticmethod
    def routes(owner_type: str, item_type: str, edge_types: list[EdgeType],
               genre_type: str = "genre", artist_type: str = "artist",
               ) -> tuple[list[EdgeType], EdgeType] | None:
        """``(item route, owner edge)`` or ``None`` when items cannot reach genres."""
        ets = set(edge_types)
        g2i, g2a = (genre_type, "to", item_type), (genre_type, "to", artist_type)
        a2i = (artist_type, "to", item_type)
        g2o, i2o = (genre_type, "to", owner_type), (item_type, "to", owner_type)
        if g2i in ets:
            item_route = [g2i]
        elif g2a in ets and a2i in ets:
            item_route = [g2a, a2i]
        else:
            return None
        if g2o in ets:
            return item_route, g2o
        return (item_route, i2o) if i2o in ets else None

    def query_types(self) -> list[str]:
        """Node types whose states :meth:`forward` needs in ``query``."""
        return [et[2] for et in [*self.item_route, self.owner_edge]]

    def forward(self, genre_x: Tensor, query: dict[str, Tensor], sub: Subgraph,
                attention: Attention | None = None) -> tuple[Tensor, Tensor]:
        """``(g_owner [n_owner, dim], g_item [n_item, dim])`` for the local nodes of ``sub``."""
        z = genre_x
        for et in self.item_route:
            z = run_gat(self.convs[edge_key(et)], et, z, query[et[2]], sub, attention)
        g_item = z
        src = genre_x if self.owner_edge[0] != self.item_type else g_item
        g_owner = run_gat(self.convs[edge_key(self.owner_edge)], self.owner_edge, src,
                          query[self.owner_type], sub, attention)
        return g_owner, g_item

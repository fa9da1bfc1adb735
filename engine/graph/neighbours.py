"""Heterogeneous neighbour sampling: the sampled subgraph around a batch's seeds.

``sample_subgraph`` samples k-hop neighbourhoods in the message-passing direction, like PyG's
``NeighborLoader`` on ``HeteroData``: at hop ``h`` and for every edge type ``(src, "to", dst)``,
each ``dst`` node discovered at hop ``h - 1`` (the seeds at hop 0) draws up to ``fanout[h]`` of
its in-neighbours of type ``src``, read from the reverse CSR ``csr[(dst, "to", src)]``. Every
node is expanded once (at the hop after it was first seen), so no edge is drawn twice.

``whole_graph`` is the no-sampling case (the whole graph as one "hop"), and ``add_owner_rows``
adds each seed owner's whole training row. Everything is vectorised; the only Python loops run
over hops, edge types, fanout slots or binary-search bits, never over nodes, edges or owners.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from engine.graph.ops import ROW, row_lookup, row_positions, segment_arange
from engine.graph.types import EdgeType, GraphData, Subgraph, rev

Fanouts = list[int] | dict[EdgeType, list[int]]

@dataclass
class SampledSubgraph(Subgraph):
    """A ``Subgraph`` plus sampling bookkeeping.

    ``seed_local[t][i]`` is the local index of the ``i``-th given seed of type ``t`` (seeds may
    repeat; a repeated seed maps to one local node). ``num_sampled_nodes[t][h]`` counts the nodes
    of type ``t`` first reached at hop ``h`` (hop 0 = distinct seeds); local ids are laid out in
    that order. ``num_sampled_edges[et][h]`` counts the edges drawn at hop ``h``.
    """

    seed_local: dict[str, Tensor] = field(default_factory=dict)
    num_sampled_nodes: dict[str, list[int]] = field(default_factory=dict)
    num_sampled_edges: dict[EdgeType, list[int]] = field(default_factory=dict)


# --------------------------------------------------------------------------- vectorised helpers

def _sample_positions(indptr: Tensor, rows: Tensor, k: int, replace: bool,
                      generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Draw up to ``k`` CSR positions from each row in ``rows``.

    Returns ``(which, pos)``: ``which`` indexes ``rows``, ``pos`` is a position in the CSR.
    ``k < 0`` or ``deg <= k`` (without replacement) takes the whole row. Rows with ``deg > k``
    use Robert Floyd's algorithm run on all rows in parallel: for ``j = deg-k .. deg-1`` draw
    ``t ~ U{0..j}`` and keep ``t``, or ``j`` if ``t`` was already kept; this yields a uniform
    ``k``-subset with ``k`` vector steps and no rejection. With replacement every non-empty row
    draws exactly ``k`` independent positions.
    """
    start = indptr[rows]
    deg = indptr[rows + 1] - start
    if replace and k >= 0:
        live = torch.nonzero(deg > 0).flatten()
        u = torch.rand(live.numel(), k, dtype=torch.float64, generator=generator)
        d = deg[live, None]
        off = torch.minimum((u * d).long(), d - 1)  # min() guards float rounding to d
        return live.repeat_interleave(k), (start[live, None] + off).flatten()
    full = deg <= k if k >= 0 else torch.ones_like(deg, dtype=torch.bool)
    small = torch.nonzero(full & (deg > 0)).flatten()
    which_small = small.repeat_interleave(deg[small])
    pos_small = start[which_small] + segment_arange(deg[small])
    big = torch.nonzero(~full).flatten()
    if big.numel() == 0:
        return which_small, pos_small
    d = deg[big]
    chosen = torch.empty(big.numel(), k, dtype=torch.long)
    for i in range(k):  # k = fanout: a loop over sample slots, not over data
        j = d - k + i
        u = torch.rand(big.numel(), dtype=torch.float64, generator=generator)
        t = torch.minimum((u * (j + 1)).long(), j)
        taken = (chosen[:, :i] == t[:, None]).any(1)
        chosen[:, i] = torch.where(taken, j, t)
    which_big = big.repeat_interleave(k)
    pos_big = (start[big, None] + chosen).flatten()
    return torch.cat([which_small, which_big]), torch.cat([pos_small, pos_big])


def _merge_ids(known: Tensor, cand: Tensor) -> tuple[Tensor, Tensor]:
    """Append the distinct new ids of ``cand`` to ``known`` (distinct) in first-seen order.

    Returns (new ``known``, local index of every ``cand``). Uses ``unique`` + first occurrence,
    which costs O(sub-graph size), not O(number of nodes in the graph)."""
    allv = torch.cat([known, cand])
    uniq, inv = torch.unique(allv, return_inverse=True)
    first = torch.full((uniq.numel(),), allv.numel(), dtype=torch.long)
    first.scatter_reduce_(0, inv, torch.arange(allv.numel()), reduce="amin")
    order = torch.argsort(first)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    # Known ids occupy the first positions and are distinct, so they keep their local ids.
    return uniq[order], rank[inv[known.numel():]]


def _fanout_table(g: GraphData, fanouts: Fanouts) -> tuple[dict[EdgeType, list[int]], int]:
    """Per-edge-type fanouts padded with 0 to a common number of hops."""
    if isinstance(fanouts, dict):
        unknown = set(fanouts) - set(g.edge_types)
        if unknown:
            raise ValueError(f"fanouts name edge types not in the graph: {sorted(unknown)}")
        table = {et: list(fanouts.get(et, [])) for et in g.edge_types}
    else:
        table = {et: list(fanouts) for et in g.edge_types}
    hops = max((len(v) for v in table.values()), default=0)
    return {et: v + [0] * (hops - len(v)) for et, v in table.items()}, hops


# ----------------------------------------------------------------------------- subgraph sampler

def sample_subgraph(g: GraphData, seeds: dict[str, Tensor], fanouts: Fanouts,
                    generator: torch.Generator | None = None, replace: bool = False,
                    backend: str = "auto") -> SampledSubgraph:
    """Sample the message-passing neighbourhood of ``seeds`` (see the module docstring).

    ``fanouts`` is one list for every edge type, or a dict per edge type (missing types and short
    lists mean 0 at that hop); ``-1`` takes all neighbours. ``backend`` is ``"torch"``,
    ``"pyg_lib"`` or ``"auto"`` (pyg-lib when importable). The result's ``n_id[t]`` starts with
    the distinct seeds in first-seen order; ``seed_local`` maps every given seed to its local id.
    Every node type and edge type of ``g`` is present (possibly empty).
    """
    if backend not in ("auto", "torch", "pyg_lib"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'pyg_lib', not {backend!r}")
    unknown = set(seeds) - set(g.node_types)
    if unknown:
        raise ValueError(f"seeds name node types not in the graph: {sorted(unknown)}")
    table, hops = _fanout_table(g, fanouts)
    n_id, seed_local = {}, {}
    for t in g.node_types:
        s = seeds.get(t, torch.empty(0, dtype=torch.long)).long().flatten()
        n_id[t], seed_local[t] = _merge_ids(torch.empty(0, dtype=torch.long), s)
    if backend == "pyg_lib" or (backend == "auto" and _has_pyg_lib()):
        out = _sample_pyg_lib(g, n_id, table, replace, generator)
    else:
        out = _sample_torch(g, n_id, table, hops, replace, generator)
    n_id, edges, n_nodes, n_edges = out
    sub = SampledSubgraph(n_id=n_id, edge_index={}, seed_local=seed_local,
                          num_sampled_nodes=n_nodes, num_sampled_edges=n_edges)
    for et, (src_l, dst_l) in edges.items():
        sub.edge_index[et] = torch.stack([src_l, dst_l])
        if et in g.edge_attr or et in g.edge_pos:
            # Look the exact (src, dst) edge up in csr[et]; with parallel edges the first wins.
            src_g, dst_g = n_id[et[0]][src_l], n_id[et[2]][dst_l]
            csr = g.csr[et]
            pos, _ = row_lookup(csr.indptr, csr.indices, src_g, dst_g)
            if et in g.edge_attr:
                sub.edge_attr[et] = g.edge_attr[et][csr.perm[pos]]
            if et in g.edge_pos:
                sub.edge_pos[et] = g.edge_pos[et][csr.perm[pos]]
    sub.x = {t: v[n_id[t]] for t, v in g.x.items()}
    return sub


def _sample_torch(g: GraphData, n_id: dict[str, Tensor], table: dict[EdgeType, list[int]],
                  hops: int, replace: bool, generator: torch.Generator | None):
    """Pure-torch hop loop. Returns (n_id, {et: (src_local, dst_local)}, node and edge counts)."""
    frontier = {t: (0, v.numel()) for t, v in n_id.items()}
    n_nodes = {t: [v.numel()] for t, v in n_id.items()}
    parts: dict[EdgeType, list[tuple[Tensor, Tensor]]] = {et: [] for et in g.edge_types}
    n_edges: dict[EdgeType, list[int]] = {et: [] for et in g.edge_types}
    for hop in range(hops):
        drawn = []  # (et, src global ids, dst local ids) of this hop
        for et in g.edge_types:
            dst = et[2]
            lo, hi = frontier[dst]
            k = table[et][hop]
            if k == 0 or hi == lo:
                n_edges[et].append(0)
                continue
            csr = g.csr[rev(et)]  # rows = dst nodes, indices = their src in-neighbours
            which, pos = _sample_positions(csr.indptr, n_id[dst][lo:hi], k, replace, generator)
            drawn.append((et, csr.indices[pos], lo + which))
            n_edges[et].append(int(pos.numel()))
        new_local: dict[EdgeType, Tensor] = {}
        for t in g.node_types:  # one merge per node type, over all edge types reaching it
            mine = [d for d in drawn if d[0][0] == t]
            before = n_id[t].numel()
            if mine:
                n_id[t], local = _merge_ids(n_id[t], torch.cat([d[1] for d in mine]))
                for d, loc in zip(mine, local.split([d[1].numel() for d in mine])):
                    new_local[d[0]] = loc
            frontier[t] = (before, n_id[t].numel())
            n_nodes[t].append(n_id[t].numel() - before)
        for et, _, dst_l in drawn:
            parts[et].append((new_local[et], dst_l))
    empty = torch.empty(0, dtype=torch.long)
    edges = {et: (torch.cat([p[0] for p in ps]), torch.cat([p[1] for p in ps])) if ps
             else (empty, empty) for et, ps in parts.items()}
    return n_id, edges, n_nodes, n_edges


def _has_pyg_lib() -> bool:
    try:
        import pyg_lib.sampler  # noqa: F401
    except ImportError:
        return False
    return True


def _sample_pyg_lib(g: GraphData, n_id: dict[str, Tensor], table: dict[EdgeType, list[int]],
                    replace: bool, generator: torch.Generator | None):
    """The same sampling through ``pyg_lib.sampler.hetero_neighbor_sample`` in CSC mode: the
    CSC of ``(src, "to", dst)`` is exactly our ``csr[(dst, "to", src)]``. pyg-lib draws from
    torch's global CPU generator, so we reseed it from ``generator`` inside ``fork_rng``."""
    try:
        from pyg_lib.sampler import hetero_neighbor_sample
    except ImportError as e:
        raise ImportError("backend='pyg_lib' needs the pyg-lib package") from e
    ets = g.edge_types
    seed_dict = {t: v for t, v in n_id.items() if v.numel() > 0}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        out = hetero_neighbor_sample(
            {et: g.csr[rev(et)].indptr for et in ets}, {et: g.csr[rev(et)].indices for et in ets},
            seed_dict, table, csc=True, replace=replace, directed=True, return_edge_id=True)
    row, col, node = out[:3]
    # pyg-lib > 0.1 also returns per-hop node and edge counts.
    n_nodes, n_edges = out[4:6] if len(out) >= 6 else ({}, {})
    empty = torch.empty(0, dtype=torch.long)
    n_id = {t: node.get(t, n_id[t]).long() for t in g.node_types}
    edges = {et: (row.get(et, empty).long(), col.get(et, empty).long()) for et in ets}
    n_nodes = {t: list(n_nodes.get(t, [n_id[t].numel()])) for t in g.node_types}
    n_edges = {et: list(n_edges.get(et, [])) for et in ets}
    return n_id, edges, n_nodes, n_edges


def add_owner_rows(g: GraphData, sub: SampledSubgraph, owners: Tensor, link_types: list[str]
                   ) -> None:
    """Add the *whole* training row of each owner in ``owners`` (local ids) to ``sub``, in place:
    edges ``(item, ROW, owner)`` with their ``edge_pos``, and the row items' ``link_types``
    neighbours (their artists) as ``(link, ROW, item)`` edges. Row items and links not yet in
    ``sub`` become new local nodes (features gathered) without any message-passing edge, so the
    layers' cost does not grow with row length while owner aggregates see exact rows."""
    ot, it = g.owner_type, g.item_type
    csr = g.csr[g.interaction]
    owner_g = sub.n_id[ot][owners]
    which, pos = row_positions(csr.indptr, owner_g)
    item_g = csr.indices[pos]
    sub.n_id[it], item_l = _merge_ids(sub.n_id[it], item_g)
    rel = (it, ROW, ot)
    sub.edge_index[rel] = torch.stack([item_l, owners[which]])
    if g.interaction in g.edge_pos:
        sub.edge_pos[rel] = g.edge_pos[g.interaction][csr.perm[pos]]
    rows = torch.unique(item_l)
    for t in link_types:  # a loop over attribute types (one: artists)
        lcsr = g.csr[(it, "to", t)]
        lw, lpos = row_positions(lcsr.indptr, sub.n_id[it][rows])
        sub.n_id[t], link_l = _merge_ids(sub.n_id[t], lcsr.indices[lpos])
        sub.edge_index[(t, ROW, it)] = torch.stack([link_l, rows[lw]])
    for t in (it, *link_types):
        if t in g.x:
            sub.x[t] = g.x[t][sub.n_id[t]]


def whole_graph(g: GraphData, seeds: dict[str, Tensor]) -> SampledSubgraph:
    """The whole of ``g`` as a :class:`SampledSubgraph` (identity ``n_id``, one "hop" holding every
    node and edge), with ``seed_local`` = the seeds' global ids. Edge dicts are shallow copies, so
    dropping edges from the result leaves ``g`` untouched."""
    n_id = {t: torch.arange(n) for t, n in g.num_nodes.items()}
    seed_local = {t: seeds.get(t, torch.empty(0, dtype=torch.long)).long().flatten()
                  for t in g.node_types}
    return SampledSubgraph(
        n_id=n_id, edge_index=dict(g.edge_index), x=dict(g.x), edge_attr=dict(g.edge_attr),
        edge_pos=dict(g.edge_pos),
        seed_local=seed_local, num_sampled_nodes={t: [int(n)] for t, n in g.num_nodes.items()},
        num_sampled_edges={et: [int(ei.size(1))] for et, ei in g.edge_index.items()})

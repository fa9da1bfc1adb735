"""Heterogeneous neighbour sampling, negative sampling and BPR mini-batches.

``sample_subgraph`` samples k-hop neighbourhoods in the message-passing direction, like PyG's
``NeighborLoader`` on ``HeteroData``: at hop ``h`` and for every edge type ``(src, "to", dst)``,
each ``dst`` node discovered at hop ``h - 1`` (the seeds at hop 0) draws up to ``fanout[h]`` of
its in-neighbours of type ``src``, read from the reverse CSR ``csr[(dst, "to", src)]``. Every
node is expanded once (at the hop after it was first seen), so no edge is drawn twice.

``sample_negatives`` draws uniform items that are not positives of their owner, and
``BPRBatches`` turns an owner shard into a fixed number of (owner, positive, negatives) batches,
each with the subgraph around its seeds. Everything is vectorised; the only Python loops run over
hops, edge types, fanout slots or binary-search bits, never over nodes, edges or owners.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import Tensor

from engine.graph.ops import ROW, row_positions, segment_arange
from engine.graph.types import CSR, EdgeType, GraphData, Subgraph, rev

Fanouts = list[int] | dict[EdgeType, list[int]]

#: Default share of each triple's negatives drawn in proportion to item degree (the rest uniform).
NEG_POPULARITY = 0.0


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

def _row_lookup(indptr: Tensor, indices: Tensor, rows: Tensor, values: Tensor
                ) -> tuple[Tensor, Tensor]:
    """Lower-bound binary search of ``values[i]`` in the sorted CSR row ``rows[i]``, for all
    queries at once. Returns (CSR position, found mask). The loop runs over the bits of the
    largest queried degree, so no O(E) key array is built per call."""
    lo, hi = indptr[rows].clone(), indptr[rows + 1].clone()
    end = hi.clone()
    if indices.numel() == 0 or rows.numel() == 0:
        return lo, torch.zeros(rows.shape, dtype=torch.bool)
    last = indices.numel() - 1
    for _ in range(int((hi - lo).max()).bit_length()):
        active = lo < hi
        mid = (lo + hi) // 2
        right = active & (indices[mid.clamp(max=last)] < values)
        lo = torch.where(right, mid + 1, lo)
        hi = torch.where(active & ~right, mid, hi)
    found = (lo < end) & (indices[lo.clamp(max=last)] == values)
    return lo, found


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
            pos, _ = _row_lookup(csr.indptr, csr.indices, src_g, dst_g)
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


# ---------------------------------------------------------------------------- negative sampling

def sample_negatives(indptr: Tensor, indices: Tensor, owners: Tensor, num_items: int,
                     num_neg: int, generator: torch.Generator | None = None,
                     candidates: Tensor | None = None, max_rounds: int = 100) -> Tensor:
    """``[len(owners), num_neg]`` items drawn uniformly (from ``candidates`` if given, else from
    ``0..num_items-1``) that are not positives of their owner in the CSR ``(indptr, indices)``
    (rows sorted). Rejection sampling: draw everything, look each draw up in its owner's row by a
    vectorised binary search, redraw only the rejected entries, for at most ``max_rounds``
    rounds. Raises ``ValueError`` if an owner has every candidate as a positive."""
    owners = owners.long().flatten()
    pool = None if candidates is None else candidates.long().flatten()
    size = num_items if pool is None else pool.numel()
    if size == 0:
        raise ValueError("no candidate items to draw negatives from")

    def draw(n: int) -> Tensor:
        r = torch.randint(size, (n,), generator=generator)
        return r if pool is None else pool[r]

    rows = owners.repeat_interleave(num_neg)
    out = draw(rows.numel())
    todo = torch.arange(rows.numel())
    for _ in range(max_rounds):  # bounded; each round only touches the rejected entries
        _, hit = _row_lookup(indptr, indices, rows[todo], out[todo])
        todo = todo[hit]
        if todo.numel() == 0:
            return out.view(owners.numel(), num_neg)
        out[todo] = draw(todo.numel())
    _raise_saturated(indptr, indices, rows[todo].unique(), num_items, pool)
    raise RuntimeError(f"could not draw negatives in {max_rounds} rounds for owners "
                       f"{rows[todo].unique()[:5].tolist()}: nearly every candidate is a positive")


def _raise_saturated(indptr: Tensor, indices: Tensor, owners: Tensor, num_items: int,
                     pool: Tensor | None) -> None:
    """Exact check, run only after rejection failed: raise if some owner's positives cover the
    whole candidate set."""
    space = torch.arange(num_items) if pool is None else pool.unique()
    rows = owners.repeat_interleave(space.numel())
    _, hit = _row_lookup(indptr, indices, rows, space.repeat(owners.numel()))
    full = hit.view(owners.numel(), space.numel()).all(1)
    if full.any():
        raise ValueError(f"owner {int(owners[full][0])} has every candidate item as a positive; "
                         "no negative exists")


# ---------------------------------------------------------------------------------- BPR batches

def owner_shard(owners: Tensor, rank: int, world_size: int, seed: int) -> Tensor:
    """This rank's shard: a ``seed``-permutation of ``owners`` cut into ``world_size`` contiguous
    pieces whose sizes differ by at most one. Shards are disjoint and cover ``owners``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    gen = torch.Generator().manual_seed(seed)
    perm = owners.flatten()[torch.randperm(owners.numel(), generator=gen)]
    return torch.tensor_split(perm, world_size)[rank]


def steps_per_epoch(num_owners_total: int, world_size: int, batch_size: int,
                    num_edges: int = 0, pos_per_owner: int = 1) -> int:
    """Steps every rank runs per epoch, the same on every rank (DDP needs that).

    At least ``ceil(largest shard / batch_size)``, so every owner comes up once; with
    ``num_edges`` (the training edges) at least ``ceil(num_edges / (world_size * batch_size *
    pos_per_owner))``, so an epoch draws as many positives as there are training edges -- one
    pass over the edges in expectation, the usual meaning of a BPR epoch. (Counting owners alone
    makes an epoch of 1,000 playlists with ~85 tracks each a tenth of a pass.)
    """
    if world_size < 1 or batch_size < 1 or pos_per_owner < 1:
        raise ValueError("world_size, batch_size and pos_per_owner must be positive")
    by_owner = math.ceil(math.ceil(num_owners_total / world_size) / batch_size)
    by_edge = math.ceil(num_edges / (world_size * batch_size * pos_per_owner))
    return max(by_owner, by_edge)


def epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """A generator determined by (seed, epoch, rank); SeedSequence mixes them so neighbouring
    tuples do not give correlated streams."""
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


@dataclass
class Batch:
    """One BPR batch. ``owner_idx[i]``, ``pos_idx[i]`` and ``neg_idx[i, :]`` are local indices
    into ``sub``'s owner / item nodes for triple ``i``; score(o, i) = <h_owner[o], h_item[i]>."""

    sub: SampledSubgraph
    owner_idx: Tensor  # [T]
    pos_idx: Tensor  # [T]
    neg_idx: Tensor  # [T, num_neg]
    # [T] each positive's position from the end of its owner's row (GraphData.edge_pos), or None
    pos_rank: Tensor | None = None

    @property
    def num_triples(self) -> int:
        return int(self.owner_idx.numel())

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor (subgraph included) to ``device``."""
        mv = {f.name: {k: v.to(device) for k, v in getattr(self.sub, f.name).items()}
              for f in fields(self.sub) if f.name not in ("num_sampled_nodes", "num_sampled_edges")}
        sub = SampledSubgraph(**mv, num_sampled_nodes=self.sub.num_sampled_nodes,
                              num_sampled_edges=self.sub.num_sampled_edges)
        rank = None if self.pos_rank is None else self.pos_rank.to(device)
        return Batch(sub, self.owner_idx.to(device), self.pos_idx.to(device),
                     self.neg_idx.to(device), rank)


class BPRBatches:
    """One epoch of BPR batches over this rank's owner shard.

    Each step takes ``batch_size`` owners from the shard shuffled by (seed, epoch, rank), wrapping
    around the shard so that every batch is full and exactly ``steps`` steps run (pass
    ``steps_per_epoch(...)`` so all DDP ranks agree; default ``ceil(len(shard) / batch_size)``).
    Each owner contributes ``pos_per_owner`` triples whose positives are drawn uniformly with
    replacement from its training row, so ``T = batch_size * pos_per_owner`` triples per batch
    (default 4: the owner-side neighbourhood is sampled once and shared by several triples).
    Each positive gets ``num_neg`` negatives from ``sample_negatives`` (over ``neg_candidates``
    if given). The subgraph is sampled around {owner type: owners, item type: positives and
    negatives}. With ``drop_target_edges`` the sampled owner->positive edges of the batch (both
    directions) are removed, so the model cannot read the label off a direct edge.

    ``fanouts=[]`` (no hop list) means *no sampling*: every batch runs on the whole graph (minus
    its target edges), with ``seed_local`` the seeds' global ids. For a model with ``L`` layers the
    seeds' outputs equal those on the exact ``L``-hop neighbourhood (``fanouts=[-1] * L``), since
    farther nodes cannot reach them; on small graphs (the quick mode's 1,000 playlists) one
    full-graph forward is cheaper than sampling thousands of item seeds' neighbourhoods, and every
    item of the catalogue gets a vector, so negatives cost nothing extra.
    Owners without positives are dropped from the shard. Iterating twice gives the same batches.
    ``owner_rows``: attribute types (e.g. ``["artist"]``); when given, each batch also holds every
    seed owner's whole training row as ``ROW`` edges (:func:`add_owner_rows`), for owner aggregates
    such as the model's artist affinity (which leaves each scored pair's own edge out itself).
    Each batch carries ``pos_rank``, its positives' positions from the end of their owners' rows
    (``g.edge_pos``; ``None`` without positions or with custom ``positives``), the slot at which the
    model's recency count scores the triple (:mod:`engine.models.affinity`).

    ``neg_popularity``: the share of each positive's ``num_neg`` negatives drawn in proportion to
    item degree (from the training edge list) instead of uniformly; default
    :data:`NEG_POPULARITY`. Uniform negatives are mostly items seen once, which a model tells
    from positives by popularity alone; popularity-matched negatives make it learn co-occurrence.

    ``min_pos_degree``: positives are drawn only among an owner's items that have at least this
    many owners in ``positives`` (an owner with no such item keeps its whole row). The default
    ``None`` means 2 with ``drop_target_edges``, else 1: a held-out test item that can be ranked at
    all has a training edge to *another* playlist, while a training positive of degree 1 would be
    left without any owner edge once its target edge is dropped -- a shortcut ("isolated item =
    positive") that BPR learns quickly and that never occurs at test time.
    """

    def __init__(self, g: GraphData, owners: Tensor, batch_size: int, num_neg: int,
                 fanouts: Fanouts, seed: int = 0, epoch: int = 0, rank: int = 0,
                 steps: int | None = None, pos_per_owner: int = 4,
                 positives: CSR | None = None, neg_candidates: Tensor | None = None,
                 drop_target_edges: bool = True, replace: bool = False,
                 backend: str = "auto", min_pos_degree: int | None = None,
                 neg_popularity: float | None = None, neg_pool: int = 0,
                 owner_rows: list[str] | None = None) -> None:
        self.g, self.pos = g, positives if positives is not None else g.csr[g.interaction]
        self.positives_are_edges = positives is None  # then CSR perm indexes g's edges
        deg = self.pos.degree()
        owners = owners.long().flatten()
        self.owners = owners[deg[owners] > 0]
        if self.owners.numel() == 0:
            raise ValueError("no owner in this shard has a training positive")
        self.batch_size, self.num_neg, self.pos_per_owner = batch_size, num_neg, pos_per_owner
        self.fanouts, self.seed, self.epoch, self.rank = fanouts, seed, epoch, rank
        self.steps = steps if steps is not None else math.ceil(self.owners.numel() / batch_size)
        self.neg_candidates, self.drop_target_edges = neg_candidates, drop_target_edges
        self.replace, self.backend = replace, backend
        self.full_graph = isinstance(fanouts, (list, tuple)) and len(fanouts) == 0
        if min_pos_degree is None:
            min_pos_degree = 2 if drop_target_edges else 1
        self.neg_popularity = NEG_POPULARITY if neg_popularity is None else float(neg_popularity)
        if not 0.0 <= self.neg_popularity <= 1.0:
            raise ValueError(f"neg_popularity must be in [0, 1], got {self.neg_popularity}")
        self.draw = _eligible_rows(self.pos, g.num_nodes[g.item_type], min_pos_degree)
        self.neg_pool = int(neg_pool)
        self.owner_rows = owner_rows

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _uniform_pool(self, gen: torch.Generator) -> Tensor | None:
        """Where uniform negatives come from: ``neg_candidates``, or with ``neg_pool = n > 0`` a
        fresh uniform sample of ``n`` of them shared by the whole batch. A shared pool means far
        fewer distinct item seeds, so a much smaller subgraph per step."""
        space = self.neg_candidates
        if self.neg_pool <= 0:
            return space
        size = self.g.num_nodes[self.g.item_type] if space is None else space.numel()
        if self.neg_pool >= size:
            return space
        pick = torch.randperm(size, generator=gen)[: self.neg_pool]
        return pick if space is None else space[pick]

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        gen = epoch_generator(self.seed, self.epoch, self.rank)
        order = self.owners[torch.randperm(self.owners.numel(), generator=gen)]
        order = order[torch.arange(self.steps * self.batch_size) % order.numel()]
        for step in range(self.steps):
            yield self._batch(order[step * self.batch_size:(step + 1) * self.batch_size], gen)

    def _batch(self, owners: Tensor, gen: torch.Generator) -> Batch:
        g, p, P = self.g, self.pos, self.pos_per_owner
        d = self.draw
        trip_owner = owners.repeat_interleave(P)
        start, deg = d.indptr[trip_owner], d.degree()[trip_owner]
        off = torch.minimum((torch.rand(deg.numel(), dtype=torch.float64, generator=gen)
                             * deg).long(), deg - 1)
        pos = d.indices[start + off]
        pos_rank = None
        if self.positives_are_edges and g.interaction in g.edge_pos:
            pos_rank = g.edge_pos[g.interaction][d.perm[start + off]]
        n_pop = round(self.num_neg * self.neg_popularity)
        parts = []
        if self.num_neg - n_pop:
            parts.append(sample_negatives(p.indptr, p.indices, trip_owner, g.num_nodes[g.item_type],
                                          self.num_neg - n_pop, gen, self._uniform_pool(gen)))
        if n_pop:  # every training edge's item once: a draw is proportional to item degree
            parts.append(sample_negatives(p.indptr, p.indices, trip_owner, g.num_nodes[g.item_type],
                                          n_pop, gen, p.indices))
        neg = torch.cat(parts, 1)
        seeds = {g.owner_type: owners, g.item_type: torch.cat([pos, neg.flatten()])}
        if self.full_graph:
            sub = whole_graph(g, seeds)
        else:
            sub = sample_subgraph(g, seeds, self.fanouts, gen, self.replace, self.backend)
        owner_idx = sub.seed_local[g.owner_type].repeat_interleave(P)
        item_local = sub.seed_local[g.item_type]
        pos_idx, neg_idx = item_local[:pos.numel()], item_local[pos.numel():].view(-1, self.num_neg)
        if self.owner_rows is not None and not self.full_graph:
            add_owner_rows(g, sub, torch.unique(sub.seed_local[g.owner_type]), self.owner_rows)
        if self.drop_target_edges:
            _drop_pairs(sub, g.interaction, owner_idx, pos_idx)  # ROW edges stay: see ROW
        return Batch(sub, owner_idx, pos_idx, neg_idx, pos_rank)


def _eligible_rows(p: CSR, num_items: int, min_degree: int) -> CSR:
    """``p`` restricted to items with at least ``min_degree`` owners in ``p``; a row left empty
    keeps all its items. ``perm`` follows the kept entries, so it still maps a position to its
    column of the graph's edge list (``pos_rank`` reads ``edge_pos`` through it)."""
    if min_degree <= 1:
        return p
    item_deg = torch.bincount(p.indices, minlength=num_items)
    ok = item_deg[p.indices] >= min_degree
    row = torch.repeat_interleave(torch.arange(p.indptr.numel() - 1), p.degree())
    n_ok = torch.bincount(row[ok], minlength=p.indptr.numel() - 1)
    keep = ok | (n_ok[row] == 0)
    indptr = torch.zeros_like(p.indptr)
    indptr[1:] = torch.cumsum(torch.bincount(row[keep], minlength=p.indptr.numel() - 1), 0)
    return CSR(indptr=indptr, indices=p.indices[keep], perm=p.perm[keep])


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


def _drop_pairs(sub: Subgraph, et: EdgeType, src_idx: Tensor, dst_idx: Tensor) -> None:
    """Remove the local pairs ``(src_idx[i], dst_idx[i])`` from ``et`` and their mirror from
    ``rev(et)`` in place (edge attributes and per-hop edge counts follow)."""
    n_dst = max(sub.num_nodes(et[2]), 1)
    target = src_idx * n_dst + dst_idx
    for e, flip in ((et, False), (rev(et), True)):
        if e not in sub.edge_index:
            continue
        ei = sub.edge_index[e]
        s, d = (ei[1], ei[0]) if flip else (ei[0], ei[1])
        keep = ~torch.isin(s * n_dst + d, target)
        sub.edge_index[e] = ei[:, keep]
        if e in sub.edge_attr:
            sub.edge_attr[e] = sub.edge_attr[e][keep]
        if e in sub.edge_pos:
            sub.edge_pos[e] = sub.edge_pos[e][keep]
        counts = getattr(sub, "num_sampled_edges", {}).get(e)
        if counts:  # edges are laid out hop by hop: recount the kept ones per hop
            hop = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
            sub.num_sampled_edges[e] = torch.bincount(hop[keep], minlength=len(counts)).tolist()

"""BPR mini-batches: (owner, positive, negatives) triples with the subgraph around their seeds.

``BPRBatches`` turns an owner shard (``owner_shard``) into a fixed number of batches per epoch
(``steps_per_epoch``, the same on every DDP rank), each drawn from a generator determined by
(seed, epoch, rank) (``epoch_generator``), so iterating twice or resuming at an epoch boundary
gives the same batches. Negatives come from :mod:`engine.graph.negatives`, the subgraph from
:mod:`engine.graph.neighbours`. Everything is vectorised; no Python loop runs over owners.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from engine.graph.cooccur import ItemKNN
from engine.graph.negatives import sample_negatives
from engine.graph.neighbours import (
    Fanouts,
    SampledSubgraph,
    add_owner_rows,
    sample_subgraph,
    whole_graph,
)
from engine.graph.ops import PAIR
from engine.graph.types import CSR, EdgeType, GraphData, Subgraph, rev


def owner_shard(owners: Tensor, rank: int, world_size: int, seed: int) -> Tensor:
    """This rank's shard: a ``seed``-permutation of ``owners`` cut into ``world_size`` contiguous
    pieces whose sizes differ by at most one. Shards are disjoint and cover ``owners``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    gen = torch.Generator().manual_seed(seed)
    perm = owners.flatten()[torch.randperm(owners.numel(), generator=gen)]
    return torch.tensor_split(perm, world_size)[rank]


def uniform_subset(n: int, k: int, gen: torch.Generator) -> Tensor:
    """``k`` distinct integers of ``0..n-1``, every ``k``-subset (and order) equally likely, in
    O(k) time and memory rather than a ``randperm(n)``'s O(n) (the catalogue: 1.18 M tracks at
    Kaggle scale, a few ms per step each way). The first ``k`` distinct values of i.i.d. uniform
    draws are a uniform random ``k``-permutation; a few spare draws cover the collisions
    (``~k^2 / 2n`` expected), and a rare shortfall draws again."""
    if not 0 <= k <= n:
        raise ValueError(f"cannot draw {k} distinct values of {n}")
    if 4 * k >= n:  # dense: a permutation is as cheap, and rejection would stall near k = n
        return torch.randperm(n, generator=gen)[:k]
    spare = 16 + 2 * k * k // n
    draws = torch.empty(0, dtype=torch.long)
    while True:  # almost always once: fewer than k distinct among k + spare draws is rare
        draws = torch.cat([draws, torch.randint(n, (k + spare,), generator=gen)])
        uniq, inv = torch.unique(draws, return_inverse=True)
        if uniq.numel() >= k:
            break
    first = torch.full((uniq.numel(),), draws.numel(), dtype=torch.long)
    first.scatter_reduce_(0, inv, torch.arange(draws.numel()), "amin")  # first draw of each
    return draws[torch.sort(first).values[:k]]


def steps_per_epoch(num_owners_total: int, world_size: int, batch_size: int,
                    num_edges: int, pos_per_owner: int) -> int:
    """Steps every rank runs per epoch, the same on every rank (DDP needs that).

    At least ``ceil(largest shard / batch_size)``, so every owner comes up once; with
    ``num_edges`` (the training edges) at least ``ceil(num_edges / (world_size * batch_size *
    pos_per_owner))``, so an epoch draws as many positives as there are training edges -- one
    pass over the edges in expectation, the usual meaning of a BPR epoch. (Counting owners alone
    makes an epoch of 1,000 playlists with ~85 tracks each a tenth of a pass.) ``num_edges = 0``
    counts owners only.
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
    (the owner-side neighbourhood is sampled once and shared by several triples).
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

    ``pair_knn``: with it, each batch also holds one ``(owner, PAIR, item)`` edge per scored
    pair with the pair's item-kNN value on the whole training graph (:mod:`.cooccur`), for a model
    with an item-kNN term (``engine.models.knn_term``).

    ``neg_popularity``: the share of each positive's ``num_neg`` negatives drawn in proportion to
    item degree (from the training edge list) instead of uniformly. Uniform negatives are mostly
    items seen once, which a model tells from positives by popularity alone; popularity-matched
    negatives make it learn co-occurrence. ``neg_pool``: see :meth:`_uniform_pool`.

    The arguments that are training hyper-parameters (``seed``, ``pos_per_owner``, ``neg_pool``,
    ``neg_popularity``, ``owner_rows``; with ``batch_size``, ``num_neg`` and ``fanouts``) have no
    default: their one default is :class:`engine.training.config.TrainConfig`'s, which this
    module cannot import (imports flow graph -> training), so every caller passes them and none
    silently gets another value. ``owner_rows=None`` means no owner rows
    (:func:`engine.training.config.owner_row_links` gives a run's value).

    ``min_pos_degree``: positives are drawn only among an owner's items that have at least this
    many owners in ``positives`` (an owner with no such item keeps its whole row). The default
    ``None`` means 2 with ``drop_target_edges``, else 1: a held-out test item that can be ranked at
    all has a training edge to *another* playlist, while a training positive of degree 1 would be
    left without any owner edge once its target edge is dropped -- a shortcut ("isolated item =
    positive") that BPR learns quickly and that never occurs at test time.
    """

    def __init__(self, g: GraphData, owners: Tensor, batch_size: int, num_neg: int,
                 fanouts: Fanouts, *, seed: int, pos_per_owner: int, neg_pool: int,
                 neg_popularity: float, owner_rows: list[str] | None, epoch: int = 0,
                 rank: int = 0, steps: int | None = None, positives: CSR | None = None,
                 neg_candidates: Tensor | None = None, drop_target_edges: bool = True,
                 replace: bool = False, backend: str = "auto",
                 min_pos_degree: int | None = None, pair_knn: ItemKNN | None = None) -> None:
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
        self.neg_popularity = float(neg_popularity)
        if not 0.0 <= self.neg_popularity <= 1.0:
            raise ValueError(f"neg_popularity must be in [0, 1], got {self.neg_popularity}")
        self.draw = _eligible_rows(self.pos, g.num_nodes[g.item_type], min_pos_degree)
        self.neg_pool = int(neg_pool)
        self.owner_rows = owner_rows
        self.pair_knn = pair_knn

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
        pick = uniform_subset(size, self.neg_pool, gen)
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
        indptr, at = self.draw
        trip_owner = owners.repeat_interleave(P)
        start, deg = indptr[trip_owner], indptr[trip_owner + 1] - indptr[trip_owner]
        off = torch.minimum((torch.rand(deg.numel(), dtype=torch.float64, generator=gen)
                             * deg).long(), deg - 1)
        entry = start + off if at is None else at[start + off].long()  # a position of p
        pos = p.indices[entry]
        pos_rank = None
        if self.positives_are_edges and g.interaction in g.edge_pos:
            pos_rank = g.edge_pos[g.interaction][p.perm[entry]]
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
        if self.pair_knn is not None:
            _add_pair_values(sub, g, owner_idx, torch.cat([pos_idx[:, None], neg_idx], 1),
                             self.pair_knn)
        return Batch(sub, owner_idx, pos_idx, neg_idx, pos_rank)


def _add_pair_values(sub: Subgraph, g: GraphData, owner_idx: Tensor, item_idx: Tensor,
                     knn: ItemKNN) -> None:
    """Add ``(owner, PAIR, item)`` edges for every local (owner, item) pair the batch scores
    (``owner_idx`` [T], ``item_idx`` [T, k]) with their item-kNN values on the whole training
    graph (``knn``; own edge left out) as ``edge_attr``, for the model's item-kNN term."""
    o = owner_idx[:, None].expand_as(item_idx).reshape(-1)
    t = item_idx.reshape(-1)
    et = (g.owner_type, PAIR, g.item_type)
    sub.edge_index[et] = torch.stack([o, t])
    sub.edge_attr[et] = knn.pairs(sub.n_id[g.owner_type][o], sub.n_id[g.item_type][t])


def _eligible_rows(p: CSR, num_items: int, min_degree: int) -> tuple[Tensor, Tensor | None]:
    """``p``'s rows restricted to items with at least ``min_degree`` owners in ``p`` (a row left
    empty keeps all its items), as ``(indptr, at)``: row ``o``'s entries are the positions
    ``at[indptr[o]:indptr[o + 1]]`` of ``p``'s CSR, through which a draw reads its item and its
    column of the edge list (``pos_rank``); ``at`` is None when every entry is kept. ``at`` is
    int32 and nothing else is kept per entry: every worker of a node holds its own (the CSR
    itself is the node's graph store), about 10 MB at the Kaggle file's 3.3 M fit edges."""
    if min_degree <= 1:
        return p.indptr, None
    item_deg = torch.bincount(p.indices, minlength=num_items)
    ok = item_deg[p.indices] >= min_degree
    row = torch.repeat_interleave(torch.arange(p.indptr.numel() - 1), p.degree())
    n_ok = torch.bincount(row[ok], minlength=p.indptr.numel() - 1)
    keep = ok | (n_ok[row] == 0)
    indptr = torch.zeros_like(p.indptr)
    indptr[1:] = torch.cumsum(torch.bincount(row[keep], minlength=p.indptr.numel() - 1), 0)
    dtype = torch.int32 if p.indices.numel() <= torch.iinfo(torch.int32).max else torch.int64
    return indptr, torch.nonzero(keep).flatten().to(dtype)


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

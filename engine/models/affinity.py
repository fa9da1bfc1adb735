r"""Exact owner–attribute affinity: a sparse score term beside the GAT's dot product.

For a node type :math:`T` linked to the items (an item's artists), let :math:`w_{j,a} =
1/|T(j)|` for each of item :math:`j`'s :math:`T`-neighbours :math:`a` (one artist: weight 1). For
an owner :math:`p` with message-passing items :math:`N(p)`, where item :math:`j` sits
:math:`r_j` places from the end of :math:`p`'s row (0 = the last one), and a *slot*
:math:`\rho` (the position the scored item would take), two counts per attribute node:

.. math::
    n_{p,a} = \sum_{j \in N(p)} w_{j,a}, \qquad
    m_{p,a}(\rho) = \sum_{j \in N(p),\ r_j > \rho} w_{j,a}\, e^{-(r_j - \rho - 1)/\tau},

and the term

.. math::
    \mathrm{aff}_T(p, t; \rho) = \sum_{a \in T(t)} w_{t,a} \big(\beta_{T} \log(1 + n_{p,a})
    + \gamma_{T} \log(1 + m_{p,a}(\rho))\big)

with :math:`\beta_T, \gamma_T` learnt: "how many of the playlist's tracks share this track's
artist", and "how many of the tracks just before this slot do", decaying with distance
(:math:`\tau` = ``tau``). A recommendation fills the slot after the row (:math:`\rho = -1`, so
:math:`m` weighs the last track by 1); a BPR triple scores its positive and negatives at the
positive's own position, counting only what came before it, as a held-out continuation would see
it. Where row order carries no time (the Kaggle file is sorted by track name) :math:`\gamma_T` is
learnt from that order all the same; what it gives there is not measured. An item without
positions (``edge_pos`` absent) gives :math:`m = 0`.

Both counts are exact sparse dot products, with one column per :math:`T` node: no collision
between artists, which a :math:`D`-dimensional embedding of 14k artists cannot avoid (random 64-d
directions overlap by about :math:`\pm 1/8`, the size of a one-track share in a 40-artist
playlist). Everything is read from the (sub)graph the model is given, so at evaluation only
message-passing (training) edges count, and a scored pair's own edge is always left out of its
counts: a training positive is counted against every *other* track of its playlist (no label
leak), as a held-out track is at test time. The sampler adds each seed owner's whole item row
and those items' :math:`T`-edges to the batch subgraph as ``ROW`` edges, which no GAT layer
reads (:func:`engine.graph.neighbours.add_owner_rows`), so the counts are exact while the messages
stay sampled; without them the counts are those of the sampled rows.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from engine.graph.ops import ROW, row_positions, segment_arange
from engine.graph.types import Subgraph
from engine.models.knn_term import KnnTerm

# Owners per dense [b, K] block in ``score_rows`` is chosen so that b * K stays below this.
_BLOCK_FLOATS = 1 << 24


@dataclass
class LinkAffinity:
    r"""The counts of one attribute type on one (sub)graph, in local indices.

    ``keys`` (sorted, ``p * K + a``) are the non-zero :math:`(p, a)`; ``n_sum`` and ``m_sum`` are
    :math:`n_{p,a}` and :math:`m_{p,a}(-1)` per key; ``seg_ptr`` / ``seg_pos`` / ``seg_w`` list
    each key's contributing items (their :math:`r_j` and :math:`w_{j,a}`), for :math:`m` at other
    slots. ``indptr`` / ``links`` / ``weights``: the items' attribute rows :math:`w_{t,a}` (CSR
    over the local items). ``row_keys`` (sorted ``p * num_items + j``) / ``row_pos``: the owner
    rows themselves, so that a scored pair's own edge is left out of its counts.
    """

    keys: Tensor
    n_sum: Tensor
    m_sum: Tensor
    seg_ptr: Tensor
    seg_pos: Tensor
    seg_w: Tensor
    indptr: Tensor
    links: Tensor
    weights: Tensor
    row_keys: Tensor
    row_pos: Tensor
    num_links: int  # K
    tau: float
    _b_mat: Tensor | None = field(default=None, repr=False)
    _slots: list | None = field(default=None, repr=False)

    def pairs(self, owner_idx: Tensor, item_idx: Tensor, slot: Tensor | None = None
              ) -> tuple[Tensor, Tensor]:
        r""":math:`(\sum_a w_{t,a}\log(1+n_{p,a}),\ \sum_a w_{t,a}\log(1+m_{p,a}(\rho)))` for
        local ``owner_idx`` and ``item_idx`` of one shape, without the pair's own edge when the
        item is in the owner's row (a training positive: every *other* track counts); ``slot``
        (same shape) is :math:`\rho`, default -1 (the slot after the row)."""
        shape = item_idx.shape
        zero = self.n_sum.new_zeros(shape)
        if self.keys.numel() == 0 or item_idx.numel() == 0:
            return zero, zero.clone()
        o, t = owner_idx.reshape(-1), item_idx.reshape(-1)
        n_items = self.indptr.numel() - 1
        member, r_own = self._own_edge(o * n_items + t)
        which, pos = row_positions(self.indptr, t)  # every (pair, attribute of its item)
        key = o[which] * self.num_links + self.links[pos]
        at = torch.searchsorted(self.keys, key).clamp(max=self.keys.numel() - 1)
        hit = self.keys[at] == key
        w = self.weights[pos]
        mine = member[which]
        n = torch.where(hit, self.n_sum[at], 0.0) - torch.where(mine, w, 0.0)
        rho = (torch.full_like(which, -1) if slot is None else slot.reshape(-1)[which])
        m = (torch.where(hit, self.m_sum[at], 0.0) if slot is None
             else self._recent_sum(at, hit, rho))
        d_own = r_own[which] - rho
        m = m - torch.where(mine & (d_own > 0), w * torch.exp(-(d_own - 1).clamp(min=0) / self.tau),
                            0.0)
        plain = torch.log1p(n.clamp(min=0)) * w
        recent = torch.log1p(m.clamp(min=0)) * w
        out_p = self.n_sum.new_zeros(t.numel()).index_add(0, which, plain)
        out_r = self.n_sum.new_zeros(t.numel()).index_add(0, which, recent)
        return out_p.view(shape), out_r.view(shape)

    def _own_edge(self, own: Tensor) -> tuple[Tensor, Tensor]:
        """For pair keys ``p * num_items + t``: whether (p, t) is an edge of the rows, and its
        position there (meaningless where it is not)."""
        if self.row_keys.numel() == 0:
            return torch.zeros_like(own, dtype=torch.bool), torch.zeros_like(own)
        at = torch.searchsorted(self.row_keys, own).clamp(max=self.row_keys.numel() - 1)
        return self.row_keys[at] == own, self.row_pos[at]

    def _recent_sum(self, at: Tensor, hit: Tensor, slot: Tensor) -> Tensor:
        r""":math:`m_{p,a}(\rho)` for keys ``at`` (where ``hit``) and slots ``slot``."""
        keys = torch.where(hit, at, 0)
        cnt = torch.where(hit, self.seg_ptr[keys + 1] - self.seg_ptr[keys], 0)
        which = torch.repeat_interleave(torch.arange(at.numel(), device=at.device), cnt)
        pos = self.seg_ptr[keys][which] + segment_arange(cnt)
        d = self.seg_pos[pos] - slot[which]  # > 0: the item came before the slot
        w = torch.where(d > 0, self.seg_w[pos] * torch.exp(-(d - 1).clamp(min=0) / self.tau),
                        0.0)
        return self.n_sum.new_zeros(at.numel()).index_add(0, which, w)

    def _item_matrix(self) -> Tensor:
        """:math:`B` as a sparse CSR [items, K], built once per instance (evaluation calls
        :meth:`score_rows` once per batch of owners)."""
        if self._b_mat is None:
            n_items = self.indptr.numel() - 1
            item = torch.repeat_interleave(torch.arange(n_items, device=self.indptr.device),
                                           self.indptr[1:] - self.indptr[:-1])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # sparse CSR is "beta"
                self._b_mat = torch.sparse_coo_tensor(
                    torch.stack([item, self.links]), self.weights,
                    (n_items, self.num_links)).coalesce().to_sparse_csr()
        return self._b_mat

    def _item_slots(self) -> list[tuple[Tensor, Tensor]]:
        """:math:`B` by slot: for k = 0, 1, ... (up to the most attributes an item has) each
        item's k-th attribute (in :meth:`_item_matrix` order) and its weight, 0 where it has
        fewer. Built once per instance."""
        if self._slots is None:
            b_mat = self._item_matrix()
            crow, col, val = b_mat.crow_indices(), b_mat.col_indices(), b_mat.values()
            deg, start = crow[1:] - crow[:-1], crow[:-1]
            self._slots = []
            for k in range(int(deg.max()) if deg.numel() else 0):
                has = deg > k
                at = torch.where(has, start + k, 0)
                self._slots.append((torch.where(has, col[at], 0), torch.where(has, val[at], 0.0)))
        return self._slots

    def score_rows(self, owner_ids: Tensor, num_items: int, beta: Tensor, gamma: Tensor
                   ) -> Tensor:
        r"""[b, num_items]: :math:`\beta \cdot` plain + :math:`\gamma \cdot` recent (slot -1) for
        local ``owner_ids`` (full ranking): dense :math:`A` rows times the sparse :math:`B^\top`,
        in blocks of owners. Items of an owner's own row keep their own edge in these counts
        (ranking masks them anyway)."""
        values = beta * torch.log1p(self.n_sum) + gamma * torch.log1p(self.m_sum)
        n_items = self.indptr.numel() - 1
        slots = self._item_slots()
        owner_of_key = self.keys // self.num_links
        step = max(1, _BLOCK_FLOATS // max(self.num_links, 1))
        parts = []
        for lo in range(0, owner_ids.numel(), step):  # blocks of owners, not single owners
            ids = owner_ids[lo:lo + step]
            lo_k = torch.searchsorted(owner_of_key, ids)
            cnt = torch.searchsorted(owner_of_key, ids, right=True) - lo_k
            row = torch.repeat_interleave(torch.arange(ids.numel(), device=ids.device), cnt)
            pos = lo_k[row] + segment_arange(cnt)
            dense = values.new_zeros(ids.numel(), self.num_links)
            dense[row, self.keys[pos] % self.num_links] = values[pos]
            # [b, N] = dense B^T as column gathers, one per attribute slot of the items: row-major
            # output, no transposed copy (the sparse product's [N, b] result cost 10x this)
            out = values.new_zeros(ids.numel(), n_items) if not slots else None
            for link, weight in slots:  # a loop over slots (an item's attributes), not items
                term = dense[:, link].mul_(weight)
                out = term if out is None else out.add_(term)
            parts.append(out)
        out = (parts[0] if len(parts) == 1 else torch.cat(parts)) if parts \
            else values.new_zeros(0, n_items)
        return out[:, :num_items]


def link_affinity(sub: Subgraph, owner_type: str, item_type: str, link_type: str,
                  tau: float = 2.0) -> LinkAffinity:
    """Build :class:`LinkAffinity` from ``sub``'s owner rows (the sampler's ``(item, ROW, owner)``
    edges when it added whole rows, else the ``item -> owner`` edges; with their ``edge_pos``) and
    the items' ``link -> item`` edges (their artists, ``"to"`` and ``ROW``)."""
    device = next(iter(sub.n_id.values())).device if sub.n_id else torch.device("cpu")
    empty = torch.empty(2, 0, dtype=torch.long, device=device)
    row_et = (item_type, ROW, owner_type)  # whole rows added by the sampler, if any
    if row_et not in sub.edge_index:
        row_et = (item_type, "to", owner_type)  # the full graph, or a sampled row
    rows = sub.edge_index.get(row_et, empty)  # j -> p
    links = torch.cat([sub.edge_index.get((link_type, rel, item_type), empty)
                       for rel in ("to", ROW)], 1)  # a -> t
    n_items, k = sub.num_nodes(item_type), max(sub.num_nodes(link_type), 1)
    key = torch.unique(links[1] * k + links[0])  # distinct (item, link), sorted by item
    item, link = key // k, key % k
    deg = torch.bincount(item, minlength=n_items)
    indptr = torch.zeros(n_items + 1, dtype=torch.long, device=device)
    indptr[1:] = torch.cumsum(deg, 0)
    weights = 1.0 / deg[item].clamp(min=1).float()
    # every (j, p) edge expanded over j's links, grouped by (p, a)
    r = sub.edge_pos.get(row_et)
    which, pos = row_positions(indptr, rows[0])
    pk = rows[1][which] * k + link[pos]
    r_e = r[which] if r is not None else torch.full_like(pk, 1 << 40)  # no order: m = 0
    order = torch.argsort(pk, stable=True)
    pk, r_e, w_e = pk[order], r_e[order], weights[pos][order]
    keys, counts = torch.unique_consecutive(pk, return_counts=True)
    seg_ptr = torch.zeros(keys.numel() + 1, dtype=torch.long, device=device)
    seg_ptr[1:] = torch.cumsum(counts, 0)
    seg = torch.repeat_interleave(torch.arange(keys.numel(), device=device), counts)
    n = torch.zeros(keys.numel(), device=device).index_add(0, seg, w_e)
    m = torch.zeros(keys.numel(), device=device).index_add(
        0, seg, w_e * torch.exp(-r_e.float() / tau))
    row_key, row_order = torch.sort(rows[1] * n_items + rows[0])
    row_pos = r[row_order] if r is not None else torch.full_like(row_key, 1 << 40)
    return LinkAffinity(keys, n, m, seg_ptr, r_e, w_e, indptr, link, weights, row_key, row_pos,
                        k, float(tau))


@dataclass
class ScoreBias:
    r"""The sparse terms of a model on one (sub)graph, added to the dot-product score:
    :math:`\sum_T \mathrm{aff}_T(p, t; \rho)` and, with ``knn``, :math:`\kappa \log(1 + k(p,
    t))` (:mod:`.knn_term`)."""

    terms: list[tuple[Tensor, Tensor, LinkAffinity]]  # (beta_T, gamma_T, counts of T)
    knn: tuple[Tensor, KnnTerm] | None = None  # (kappa, its values)

    def pairs(self, owner_idx: Tensor, item_idx: Tensor, slot: Tensor | None = None) -> Tensor:
        """The bias of each (owner, item) pair, local indices of one shape; ``slot`` as in
        :meth:`LinkAffinity.pairs`."""
        return sum(self.pair_parts(owner_idx, item_idx, slot).values(),
                   torch.zeros(item_idx.shape, device=item_idx.device))

    def pair_parts(self, owner_idx: Tensor, item_idx: Tensor, slot: Tensor | None = None
                   ) -> dict[str, Tensor]:
        """:meth:`pairs` by term: ``"affinity"`` (the attribute terms, where there are some)
        and ``"knn"`` (the item-kNN term, where there is one)."""
        out = {}
        if self.terms:
            total = 0.0
            for beta, gamma, aff in self.terms:
                plain, recent = aff.pairs(owner_idx, item_idx, slot)
                total = total + beta * plain + gamma * recent
            out["affinity"] = total
        if self.knn is not None:
            kappa, knn = self.knn
            out["knn"] = kappa * torch.log1p(knn.pairs(owner_idx, item_idx))
        return out

    @torch.no_grad()
    def rows(self, owner_ids: Tensor, num_items: int,
             parts: tuple[str, ...] = ("affinity", "knn")) -> Tensor:
        """[b, num_items] bias of every item for local ``owner_ids`` (slot -1): the sum of
        ``parts`` ("affinity": the attribute terms, "knn": the item-kNN term); no autograd."""
        out = torch.zeros(owner_ids.numel(), num_items, device=owner_ids.device)
        return self.add_rows_(out, owner_ids, parts)

    @torch.no_grad()
    def add_rows_(self, out: Tensor, owner_ids: Tensor,
                  parts: tuple[str, ...] = ("affinity", "knn")) -> Tensor:
        """:meth:`rows` added to ``out`` [b, num_items] in place (a full ranking's dot products):
        each term's rows are made once and added, so at most one [b, num_items] block exists
        beside ``out`` (at full size, :data:`engine.eval.evaluate.SCORE_BYTES` each: rank 0's
        validation peak)."""
        num_items = out.size(1)
        if "affinity" in parts:
            for beta, gamma, aff in self.terms:
                out += aff.score_rows(owner_ids, num_items, beta, gamma)
        if "knn" in parts and self.knn is not None:
            kappa, knn = self.knn
            out += knn.rows(owner_ids, num_items).log1p_().mul_(kappa)  # fresh rows: in place
        return out

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
it. Where row order carries no time (the Kaggle file is sorted by track name) :math:`\gamma_T`
has nothing to learn from and stays small. An item without positions (``edge_pos`` absent) gives
:math:`m = 0`.

Both counts are exact sparse dot products, with one column per :math:`T` node: no collision
between artists, which a :math:`D`-dimensional embedding of 14k artists cannot avoid (random 64-d
directions overlap by about :math:`\pm 1/8`, the size of a one-track share in a 40-artist
playlist). Everything is read from the (sub)graph the model is given, so it obeys the rules of
the messages: in training the sampler drops the batch's owner→positive edges, so a positive
never counts itself (no label leak), and at evaluation only message-passing (training) edges
count. The sampler must bring each seed owner's whole item row and those items' :math:`T`-edges
into the subgraph for the counts to be exact (:func:`engine.graph.sampler.owner_row_fanouts`);
with fewer, they are those of a sample.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor

from engine.graph.types import Subgraph

# Owners per dense [b, K] block in ``score_rows`` is chosen so that b * K stays below this.
_BLOCK_FLOATS = 1 << 24


def _segment_arange(counts: Tensor) -> Tensor:
    """``cat([arange(c) for c in counts])`` without the loop."""
    total = int(counts.sum())
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(total, device=counts.device) - torch.repeat_interleave(
        starts, counts, output_size=total)


def _expand_rows(indptr: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """(index into ``rows``, CSR position) for every entry of the CSR rows ``rows``."""
    cnt = indptr[rows + 1] - indptr[rows]
    which = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), cnt)
    return which, indptr[rows][which] + _segment_arange(cnt)


@dataclass
class LinkAffinity:
    r"""The counts of one attribute type on one (sub)graph, in local indices.

    ``keys`` (sorted, ``p * K + a``) are the non-zero :math:`(p, a)`; ``plain`` and ``recent``
    are :math:`\log(1 + n_{p,a})` and :math:`\log(1 + m_{p,a}(-1))` per key; ``seg_ptr`` /
    ``seg_pos`` / ``seg_w`` list each key's contributing items (their :math:`r_j` and
    :math:`w_{j,a}`), for :math:`m` at other slots. ``indptr`` / ``links`` / ``weights``: the
    items' attribute rows :math:`w_{t,a}` (CSR over the local items).
    """

    keys: Tensor
    plain: Tensor
    recent: Tensor
    seg_ptr: Tensor
    seg_pos: Tensor
    seg_w: Tensor
    indptr: Tensor
    links: Tensor
    weights: Tensor
    num_links: int  # K
    tau: float
    _b_mat: Tensor | None = field(default=None, repr=False)

    def pairs(self, owner_idx: Tensor, item_idx: Tensor, slot: Tensor | None = None
              ) -> tuple[Tensor, Tensor]:
        r""":math:`(\sum_a w_{t,a}\log(1+n_{p,a}),\ \sum_a w_{t,a}\log(1+m_{p,a}(\rho)))` for
        local ``owner_idx`` and ``item_idx`` of one shape; ``slot`` (same shape) is
        :math:`\rho`, default -1 (the slot after the row)."""
        shape = item_idx.shape
        zero = self.plain.new_zeros(shape)
        if self.keys.numel() == 0 or item_idx.numel() == 0:
            return zero, zero.clone()
        o, t = owner_idx.reshape(-1), item_idx.reshape(-1)
        which, pos = _expand_rows(self.indptr, t)  # every (pair, attribute of its item)
        key = o[which] * self.num_links + self.links[pos]
        at = torch.searchsorted(self.keys, key).clamp(max=self.keys.numel() - 1)
        hit = self.keys[at] == key
        w = self.weights[pos]
        plain = torch.where(hit, self.plain[at], 0.0) * w
        if slot is None:
            recent = torch.where(hit, self.recent[at], 0.0) * w
        else:
            recent = self._recent_at(at, hit, slot.reshape(-1)[which]) * w
        out_p = self.plain.new_zeros(t.numel()).index_add(0, which, plain)
        out_r = self.plain.new_zeros(t.numel()).index_add(0, which, recent)
        return out_p.view(shape), out_r.view(shape)

    def _recent_at(self, at: Tensor, hit: Tensor, slot: Tensor) -> Tensor:
        r""":math:`\log(1 + m_{p,a}(\rho))` for keys ``at`` (where ``hit``) and slots ``slot``."""
        keys = torch.where(hit, at, 0)
        cnt = torch.where(hit, self.seg_ptr[keys + 1] - self.seg_ptr[keys], 0)
        which = torch.repeat_interleave(torch.arange(at.numel(), device=at.device), cnt)
        pos = self.seg_ptr[keys][which] + _segment_arange(cnt)
        d = self.seg_pos[pos] - slot[which]  # > 0: the item came before the slot
        w = torch.where(d > 0, self.seg_w[pos] * torch.exp(-(d - 1).clamp(min=0) / self.tau),
                        0.0)
        return torch.log1p(self.plain.new_zeros(at.numel()).index_add(0, which, w))

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

    def score_rows(self, owner_ids: Tensor, num_items: int, beta: Tensor, gamma: Tensor
                   ) -> Tensor:
        r"""[b, num_items]: :math:`\beta \cdot` plain + :math:`\gamma \cdot` recent (slot -1) for
        local ``owner_ids`` (full ranking): dense :math:`A` rows times the sparse :math:`B^\top`,
        in blocks of owners."""
        values = beta * self.plain + gamma * self.recent
        n_items = self.indptr.numel() - 1
        b_mat = self._item_matrix()
        owner_of_key = self.keys // self.num_links
        step = max(1, _BLOCK_FLOATS // max(self.num_links, 1))
        parts = []
        for lo in range(0, owner_ids.numel(), step):  # blocks of owners, not single owners
            ids = owner_ids[lo:lo + step]
            lo_k = torch.searchsorted(owner_of_key, ids)
            cnt = torch.searchsorted(owner_of_key, ids, right=True) - lo_k
            row = torch.repeat_interleave(torch.arange(ids.numel(), device=ids.device), cnt)
            pos = lo_k[row] + _segment_arange(cnt)
            dense = values.new_zeros(ids.numel(), self.num_links)
            dense[row, self.keys[pos] % self.num_links] = values[pos]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                parts.append((b_mat @ dense.T).T)  # [b, N]
        out = torch.cat(parts) if parts else values.new_zeros(0, n_items)
        return out[:, :num_items]


def link_affinity(sub: Subgraph, owner_type: str, item_type: str, link_type: str,
                  tau: float = 2.0) -> LinkAffinity:
    """Build :class:`LinkAffinity` from ``sub``'s ``item -> owner`` edges (the owners' item rows,
    with their ``edge_pos``) and ``link -> item`` edges (the items' artists), as the sampler
    draws them."""
    device = next(iter(sub.n_id.values())).device if sub.n_id else torch.device("cpu")
    empty = torch.empty(2, 0, dtype=torch.long, device=device)
    row_et = (item_type, "to", owner_type)
    rows = sub.edge_index.get(row_et, empty)  # j -> p
    links = sub.edge_index.get((link_type, "to", item_type), empty)  # a -> t
    n_items, k = sub.num_nodes(item_type), max(sub.num_nodes(link_type), 1)
    key = torch.unique(links[1] * k + links[0])  # distinct (item, link), sorted by item
    item, link = key // k, key % k
    deg = torch.bincount(item, minlength=n_items)
    indptr = torch.zeros(n_items + 1, dtype=torch.long, device=device)
    indptr[1:] = torch.cumsum(deg, 0)
    weights = 1.0 / deg[item].clamp(min=1).float()
    # every (j, p) edge expanded over j's links, grouped by (p, a)
    r = sub.edge_pos.get(row_et)
    which, pos = _expand_rows(indptr, rows[0])
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
    return LinkAffinity(keys, torch.log1p(n), torch.log1p(m), seg_ptr, r_e, w_e, indptr, link,
                        weights, k, float(tau))


@dataclass
class ScoreBias:
    r"""The affinity terms of a model on one (sub)graph: :math:`\sum_T \mathrm{aff}_T(p, t;
    \rho)`, added to the dot-product score."""

    terms: list[tuple[Tensor, Tensor, LinkAffinity]]  # (beta_T, gamma_T, counts of T)

    def pairs(self, owner_idx: Tensor, item_idx: Tensor, slot: Tensor | None = None) -> Tensor:
        """The bias of each (owner, item) pair, local indices of one shape; ``slot`` as in
        :meth:`LinkAffinity.pairs`."""
        out = 0.0
        for beta, gamma, aff in self.terms:
            plain, recent = aff.pairs(owner_idx, item_idx, slot)
            out = out + beta * plain + gamma * recent
        return out

    def rows(self, owner_ids: Tensor, num_items: int) -> Tensor:
        """[b, num_items] bias of every item for local ``owner_ids`` (slot -1)."""
        return sum(aff.score_rows(owner_ids, num_items, beta, gamma)
                   for beta, gamma, aff in self.terms)

r"""Exact item-kNN scores from the training owner x item matrix, with a pair's own edge left out.

For owners :math:`p` with training rows :math:`R(p)` of :math:`n_p` items and item degrees
:math:`d_j` (their number of owners), the item-kNN score with exponents :math:`(\beta, \lambda)` is

.. math::
    k(p, t) = \sum_{j \in R(p),\, j \ne t} \frac{C_{jt}}{d_j^{1/2}\, d_t^{\beta}}, \qquad
    C_{jt} = \sum_{q:\, j, t \in R(q)} n_q^{-\lambda}.

:math:`(\beta, \lambda) = (1/2, 0)` is the cosine similarity of the protocol's item-kNN baseline
(the default here). A smaller :math:`\beta` penalises a popular candidate less, and
:math:`\lambda > 0` makes a co-occurrence in a long playlist count less than one in a short one
(as RP3beta's walk does); PlaylistGAT's term uses its own pair, chosen on validation.

It is computed through the owners: :math:`d_t^{-\beta} \sum_{q \ni t} n_q^{-\lambda} M_{pq}` with
:math:`M_{pq} = \sum_{j \in R(p) \cap R(q)} d_j^{-1/2}`. At test time a held-out track :math:`t`
is not in :math:`R(p)`, so :math:`p` adds nothing to :math:`C_{jt}` or :math:`d_t`. A training
pair :math:`(p, t)` with :math:`t \in R(p)` is scored the same way, as if its edge were held
out (``own``): :math:`q = p` and :math:`j = t` are left out and :math:`d_t` loses one,

.. math::
    k^{-}(p, t) = \frac{\sum_{q \ni t} n_q^{-\lambda} M_{pq} - n_p^{-\lambda} M_{pp}
        - (S_t - n_p^{-\lambda})\, d_t^{-1/2}}{(d_t - 1)^{\beta}}, \qquad
    S_t = \sum_{q \ni t} n_q^{-\lambda}

(0 when :math:`d_t = 1`: no other owner). Without that, a positive would be lifted by its own
playlist's co-occurrences, a label leak that held-out tracks never have. The degrees :math:`d_j`
of the row's items and the other owners' lengths :math:`n_q` keep :math:`p`'s edges in both
cases, as they do at test time.

No loop over owners or items: :math:`M` is a scatter into a dense ``[owners, all owners]`` block
(for blocks of a batch's owners), the pairs a scatter over the items' owner lists
(:math:`\sum_{(p,t)} d_t`), full rows a sparse x dense product. The protocol's item-kNN baseline
(:func:`engine.eval.baselines.item_knn_score_fn`) is :meth:`ItemKNN.rows_of` with the cosine
exponents.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from engine.graph.ops import row_lookup, row_positions
from engine.graph.types import CSR, GraphData, rev

# Dense floats of a block of owners' overlaps [b, owners] (:meth:`ItemKNN.pairs`; twice that in
# :meth:`ItemKNN.rows_of`, whose [b, items] output is as large as its caller's batch).
BLOCK_FLOATS = 1 << 24
# (pop_exp, len_exp) of the cosine similarity: the protocol's item-kNN baseline
COSINE = (0.5, 0.0)


def _inv_sqrt(deg: Tensor) -> Tensor:
    return _inv_pow(deg, 0.5)


def _inv_pow(deg: Tensor, exp: float) -> Tensor:
    """:math:`d^{-e}` where :math:`d > 0`, else 0."""
    return torch.where(deg > 0, deg.clamp(min=1).float().pow(-exp), torch.zeros(()))


def check_exponents(pop_exp: float, len_exp: float) -> None:
    r"""The exponents :math:`(\beta, \lambda)` of :class:`ItemKNN`: each in [0, 1]."""
    for name, v in (("pop_exp", pop_exp), ("len_exp", len_exp)):
        if not 0 <= v <= 1:
            raise ValueError(f"item-kNN {name} must be in [0, 1], got {v}")


class ItemKNN:
    r"""Item-kNN scores over one owner -> item CSR (``rows``, the training edges; a pair's
    duplicates must be gone, as in every graph this project builds), with exponents
    ``pop_exp`` :math:`\beta` and ``len_exp`` :math:`\lambda` (module docstring; the
    defaults are the cosine)."""

    def __init__(self, rows: CSR, num_items: int, cols: CSR | None = None,
                 pop_exp: float = COSINE[0], len_exp: float = COSINE[1]) -> None:
        """``cols``: the transpose of ``rows`` (item -> owner), when the graph holds it (a
        graph's reverse edge type: shared by the workers of a node, not copied); else built."""
        check_exponents(pop_exp, len_exp)
        self.rows, self.num_items = rows, int(num_items)
        self.num_owners = rows.indptr.numel() - 1
        self.pop_exp, self.len_exp = float(pop_exp), float(len_exp)
        if cols is None:
            owner = torch.repeat_interleave(torch.arange(self.num_owners), rows.degree())
            cols = CSR.from_edge_index(torch.stack([rows.indices, owner]), self.num_items)
        self.cols = cols
        self.deg = self.cols.degree()
        self.inv = _inv_sqrt(self.deg)  # d_j^-1/2 of the row's items
        self.cosine = (self.pop_exp, self.len_exp) == COSINE
        self.owner_w = _inv_pow(rows.degree(), self.len_exp)  # n_q^-lambda (cosine: 1)
        self.s_t = torch.zeros(self.num_items).index_add_(  # S_t (cosine: d_t)
            0, torch.repeat_interleave(torch.arange(self.num_items), self.deg),
            self.owner_w[self.cols.indices])
        self._xn_t: Tensor | None = None
        self._yn_t: Tensor | None = None

    @classmethod
    def of_graph(cls, g: GraphData, pop_exp: float = COSINE[0], len_exp: float = COSINE[1]) -> ItemKNN:
        """The item-kNN scorer of ``g``'s interaction edges (the fit edges of a fit graph)."""
        return cls(g.csr[g.interaction], g.num_nodes[g.item_type], g.csr.get(rev(g.interaction)),
                   pop_exp, len_exp)

    @classmethod
    def of_edges(cls, edges: Tensor, num_owners: int, num_items: int,
                 pop_exp: float = COSINE[0], len_exp: float = COSINE[1]) -> ItemKNN:
        """From an [2, E] (owner, item) edge list, duplicates allowed (they count once)."""
        key = torch.unique(edges[0].cpu().long() * num_items + edges[1].cpu().long())
        return cls(CSR.from_edge_index(torch.stack([key // num_items, key % num_items]),
                                       num_owners), num_items, pop_exp=pop_exp, len_exp=len_exp)

    def _item_major(self, values: Tensor) -> Tensor:
        """A sparse CSR [items, owners] on the item -> owner CSR, with ``values`` per edge."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # sparse CSR is "beta"
            return torch.sparse_csr_tensor(self.cols.indptr, self.cols.indices, values,
                                           (self.num_items, self.num_owners),
                                           check_invariants=False)

    def xn_t(self) -> Tensor:
        r""":math:`(X D^{-1/2})^\top` as a sparse CSR [items, owners], built once."""
        if self._xn_t is None:
            item = torch.repeat_interleave(torch.arange(self.num_items), self.deg)
            self._xn_t = self._item_major(self.inv[item])
        return self._xn_t

    def yn_t(self) -> Tensor:
        r""":math:`(N^{-\lambda} X D^{-\beta})^\top` [items, owners], the right-hand factor of
        :meth:`rows_of` (:meth:`xn_t` for the cosine), built once."""
        if self.cosine:
            return self.xn_t()
        if self._yn_t is None:
            item = torch.repeat_interleave(torch.arange(self.num_items), self.deg)
            self._yn_t = self._item_major(_inv_pow(self.deg, self.pop_exp)[item]
                                          * self.owner_w[self.cols.indices])
        return self._yn_t

    def overlaps(self, owners: Tensor) -> Tensor:
        r""":math:`M` [len(owners), num_owners]: :math:`\sum_{j \in R(p) \cap R(q)} d_j^{-1/2}`,
        one scatter of :math:`d_j^{-1/2}` over the owner lists of the rows' items
        (:math:`\sum_{j \in R(p)} d_j` entries). Not torch's sparse x sparse product: on CPU
        (torch 2.13) it keeps up to a megabyte a call, gigabytes over an evaluation or an epoch
        (``tests/test_knn_term.py::test_overlaps_match_a_dense_product_and_do_not_leak``)."""
        which, pos = row_positions(self.rows.indptr, owners)
        item = self.rows.indices[pos]
        pair, at = row_positions(self.cols.indptr, item)  # (row item, one of its owners)
        flat = which[pair] * self.num_owners + self.cols.indices[at]
        out = torch.zeros(owners.numel() * self.num_owners)
        return out.index_add_(0, flat, self.inv[item][pair]).view(owners.numel(), self.num_owners)

    @property
    def num_edges(self) -> int:
        return int(self.rows.indices.numel())

    def is_edge(self, owner: Tensor, item: Tensor) -> Tensor:
        """Whether each (owner, item) is an edge of ``rows``: a binary search in the owner's
        row (sorted items), so the scorer keeps no array per edge of its own (a worker's
        share of the node's graph store is all it reads)."""
        return row_lookup(self.rows.indptr, self.rows.indices, owner, item)[1]

    def pairs(self, owner: Tensor, item: Tensor) -> Tensor:
        r""":math:`k(p, t)` for global ``owner`` / ``item`` ids of one shape, :math:`k^{-}` where
        :math:`t \in R(p)` (module docstring); :math:`M` is built for blocks of distinct owners,
        so that its dense rows stay below :data:`BLOCK_FLOATS` whatever the number of owners."""
        shape = item.shape
        o, t = owner.reshape(-1).long(), item.reshape(-1).long()
        out = torch.zeros(t.numel())
        if t.numel() == 0:
            return out.view(shape)
        uniq, local = torch.unique(o, return_inverse=True)
        step = max(1, BLOCK_FLOATS // max(self.num_owners, 1))
        for lo in range(0, uniq.numel(), step):  # blocks of owners, one for a batch of today's
            at = torch.nonzero((local >= lo) & (local < lo + step)).flatten()
            out[at] = self._pairs(self.overlaps(uniq[lo:lo + step]), local[at] - lo, o[at], t[at])
        return out.view(shape)

    def _pairs(self, m: Tensor, row: Tensor, o: Tensor, t: Tensor) -> Tensor:
        """:meth:`pairs` for owners ``o`` whose overlaps are rows ``row`` of ``m``."""
        which, pos = row_positions(self.cols.indptr, t)  # (pair, q owning t)
        q = self.cols.indices[pos]
        d_t, w = self.deg[t], self.owner_w
        raw = torch.zeros(t.numel()).index_add_(0, which, m[row[which], q] * w[q])
        loo = raw - w[o] * m[row, o] - (self.s_t[t] - w[o]) * self.inv[t]
        out = torch.where(self.is_edge(o, t), loo * _inv_pow(d_t - 1, self.pop_exp),
                          raw * _inv_pow(d_t, self.pop_exp))
        return out.clamp(min=0)  # clamp: float rounding of the subtraction

    def rows_of(self, owners: Tensor) -> Tensor:
        r"""[len(owners), num_items]: :math:`k` of every item (full ranking; an owner's own items
        keep their own edge, which ranking masks anyway), in blocks of owners:
        :math:`(X_b (X D^{-1/2})^\top)\, N^{-\lambda} X D^{-\beta}`; the item x item matrix
        never exists."""
        owners = owners.cpu().long()
        yn_t = self.yn_t()
        # the [b, owners] overlaps bound a block; the [b, items] output is the caller's batch
        step = max(1, 2 * BLOCK_FLOATS // max(self.num_owners, 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # sparse CSR is "beta"
            parts = [(yn_t @ self.overlaps(owners[lo:lo + step]).T).T
                     for lo in range(0, owners.numel(), step)]  # blocks of owners
        if len(parts) == 1:  # a transposed view: a copy would cost as much as the product
            return parts[0]
        return torch.cat(parts) if parts else torch.zeros(0, self.num_items)

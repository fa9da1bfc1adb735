r"""Exact item-kNN scores from the training owner x item matrix, with a pair's own edge left out.

For owners :math:`p` with training rows :math:`R(p)` and item degrees :math:`d_j` (their number
of owners), the cosine item-kNN score (the protocol's item-kNN baseline) is

.. math::
    k(p, t) = \sum_{j \in R(p),\, j \ne t} \frac{C_{jt}}{\sqrt{d_j\, d_t}}, \qquad
    C_{jt} = |\{q : j, t \in R(q)\}|,

computed through the owners: :math:`\sum_{q \ni t} M_{pq} / \sqrt{d_t}` with
:math:`M_{pq} = \sum_{j \in R(p) \cap R(q)} d_j^{-1/2}`. At test time a held-out track :math:`t`
is not in :math:`R(p)`, so :math:`p` adds nothing to :math:`C_{jt}` or :math:`d_t`. A training
pair :math:`(p, t)` with :math:`t \in R(p)` is scored the same way, as if its edge were held
out (``own``): :math:`q = p` and :math:`j = t` are left out and :math:`d_t` loses one,

.. math::
    k^{-}(p, t) = \frac{\sum_{q \ni t} M_{pq} - M_{pp} - (d_t - 1)\, d_t^{-1/2}}{\sqrt{d_t - 1}}

(0 when :math:`d_t = 1`: no other owner). Without that, a positive would be lifted by its own
playlist's co-occurrences, a label leak that held-out tracks never have. The degrees :math:`d_j`
of the row's items keep :math:`p` in both cases, as they do at test time.

No loop over owners or items: :math:`M` is a sparse product made dense (``[owners, all owners]``
for blocks of a batch's owners), the pairs a scatter over the items' owner lists
(:math:`\sum_{(p,t)} d_t`), full rows a sparse x dense product. The protocol's item-kNN baseline
(:func:`engine.eval.baselines.item_knn_score_fn`) is :meth:`ItemKNN.rows_of`.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from engine.graph.ops import row_positions
from engine.graph.types import CSR, GraphData, rev

# Dense floats of a block of owners' overlaps [b, owners] (:meth:`ItemKNN.pairs`; twice that in
# :meth:`ItemKNN.rows_of`, whose [b, items] output is as large as its caller's batch).
BLOCK_FLOATS = 1 << 24


def _inv_sqrt(deg: Tensor) -> Tensor:
    return torch.where(deg > 0, deg.clamp(min=1).float().rsqrt(), torch.zeros(()))


class ItemKNN:
    """Item-kNN scores over one owner -> item CSR (``rows``, the training edges; a pair's
    duplicates must be gone, as in every graph this project builds)."""

    def __init__(self, rows: CSR, num_items: int, cols: CSR | None = None) -> None:
        """``cols``: the transpose of ``rows`` (item -> owner), when the graph holds it (a
        graph's reverse edge type: shared by the workers of a node, not copied); else built."""
        self.rows, self.num_items = rows, int(num_items)
        self.num_owners = rows.indptr.numel() - 1
        owner = torch.repeat_interleave(torch.arange(self.num_owners), rows.degree())
        self.keys = owner * self.num_items + rows.indices  # sorted: rows in order, items sorted
        self.cols = cols if cols is not None else CSR.from_edge_index(
            torch.stack([rows.indices, owner]), self.num_items)
        self.deg = self.cols.degree()
        self.inv = _inv_sqrt(self.deg)
        self._xn_t: Tensor | None = None

    @classmethod
    def of_graph(cls, g: GraphData) -> ItemKNN:
        """The item-kNN scorer of ``g``'s interaction edges (the fit edges of a fit graph)."""
        return cls(g.csr[g.interaction], g.num_nodes[g.item_type], g.csr.get(rev(g.interaction)))

    @classmethod
    def of_edges(cls, edges: Tensor, num_owners: int, num_items: int) -> ItemKNN:
        """From an [2, E] (owner, item) edge list, duplicates allowed (they count once)."""
        key = torch.unique(edges[0].cpu().long() * num_items + edges[1].cpu().long())
        return cls(CSR.from_edge_index(torch.stack([key // num_items, key % num_items]),
                                       num_owners), num_items)

    def xn_t(self) -> Tensor:
        """:math:`(X D^{-1/2})^\top` as a sparse CSR [items, owners], built once."""
        if self._xn_t is None:
            item = torch.repeat_interleave(torch.arange(self.num_items), self.deg)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # sparse CSR is "beta"
                self._xn_t = torch.sparse_csr_tensor(
                    self.cols.indptr, self.cols.indices, self.inv[item],
                    (self.num_items, self.num_owners), check_invariants=False)
        return self._xn_t

    def overlaps(self, owners: Tensor) -> Tensor:
        r""":math:`M` [len(owners), num_owners]: :math:`\sum_{j \in R(p) \cap R(q)} d_j^{-1/2}`,
        the sparse product :math:`X_b (X D^{-1/2})^\top` made dense."""
        _, pos = row_positions(self.rows.indptr, owners)
        crow = torch.zeros(owners.numel() + 1, dtype=torch.long)
        crow[1:] = torch.cumsum(self.rows.indptr[owners + 1] - self.rows.indptr[owners], 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            x_b = torch.sparse_csr_tensor(crow, self.rows.indices[pos], torch.ones(pos.numel()),
                                          (owners.numel(), self.num_items),
                                          check_invariants=False)
            return (x_b @ self.xn_t()).to_dense()

    def is_edge(self, owner: Tensor, item: Tensor) -> Tensor:
        """Whether each (owner, item) is an edge of ``rows``."""
        if self.keys.numel() == 0:
            return torch.zeros_like(item, dtype=torch.bool)
        key = owner * self.num_items + item
        at = torch.searchsorted(self.keys, key).clamp(max=self.keys.numel() - 1)
        return self.keys[at] == key

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
        raw = torch.zeros(t.numel()).index_add_(0, which, m[row[which], self.cols.indices[pos]])
        d_t = self.deg[t]
        loo = raw - m[row, o] - (d_t - 1).float() * self.inv[t]
        out = torch.where(self.is_edge(o, t), loo * _inv_sqrt(d_t - 1), raw * self.inv[t])
        return out.clamp(min=0)  # clamp: float rounding of the subtraction

    def rows_of(self, owners: Tensor) -> Tensor:
        r"""[len(owners), num_items]: :math:`k` of every item (full ranking; an owner's own items
        keep their own edge, which ranking masks anyway), in blocks of owners:
        :math:`(X_b (X D^{-1/2})^\top)\, X D^{-1/2}`; the item x item cosine matrix never exists."""
        owners = owners.cpu().long()
        xn_t = self.xn_t()
        # the [b, owners] overlaps bound a block; the [b, items] output is the caller's batch
        step = max(1, 2 * BLOCK_FLOATS // max(self.num_owners, 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # sparse CSR is "beta"
            parts = [(xn_t @ self.overlaps(owners[lo:lo + step]).T).T
                     for lo in range(0, owners.numel(), step)]  # blocks of owners
        if len(parts) == 1:  # a transposed view: a copy would cost as much as the product
            return parts[0]
        return torch.cat(parts) if parts else torch.zeros(0, self.num_items)

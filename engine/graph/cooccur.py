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

Everything is a scatter over CSR rows (no loop over owners or items): the work of a batch is
:math:`\sum_{p}\sum_{j \in R(p)} d_j` for :math:`M` plus :math:`\sum_{(p,t)} d_t` for the pairs,
and :math:`M` is dense ``[owners, all owners]`` for blocks of a batch's owners.
"""
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from engine.graph.ops import row_positions
from engine.graph.types import CSR, GraphData, rev

# Owners per dense [b, num_owners] block of :meth:`ItemKNN.rows`.
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

    @classmethod
    def of_graph(cls, g: GraphData) -> ItemKNN:
        """The item-kNN scorer of ``g``'s interaction edges (the fit edges of a fit graph)."""
        return cls(g.csr[g.interaction], g.num_nodes[g.item_type], g.csr.get(rev(g.interaction)))

    def overlaps(self, owners: Tensor) -> Tensor:
        r""":math:`M` [len(owners), num_owners]: :math:`\sum_{j \in R(p) \cap R(q)} d_j^{-1/2}`."""
        which, pos = row_positions(self.rows.indptr, owners)  # (owner, j)
        j = self.rows.indices[pos]
        which2, pos2 = row_positions(self.cols.indptr, j)  # (owner, j, q)
        m = torch.zeros(owners.numel() * self.num_owners)
        m.index_add_(0, which[which2] * self.num_owners + self.cols.indices[pos2],
                     self.inv[j][which2])
        return m.view(owners.numel(), self.num_owners)

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
        """[len(owners), num_items]: :math:`k` of every item (full ranking; an owner's own items
        keep their own edge, which ranking masks anyway), in blocks of owners: :math:`M` times
        the sparse :math:`X D^{-1/2}`."""
        owners = owners.long()
        item = torch.repeat_interleave(torch.arange(self.num_items), self.deg)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # sparse CSR is "beta"
            xn_t = torch.sparse_csr_tensor(self.cols.indptr, self.cols.indices, self.inv[item],
                                           (self.num_items, self.num_owners))
            step = max(1, BLOCK_FLOATS // max(self.num_owners, self.num_items, 1))
            parts = [(xn_t @ self.overlaps(owners[lo:lo + step]).T).T
                     for lo in range(0, owners.numel(), step)]  # blocks of owners
        return torch.cat(parts) if parts else torch.zeros(0, self.num_items)

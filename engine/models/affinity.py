r"""Exact owner–attribute affinity: a sparse score term beside the GAT's dot product.

For a node type :math:`T` linked to the items (an item's artists), let :math:`w_{j,a} =
1/|T(j)|` for each of item :math:`j`'s :math:`T`-neighbours :math:`a` (one artist: weight 1), and
for an owner :math:`p` with message-passing items :math:`N(p)`

.. math::
    n_{p,a} = \sum_{j \in N(p)} w_{j,a}, \qquad
    \mathrm{aff}_T(p, t) = \sum_{a \in T(t)} w_{t,a} \log(1 + n_{p,a}),

"how many of the playlist's tracks share this track's artist", on a log scale. The model adds
:math:`\beta_T\,\mathrm{aff}_T(p, t)` to :math:`\langle \mathbf{c}_p, \mathbf{c}_t\rangle`, with
:math:`\beta_T` learnt. It is a dot product of two sparse vectors, :math:`A_p[a] = \log(1 +
n_{p,a})` and :math:`B_t[a] = w_{t,a}`, with one column per :math:`T` node: no collision between
artists, which a :math:`D`-dimensional embedding of 14k artists cannot avoid (random 64-d
directions overlap by about :math:`\pm 1/8`, the size of a one-track share in a 40-artist
playlist).

Everything is read from the (sub)graph the model is given, so it obeys the same rules as the
messages: in training the sampler drops the batch's owner→positive edges, so a positive's own
edge never counts towards :math:`n_{p,a}` (no label leak), and at evaluation only message-passing
(training) edges count. The sampler must bring each seed owner's whole item row and those items'
:math:`T`-edges into the subgraph for the counts to be exact
(:func:`engine.graph.sampler.owner_row_fanouts`); with fewer, they are those of a sample.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.graph.types import Subgraph

# Owners per dense [b, K] block in ``score_rows`` is chosen so that b * K stays below this.
_BLOCK_FLOATS = 1 << 24


def _segment_arange(counts: Tensor) -> Tensor:
    total = int(counts.sum())
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(total, device=counts.device) - torch.repeat_interleave(
        starts, counts, output_size=total)


@dataclass
class LinkAffinity:
    r""":math:`\mathrm{aff}_T` on one (sub)graph, in local indices (see the module docstring).

    ``keys``/``values``: the non-zero :math:`A_p[a]` with ``key = p * K + a``, sorted;
    ``indptr``/``links``/``weights``: :math:`B` as item rows (CSR over the local items).
    """

    keys: Tensor
    values: Tensor
    indptr: Tensor
    links: Tensor
    weights: Tensor
    num_links: int  # K

    def pairs(self, owner_idx: Tensor, item_idx: Tensor) -> Tensor:
        """:math:`\\mathrm{aff}(p, t)` for local ``owner_idx`` and ``item_idx`` of one shape."""
        o, t = owner_idx.reshape(-1), item_idx.reshape(-1)
        if self.keys.numel() == 0:
            return self.values.new_zeros(item_idx.shape)
        deg = (self.indptr[t + 1] - self.indptr[t])
        which = torch.repeat_interleave(torch.arange(t.numel(), device=t.device), deg)
        pos = self.indptr[t][which] + _segment_arange(deg)
        key = o[which] * self.num_links + self.links[pos]
        at = torch.searchsorted(self.keys, key).clamp(max=self.keys.numel() - 1)
        hit = self.keys[at] == key
        contrib = torch.where(hit, self.values[at], self.values.new_zeros(()))
        out = self.values.new_zeros(t.numel()).index_add(0, which, contrib * self.weights[pos])
        return out.view(item_idx.shape)

    def score_rows(self, owner_ids: Tensor, num_items: int) -> Tensor:
        """[b, num_items] :math:`\\mathrm{aff}(p, \\cdot)` for local ``owner_ids`` (full ranking):
        dense :math:`A` rows times the sparse :math:`B^\\top`, in blocks of owners."""
        n_items = self.indptr.numel() - 1
        item = torch.repeat_interleave(torch.arange(n_items), self.indptr[1:] - self.indptr[:-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # sparse CSR is "beta"
            b_mat = torch.sparse_coo_tensor(torch.stack([item, self.links]), self.weights,
                                            (n_items, self.num_links)).coalesce().to_sparse_csr()
        owner_of_key = self.keys // self.num_links
        step = max(1, _BLOCK_FLOATS // max(self.num_links, 1))
        parts = []
        for lo in range(0, owner_ids.numel(), step):
            ids = owner_ids[lo:lo + step]
            lo_k = torch.searchsorted(owner_of_key, ids)
            hi_k = torch.searchsorted(owner_of_key, ids, right=True)
            cnt = hi_k - lo_k
            row = torch.repeat_interleave(torch.arange(ids.numel()), cnt)
            pos = lo_k[row] + _segment_arange(cnt)
            dense = self.values.new_zeros(ids.numel(), self.num_links)
            dense[row, self.keys[pos] % self.num_links] = self.values[pos]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                parts.append((b_mat @ dense.T).T)  # [b, N]
        out = torch.cat(parts) if parts else self.values.new_zeros(0, n_items)
        return out[:, :num_items]


def link_affinity(sub: Subgraph, owner_type: str, item_type: str, link_type: str
                  ) -> LinkAffinity:
    """Build :class:`LinkAffinity` from ``sub``'s ``item -> owner`` edges (the owners' item rows)
    and ``link -> item`` edges (the items' artists), as the sampler draws them."""
    device = next(iter(sub.n_id.values())).device if sub.n_id else torch.device("cpu")
    empty = torch.empty(2, 0, dtype=torch.long, device=device)
    rows = sub.edge_index.get((item_type, "to", owner_type), empty)  # j -> p
    links = sub.edge_index.get((link_type, "to", item_type), empty)  # a -> t
    n_items, k = sub.num_nodes(item_type), max(sub.num_nodes(link_type), 1)
    key = torch.unique(links[1] * k + links[0])  # distinct (item, link), sorted by item
    item, link = key // k, key % k
    deg = torch.bincount(item, minlength=n_items)
    indptr = torch.zeros(n_items + 1, dtype=torch.long, device=device)
    indptr[1:] = torch.cumsum(deg, 0)
    weights = 1.0 / deg[item].clamp(min=1).float()
    # n_{p,a}: expand every (j, p) edge over j's links
    j, p = rows[0], rows[1]
    cnt = deg[j]
    pos = torch.repeat_interleave(indptr[j], cnt) + _segment_arange(cnt)
    pk = torch.repeat_interleave(p, cnt) * k + link[pos]
    keys, inv = torch.unique(pk, return_inverse=True)
    n = torch.zeros(keys.numel(), device=device).index_add(0, inv, weights[pos])
    return LinkAffinity(keys, torch.log1p(n), indptr, link, weights, k)


@dataclass
class ScoreBias:
    r"""The affinity terms of a model on one (sub)graph: :math:`\sum_T \beta_T
    \mathrm{aff}_T(p, t)`, added to the dot-product score."""

    terms: list[tuple[Tensor, LinkAffinity]]  # (beta_T, affinity of T)

    def pairs(self, owner_idx: Tensor, item_idx: Tensor) -> Tensor:
        """The bias of each (owner, item) pair, local indices of one shape."""
        return sum(beta * aff.pairs(owner_idx, item_idx) for beta, aff in self.terms)

    def rows(self, owner_ids: Tensor, num_items: int) -> Tensor:
        """[b, num_items] bias of every item for local ``owner_ids``."""
        return sum(beta * aff.score_rows(owner_ids, num_items) for beta, aff in self.terms)

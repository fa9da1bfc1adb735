"""Graph operations shared by the sampler and the models: a leaf module (imports only torch).

``segment_arange`` and ``row_positions`` expand CSR rows into flat positions without a Python loop
over rows, and ``row_lookup`` finds entries in sorted CSR rows by a vectorised binary search;
``ROW`` names the relation of the whole-row edges that the sampler adds to a batch subgraph and that
owner aggregates (``engine.models.affinity``) read, ``PAIR`` that of its per-pair values
(``engine.models.knn_term``).
"""
from __future__ import annotations

import torch
from torch import Tensor

#: Relation of the edges :func:`engine.graph.neighbours.add_owner_rows` adds to a batch subgraph:
#: owner aggregates read them (``engine.models.affinity``); message-passing layers, which use
#: ``"to"`` edges, never do. Target edges are *not* dropped from them: an aggregate leaves out the
#: scored pair's own edge itself, so a positive's counts hold every other track of its row, as at
#: test time.
ROW = "row"

#: Relation of the ``(owner, PAIR, item)`` edges a batch holds when its model scores pairs with a
#: value computed on the whole training graph (``engine.graph.cooccur``): one edge per scored
#: (owner, item) pair, the value in ``edge_attr``. No layer reads them.
PAIR = "pair"


def segment_arange(counts: Tensor) -> Tensor:
    """``cat([arange(c) for c in counts])`` without the loop."""
    total = int(counts.sum())
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(total, device=counts.device) - torch.repeat_interleave(
        starts, counts, output_size=total)


def row_positions(indptr: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Every entry of the CSR rows ``rows``: (index into ``rows``, CSR position), row by row."""
    cnt = indptr[rows + 1] - indptr[rows]
    which = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), cnt)
    return which, indptr[rows][which] + segment_arange(cnt)


def row_lookup(indptr: Tensor, indices: Tensor, rows: Tensor, values: Tensor
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

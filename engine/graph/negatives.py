"""Negative sampling: items that are not positives of their owner.

``sample_negatives`` draws uniform items (from a candidate pool if given) and rejects an owner's
positives by a vectorised binary search in its CSR row (:func:`engine.graph.ops.row_lookup`);
no Python loop runs over owners or draws.
"""
from __future__ import annotations

import torch
from torch import Tensor

from engine.graph.ops import row_lookup


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
        _, hit = row_lookup(indptr, indices, rows[todo], out[todo])
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
    _, hit = row_lookup(indptr, indices, rows, space.repeat(owners.numel()))
    full = hit.view(owners.numel(), space.numel()).all(1)
    if full.any():
        raise ValueError(f"owner {int(owners[full][0])} has every candidate item as a positive; "
                         "no negative exists")

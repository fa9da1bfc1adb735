"""Full-ranking evaluation of any scorer under the protocol's masking and candidate rules.

For an owner ``p`` with scores ``s_p ∈ R^{num_items}`` the ranked list is ``topk(s'_p)`` with

    s'_p[j] = -inf   if j is not a candidate (no edge in ``train_edges``) or j ∈ train(p)
            = s_p[j] otherwise.

Held-out items that are not candidates can never be ranked but stay in ``|rel|`` (misses). Entries
of the top-K whose score is ``-inf`` (an owner with fewer than K rankable items) are padding and
never count as hits. Owners are processed in batches; everything inside a batch is vectorised.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from engine.eval.metrics import MetricAccumulator
from engine.graph.split import HeldOut

ScoreFn = Callable[[Tensor], Tensor]


def candidate_mask(train_edges: Tensor, num_items: int) -> Tensor:
    """bool [num_items]: item has at least one training edge."""
    return torch.bincount(train_edges[1].long(), minlength=num_items)[:num_items] > 0


def owner_csr(train_edges: Tensor, num_owners: int) -> tuple[Tensor, Tensor]:
    """(indptr [num_owners + 1], items) with owner p's training items at
    ``items[indptr[p]:indptr[p+1]]``."""
    owner, item = train_edges[0].long(), train_edges[1].long()
    order = torch.argsort(owner, stable=True)
    indptr = torch.zeros(num_owners + 1, dtype=torch.int64)
    indptr[1:] = torch.bincount(owner, minlength=num_owners)[:num_owners].cumsum(0)
    return indptr, item[order]


def gather_rows(indptr: Tensor, items: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """CSR rows ``rows`` as (local row index, item) pairs, without a Python loop:
    flat index = start[row] + (position - first position of that row)."""
    starts, ends = indptr[rows], indptr[rows + 1]
    counts = ends - starts
    local = torch.repeat_interleave(torch.arange(rows.numel()), counts)
    offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(counts.cumsum(0) - counts,
                                                                        counts)
    return local, items[starts[local] + offsets]


def _resolve_candidates(candidates: Tensor | None, train_edges: Tensor, num_items: int) -> Tensor:
    if candidates is None:
        return candidate_mask(train_edges, num_items)
    if candidates.dtype == torch.bool:
        if candidates.numel() != num_items:
            raise ValueError(f"candidate mask has {candidates.numel()} entries, not {num_items}")
        return candidates
    mask = torch.zeros(num_items, dtype=torch.bool)
    mask[candidates.long()] = True
    return mask


def _writable(scores: Tensor) -> Tensor:
    """``scores`` as a float32 tensor that may be overwritten: itself when it owns its memory
    (not a view, contiguous, no grad), otherwise a copy."""
    if scores.dtype != torch.float32:
        return scores.detach().float()
    if scores.requires_grad or scores._is_view() or not scores.is_contiguous():
        return scores.detach().clone(memory_format=torch.contiguous_format)
    return scores


def masked_topk(scores: Tensor, owners: Tensor, k: int, cand: Tensor, indptr: Tensor,
                items: Tensor) -> tuple[Tensor, Tensor]:
    """Top-``k`` item ids [b, k] (on CPU) of ``scores`` [b, num_items] after setting
    non-candidates and each owner's training items (CSR ``indptr``/``items``) to ``-inf``, and a
    bool mask of the entries that are real (finite-ranked) items. Columns beyond the number of
    items are padded with id -1, ``valid=False``. A fresh ``scores`` tensor (a plain matmul
    result) is masked in place to save a [b × num_items] copy; views, expanded, non-float32 or
    grad-requiring tensors are copied first, so a score function's cached tensors are never
    overwritten through them."""
    b, num_items = scores.shape
    dev = scores.device
    neg_inf = torch.tensor(float("-inf"), device=dev)
    scores = _writable(scores)
    scores.masked_fill_(~cand.to(dev), neg_inf)
    row, col = gather_rows(indptr, items, owners.cpu().long())
    scores[row.to(dev), col.to(dev)] = neg_inf
    top_val, top_idx = torch.topk(scores, min(k, num_items), dim=1)
    top_val, top_idx = top_val.cpu(), top_idx.cpu()
    valid = top_val > float("-inf")  # NaN and -inf entries never hit
    if k > num_items:  # fewer items than K: pad with non-hits
        top_idx = torch.cat([top_idx, top_idx.new_full((b, k - num_items), -1)], 1)
        valid = torch.cat([valid, valid.new_zeros((b, k - num_items))], 1)
    return top_idx, valid


@torch.no_grad()
def evaluate_scores(score_fn: ScoreFn, train_edges: Tensor, heldout: HeldOut, num_items: int,
                    ks: Sequence[int] = (10, 50), batch_size: int = 1024,
                    candidates: Tensor | None = None, progress: bool = False
                    ) -> dict[str, float | int]:
    """Rank all candidates for every owner of ``heldout`` and report the protocol metrics.

    ``score_fn(owner_ids: LongTensor[b]) -> FloatTensor[b, num_items]`` (higher = better; may
    live on any device; a fresh tensor per call, which is masked in place unless it is a view,
    see ``masked_topk``). ``candidates``: bool mask [num_items] or item ids; default = items with
    an edge in ``train_edges``. Owners' own ``train_edges`` items are masked. Returns
    ``{"recall@k", "ndcg@k" (k in ks), "r_precision", "playlists", "coverable"}``.
    """
    cand = _resolve_candidates(candidates, train_edges, num_items)
    num_owners = int(max(int(heldout.owners.max()) + 1 if len(heldout) else 0,
                         int(train_edges[0].max()) + 1 if train_edges.numel() else 0))
    indptr, items = owner_csr(train_edges, num_owners)
    sizes = heldout.indptr[1:] - heldout.indptr[:-1]
    acc = MetricAccumulator(ks)
    n = len(heldout)
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        owners = heldout.owners[lo:hi].long()
        rel_indptr = heldout.indptr[lo:hi + 1] - heldout.indptr[lo]
        rel_items = heldout.items[int(heldout.indptr[lo]):int(heldout.indptr[hi])].long()

        need = max(max(ks), int(sizes[lo:hi].max()))
        top_idx, valid = masked_topk(score_fn(owners), owners, need, cand, indptr, items)
        acc.add(top_idx, rel_indptr, rel_items, valid=valid, candidate=cand)
        if progress:
            print(f"evaluate: {hi}/{n} owners", file=sys.stderr, flush=True)
    return acc.result()


def embedding_score_fn(owner_vecs: Tensor, item_vecs: Tensor) -> ScoreFn:
    """Dot-product scorer (the model convention): ``s(p, j) = <owner_vecs[p], item_vecs[j]>``."""
    def score(owner_ids: Tensor) -> Tensor:
        return owner_vecs[owner_ids.to(owner_vecs.device)] @ item_vecs.T
    return score

"""Full-ranking evaluation of any scorer under the protocol's masking and candidate rules.

For an owner ``p`` with scores ``s_p ∈ R^{num_items}`` the ranked list is the top-K of

    s'_p[j] = -inf   if j ∈ train(p)
            = s_p[j] for every other candidate j (an item with an edge in ``train_edges``);

non-candidates are not ranked at all. Held-out items that are not candidates stay in ``|rel|``
(misses). Entries of the top-K whose score is ``-inf`` (an owner with fewer than K rankable items)
are padding and never count as hits.

Ties: equal scores are ordered by a fixed seeded random permutation of the candidates, never by
item id. (``torch.topk`` on CPU keeps the lowest indices among ties, and ids follow first-seen
order, which correlates with held-out positions: on the MPD slices an id-order tie-break moves
item-kNN Recall@10 from 0.027 to 0.030.) The permutation is applied as the one column gather that
also drops the non-candidates, so it costs no extra pass. Owners are processed in batches;
everything inside a batch is vectorised.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from engine.eval.metrics import MetricAccumulator
from engine.graph.split import HeldOut

ScoreFn = Callable[[Tensor], Tensor]
# Bytes of one [batch × num_items] float32 score matrix. A batch holds about three (the scores,
# their tie-break-ordered copy, one score term's rows), so with 1.18 M candidate tracks a batch
# is ~28 owners and the evaluation's extra memory stays under 0.4 GB at any catalogue size
# (256 MB blocks put 0.3 GB more on rank 0's validation peak at full size; docs/benchmarks.md).
SCORE_BYTES = 1 << 27
# progress: False, True (a line per batch on stderr) or wrap(iterable, total, desc) -> iterable
Progress = bool | Callable


def owners_per_batch(batch_size: int, num_items: int) -> int:
    """``batch_size`` capped so that one score matrix stays within :data:`SCORE_BYTES`. Batching
    never changes a metric (each owner is ranked on its own), only memory and speed."""
    return max(1, min(batch_size, SCORE_BYTES // (4 * max(num_items, 1))))


def candidate_mask(train_edges: Tensor, num_items: int) -> Tensor:
    """bool [num_items]: item has at least one training edge."""
    return torch.bincount(train_edges[1].cpu().long(), minlength=num_items)[:num_items] > 0


def owner_csr(train_edges: Tensor, num_owners: int) -> tuple[Tensor, Tensor]:
    """(indptr [num_owners + 1], items) with owner p's training items at
    ``items[indptr[p]:indptr[p+1]]``."""
    owner, item = train_edges[0].cpu().long(), train_edges[1].cpu().long()
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
    candidates = candidates.cpu()
    if candidates.dtype == torch.bool:
        if candidates.numel() != num_items:
            raise ValueError(f"candidate mask has {candidates.numel()} entries, not {num_items}")
        return candidates
    mask = torch.zeros(num_items, dtype=torch.bool)
    mask[candidates.long()] = True
    return mask


class Ranker:
    """Masked top-K over the candidates, ties broken by a seeded random candidate order.

    ``order`` [C]: candidate ids in tie-break order; ``position`` [num_items]: index of an item in
    ``order`` (-1 for non-candidates); ``indptr``/``items``: the owners' training items (CSR).
    """

    def __init__(self, candidates: Tensor, train_edges: Tensor, num_owners: int,
                 seed: int = 0) -> None:
        cand_ids = torch.nonzero(candidates).squeeze(1)
        g = torch.Generator().manual_seed(seed)
        self.order = cand_ids[torch.randperm(cand_ids.numel(), generator=g)]
        self.position = torch.full((candidates.numel(),), -1, dtype=torch.int64)
        self.position[self.order] = torch.arange(self.order.numel())
        self.indptr, self.items = owner_csr(train_edges, num_owners)
        self._buf: Tensor | None = None  # reused [b, C] output of the gather (saves page faults)

    def _gather(self, scores: Tensor) -> Tensor:
        """``scores[:, order]`` written into a buffer reused across batches."""
        b, c = scores.size(0), self.order.numel()
        buf = self._buf
        if (buf is None or buf.size(0) < b or buf.dtype != scores.dtype
                or buf.device != scores.device):
            buf = self._buf = torch.empty(b, c, dtype=scores.dtype, device=scores.device)
            self._order_dev = self.order.to(scores.device)
        return torch.index_select(scores, 1, self._order_dev, out=buf[:b])

    def topk(self, scores: Tensor, owners: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Top-``k`` item ids [b, k] (CPU) of ``scores`` [b, num_items] for ``owners``, and a bool
        mask of real entries. ``s[:, order]`` is copied into a reused buffer (``scores`` is never
        modified) in which training items are set to -inf; columns beyond the number of
        candidates are padded with id -1, ``valid=False``."""
        b, dev = scores.size(0), scores.device
        if not scores.is_floating_point():
            scores = scores.float()
        ranked = self._gather(scores.detach())  # [b, C] in tie-break order, a copy
        row, col = gather_rows(self.indptr, self.items, owners.cpu().long())
        pos = self.position[col]
        keep = pos >= 0  # training items that are not candidates are not ranked anyway
        ranked[row[keep].to(dev), pos[keep].to(dev)] = float("-inf")
        top_val, top_pos = torch.topk(ranked, min(k, ranked.size(1)), dim=1)
        top_idx = self.order[top_pos.cpu()]
        valid = top_val.cpu() > float("-inf")  # NaN and -inf entries never hit
        if k > top_idx.size(1):  # fewer candidates than K: pad with non-hits
            pad = k - top_idx.size(1)
            top_idx = torch.cat([top_idx, top_idx.new_full((b, pad), -1)], 1)
            valid = torch.cat([valid, valid.new_zeros((b, pad))], 1)
        return top_idx, valid


@torch.no_grad()
def evaluate_scores(score_fn: ScoreFn, train_edges: Tensor, heldout: HeldOut, num_items: int,
                    ks: Sequence[int] = (10, 50), batch_size: int = 1024,
                    candidates: Tensor | None = None, progress: Progress = False, seed: int = 0,
                    item_artist: Tensor | None = None, desc: str = "evaluate"
                    ) -> dict[str, float | int]:
    """Rank all candidates for every owner of ``heldout`` and report the protocol metrics.

    ``score_fn(owner_ids: LongTensor[b]) -> FloatTensor[b, num_items]`` (higher = better; may
    live on any device; it is not modified). ``candidates``: bool mask [num_items] or item ids;
    default = items with an edge in ``train_edges``. Owners' own ``train_edges`` items are
    masked. ``seed`` fixes the tie-break order (see the module docstring). Owners go in batches
    of at most ``batch_size`` (:func:`owners_per_batch` lowers it for large catalogues);
    ``progress`` shows them (:data:`Progress`, ``desc`` names the bar). Returns
    ``{"recall@k", "ndcg@k" (k in ks), "r_precision", "playlists", "coverable", "coverage@10"}``
    and, given ``item_artist`` (artist id per item), ``"distinct_artists@10"``.
    """
    cand = _resolve_candidates(candidates, train_edges, num_items)
    num_owners = int(max(int(heldout.owners.max()) + 1 if len(heldout) else 0,
                         int(train_edges[0].max()) + 1 if train_edges.numel() else 0))
    ranker = Ranker(cand, train_edges, num_owners, seed=seed)
    sizes = heldout.indptr[1:] - heldout.indptr[:-1]
    acc = MetricAccumulator(ks, item_group=item_artist)
    n = len(heldout)
    batch_size = owners_per_batch(batch_size, num_items)
    starts = range(0, n, batch_size)
    if callable(progress):
        starts = progress(starts, len(starts), desc)
    for lo in starts:
        hi = min(lo + batch_size, n)
        owners = heldout.owners[lo:hi].long()
        rel_indptr = heldout.indptr[lo:hi + 1] - heldout.indptr[lo]
        rel_items = heldout.items[int(heldout.indptr[lo]):int(heldout.indptr[hi])].long()

        need = max(max(ks), int(sizes[lo:hi].max()))
        top_idx, valid = ranker.topk(score_fn(owners), owners, need)
        acc.add(top_idx, rel_indptr, rel_items, valid=valid, candidate=cand)
        if progress is True:
            print(f"{desc}: {hi}/{n} owners", file=sys.stderr, flush=True)
    return acc.result()


def embedding_score_fn(owner_vecs: Tensor, item_vecs: Tensor) -> ScoreFn:
    """Dot-product scorer (the model convention): ``s(p, j) = <owner_vecs[p], item_vecs[j]>``."""
    def score(owner_ids: Tensor) -> Tensor:
        return owner_vecs[owner_ids.to(owner_vecs.device)] @ item_vecs.T
    return score

"""Ranking metrics for top-K recommendation, as ``shared/PROTOCOL.md`` defines them.

For one owner with held-out set ``rel`` and ranked list ``t_1, t_2, ...`` (rank ``r`` from 1),
let ``h_r = 1[t_r ∈ rel]``. Then

    Recall@K   = Σ_{r≤K} h_r / |rel|
    DCG@K      = Σ_{r≤K} h_r / log2(r + 1)
    IDCG@K     = Σ_{r≤min(K, |rel|)} 1 / log2(r + 1)
    NDCG@K     = DCG@K / IDCG@K
    R-prec     = Σ_{r≤|rel|} h_r / |rel|

Beyond accuracy, for the top-10 lists (padding excluded):

    distinct_artists@10 = mean over owners of |{artist(t_r) : r ≤ 10}|
    coverage@10         = |∪_owners {t_r : r ≤ 10}| / |candidates|

All of it is computed for a batch of owners at once: a boolean hit matrix ``H[B, Kmax]`` (one
``searchsorted`` of row-offset keys against the sorted held-out keys), then cumulative sums along
the rank axis. Per-owner values are summed so batches accumulate exactly (``MetricAccumulator``).
Entries flagged not ``valid`` (padding, or items scored ``-inf`` because they were masked) never
count as hits.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def hit_matrix(topk: Tensor, rel_indptr: Tensor, rel_items: Tensor,
               valid: Tensor | None = None) -> Tensor:
    """``H[b, r] = 1[topk[b, r] ∈ rel_b]`` (and ``valid[b, r]``), with ``rel_b`` the items
    ``rel_items[rel_indptr[b]:rel_indptr[b+1]]``.

    Membership without loops: key(b, i) = b · S + i with S > every item id, so the held-out keys
    sorted once form one array in which each ranked key is located by binary search.
    """
    bsz, kmax = topk.shape
    topk = topk.to(torch.int64)
    rel_items = rel_items.to(torch.int64)
    if rel_items.numel() == 0 or kmax == 0:
        return torch.zeros(bsz, kmax, dtype=torch.bool, device=topk.device)
    counts = (rel_indptr[1:] - rel_indptr[:-1]).to(topk.device)
    stride = int(max(int(topk.max()), int(rel_items.max()))) + 1
    rows = torch.arange(bsz, device=topk.device)
    rel_keys = torch.repeat_interleave(rows, counts) * stride + rel_items.to(topk.device)
    rel_keys = torch.sort(rel_keys).values
    keys = rows[:, None] * stride + topk.clamp(min=0)
    pos = torch.searchsorted(rel_keys, keys).clamp(max=rel_keys.numel() - 1)
    hits = (rel_keys[pos] == keys) & (topk >= 0)
    if valid is not None:
        hits &= valid.to(hits.device)
    return hits


def _discounts(n: int, device: torch.device) -> Tensor:
    """``1 / log2(r + 1)`` for r = 1..n, float64."""
    r = torch.arange(1, n + 1, dtype=torch.float64, device=device)
    return 1.0 / torch.log2(r + 1.0)


def per_owner_metrics(topk: Tensor, rel_indptr: Tensor, rel_items: Tensor,
                      ks: Sequence[int] = (10, 50), valid: Tensor | None = None
                      ) -> dict[str, Tensor]:
    """Per-owner ``recall@k``, ``ndcg@k`` (each k in ``ks``) and ``r_precision``, float64 [B].

    ``topk`` [B, Kmax] holds item ids ranked best first (already masked); it needs
    ``Kmax ≥ max(ks)`` and ``Kmax ≥ max_b |rel_b|`` (pad with id -1 / ``valid=False`` when fewer
    items exist). Every owner must hold out at least one item.
    """
    bsz, kmax = topk.shape
    sizes = (rel_indptr[1:] - rel_indptr[:-1]).to(topk.device, torch.int64)
    if sizes.numel() != bsz:
        raise ValueError(f"{bsz} ranked rows but {sizes.numel()} held-out rows")
    if bsz == 0:
        return {name: torch.zeros(0, dtype=torch.float64) for name in _names(ks)}
    if int(sizes.min()) < 1:
        raise ValueError("every evaluated owner needs at least one held-out item")
    need = max(max(ks), int(sizes.max()))
    if kmax < need:
        raise ValueError(f"top-K has {kmax} columns; max(ks) and max |rel| need {need}")

    hits = hit_matrix(topk, rel_indptr, rel_items, valid).to(torch.float64)
    disc = _discounts(kmax, topk.device)
    cum_hits = hits.cumsum(1)  # [B, Kmax]: hits within the top r
    cum_dcg = (hits * disc).cumsum(1)
    cum_ideal = disc.cumsum(0)  # IDCG for n ideal hits = cum_ideal[n - 1]
    size_f = sizes.to(torch.float64)
    out: dict[str, Tensor] = {}
    for k in ks:
        out[f"recall@{k}"] = cum_hits[:, k - 1] / size_f
        idcg = cum_ideal[sizes.clamp(max=k) - 1]
        out[f"ndcg@{k}"] = cum_dcg[:, k - 1] / idcg
    out["r_precision"] = cum_hits.gather(1, (sizes - 1)[:, None]).squeeze(1) / size_f
    return out


def _names(ks: Sequence[int]) -> list[str]:
    return [n for k in ks for n in (f"recall@{k}", f"ndcg@{k}")] + ["r_precision"]


def distinct_groups(topk: Tensor, group: Tensor, valid: Tensor | None = None) -> Tensor:
    """Per row, the number of distinct ``group[t]`` (e.g. artists) among the real entries of
    ``topk`` [B, K]: sort each row's groups (padding as -1, first) and count the entries that are
    real and differ from their left neighbour."""
    real = topk >= 0
    if valid is not None:
        real &= valid.to(real.device)
    g = torch.where(real, group.to(topk.device)[topk.clamp(min=0).long()], -1)
    g = torch.sort(g, dim=1).values
    new = torch.ones_like(g, dtype=torch.bool)
    new[:, 1:] = g[:, 1:] != g[:, :-1]
    return (new & (g >= 0)).sum(1)


class MetricAccumulator:
    """Sums per-owner metrics over batches; ``result()`` gives the protocol's report dict.

    ``result()`` keys: ``recall@k``, ``ndcg@k`` for each k, ``r_precision`` (means over owners),
    ``playlists`` (number of owners evaluated) and ``coverable`` (held-out entries whose item is a
    candidate / all held-out entries); with ``item_group`` (the artist of each item) also
    ``distinct_artists@10``, and with a ``candidate`` mask in ``add`` also ``coverage@10`` (see
    the module docstring).
    """

    def __init__(self, ks: Sequence[int] = (10, 50), item_group: Tensor | None = None) -> None:
        self.ks = tuple(int(k) for k in ks)
        self.sums = {name: 0.0 for name in _names(self.ks)}
        self.owners = 0
        self.heldout = 0
        self.coverable = 0
        self.item_group = item_group
        self.distinct = 0.0
        self.shown: Tensor | None = None  # bool [num_items]: item in some top-10
        self.candidate: Tensor | None = None

    def add(self, topk: Tensor, rel_indptr: Tensor, rel_items: Tensor,
            valid: Tensor | None = None, candidate: Tensor | None = None) -> None:
        """Add one batch. ``candidate`` (bool [num_items]) marks candidate items for coverage;
        without it every held-out entry counts as coverable."""
        per = per_owner_metrics(topk, rel_indptr, rel_items, self.ks, valid)
        for name, values in per.items():
            self.sums[name] += float(values.sum())
        self.owners += int(topk.size(0))
        self.heldout += int(rel_items.numel())
        if candidate is None:
            self.coverable += int(rel_items.numel())
        else:
            self.coverable += int(candidate.to(rel_items.device)[rel_items].sum())
        top10 = topk[:, :10].long()
        real10 = top10 >= 0 if valid is None else (top10 >= 0) & valid[:, :10].to(top10.device)
        if self.item_group is not None:
            self.distinct += float(distinct_groups(top10, self.item_group, real10).sum())
        if candidate is not None:
            if self.shown is None:
                self.shown = torch.zeros(candidate.numel(), dtype=torch.bool)
                self.candidate = candidate.cpu()
            self.shown[top10[real10].cpu()] = True

    def result(self) -> dict[str, float | int]:
        n = max(self.owners, 1)
        out: dict[str, float | int] = {name: s / n for name, s in self.sums.items()}
        out["playlists"] = self.owners
        out["coverable"] = self.coverable / self.heldout if self.heldout else 0.0
        if self.item_group is not None:
            out["distinct_artists@10"] = self.distinct / n
        if self.shown is not None:
            shown = int((self.shown & self.candidate).sum())
            out["coverage@10"] = shown / max(int(self.candidate.sum()), 1)
        return out

"""Strong simple baselines: EASE and item-kNN plus a same-artist count, tuned on validation.

With ``X ∈ {0,1}^{P×N}`` the training owner×item matrix:

* **EASE** (Steck 2019) over the items with at least ``min_degree`` (2) training edges, the
  columns of ``X`` kept in ``Xr ∈ {0,1}^{P×n}``:

      B = argmin ‖Xr − Xr B‖² + λ‖B‖²  s.t. diag(B) = 0
        = I − Q · diag(1 / diag(Q)),     Q = (Xrᵀ Xr + λ I)⁻¹
      s(p, j) = (Xr[p] B)[j];  items outside the kept set score lowest (-1e30: ranked, last).

  ``Q`` is n×n, but Woodbury gives it from the P×P system when there are fewer owners than
  items: ``Q = (I − Xrᵀ K⁻¹ Xr) / λ`` with ``K = Xr Xrᵀ + λ I``. Then
  ``Xr_b Q = (Xr_b − (Xr_b Xrᵀ) M) / λ`` with ``M = K⁻¹ Xr`` [P×n] and
  ``diag(Q)_j = (1 − x_jᵀ M[:, j]) / λ``: the n×n matrix never exists (exact, not an approximation).

* **item-kNN + artist**: ``s(p, j) = knn(p, j) + w · log(1 + a(p, artist(j)))``, with ``knn`` the
  protocol's cosine item-kNN (:func:`engine.eval.baselines.item_knn_score_fn`) and ``a(p, r)``
  the number of p's training items by artist r.

Each is fitted on the ``fit`` edges for every value of its grid, ranked on the validation split,
and the value with the best validation Recall@10 is refitted on every non-test edge for the test.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from engine.eval.baselines import item_knn_score_fn, unique_edges
from engine.eval.evaluate import ScoreFn, candidate_mask, evaluate_scores, gather_rows
from engine.graph.split import Split

LOWEST = -1e30  # finite, so such items are still ranked (after every kept one), never padding
EASE_LAMBDAS = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
ARTIST_WEIGHTS = (0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def _rows_csr(train_edges: Tensor, num_owners: int, num_items: int) -> tuple[Tensor, Tensor]:
    owner, item = unique_edges(train_edges, num_items)
    indptr = torch.zeros(num_owners + 1, dtype=torch.int64)
    indptr[1:] = torch.bincount(owner, minlength=num_owners).cumsum(0)
    return indptr, item


def ease_score_fn(train_edges: Tensor, num_owners: int, num_items: int, lam: float,
                  min_degree: int = 2) -> ScoreFn:
    """EASE scores (module docstring), dual (Woodbury) form when owners < kept items."""
    indptr, item = _rows_csr(train_edges, num_owners, num_items)
    deg = torch.bincount(item, minlength=num_items)
    kept = torch.nonzero(deg >= min_degree).squeeze(1)
    col = torch.full((num_items,), -1, dtype=torch.int64)
    col[kept] = torch.arange(kept.numel())
    n = kept.numel()
    owner = torch.repeat_interleave(torch.arange(num_owners), indptr[1:] - indptr[:-1])
    keep = col[item] >= 0
    xr = torch.zeros(num_owners, n, dtype=torch.float64)  # P×n, dense: benchmark sizes
    xr[owner[keep], col[item[keep]]] = 1.0
    if num_owners < n:
        k = xr @ xr.T + lam * torch.eye(num_owners, dtype=torch.float64)
        m = torch.linalg.solve(k, xr)  # K⁻¹ Xr [P×n]
        diag_q = (1.0 - (xr * m).sum(0)) / lam

        def xq(rows: Tensor) -> Tensor:  # Xr_b Q
            xb = xr[rows]
            return (xb - (xb @ xr.T) @ m) / lam
    else:
        q = torch.linalg.inv(xr.T @ xr + lam * torch.eye(n, dtype=torch.float64))
        diag_q = torch.diagonal(q).clone()

        def xq(rows: Tensor) -> Tensor:
            return xr[rows] @ q

    def score(owner_ids: Tensor) -> Tensor:
        rows = owner_ids.cpu().long()
        s_kept = xr[rows] - xq(rows) / diag_q  # Xr_b B = Xr_b − Xr_b Q diag(1/diag Q)
        out = torch.full((rows.numel(), num_items), LOWEST, dtype=torch.float32)
        out[:, kept] = s_kept.float()
        return out
    return score


def artist_count_fn(train_edges: Tensor, num_owners: int, num_items: int,
                    item_artist: Tensor) -> ScoreFn:
    """``log(1 + a(p, artist(j)))``: a batch's artist counts [b × artists] gathered per item."""
    indptr, item = _rows_csr(train_edges, num_owners, num_items)
    artist = item_artist.long().clamp(min=0)
    num_artists = int(artist.max()) + 1 if artist.numel() else 1
    known = item_artist >= 0

    def score(owner_ids: Tensor) -> Tensor:
        rows = owner_ids.cpu().long()
        local, items = gather_rows(indptr, item, rows)
        k = known[items]
        local, items = local[k], items[k]
        counts = torch.zeros(rows.numel(), num_artists)
        counts.index_put_((local, artist[items]), torch.ones(items.numel()), accumulate=True)
        out = torch.log1p(counts)[:, artist]
        return torch.where(known, out, torch.zeros(()))
    return score


def knn_artist_score_fn(train_edges: Tensor, num_owners: int, num_items: int,
                        item_artist: Tensor, weight: float) -> ScoreFn:
    """item-kNN + ``weight`` · log(1 + same-artist count)."""
    knn = item_knn_score_fn(train_edges, num_owners, num_items)
    if weight == 0:
        return knn
    art = artist_count_fn(train_edges, num_owners, num_items, item_artist)
    return lambda ids: knn(ids) + weight * art(ids)


TIE_DIGITS = 9  # validation figures equal to this many digits are a tie


def tuned(name: str, make: Callable[[Tensor, float], ScoreFn], grid: Sequence[float],
          split: Split, ks: Sequence[int] = (10, 50), log: Callable[[str], None] = print) -> dict:
    """Pick ``make``'s parameter on validation (fit edges → val), refit on every non-test edge and
    evaluate on test. Returns ``{"test": metrics, "param": best, "val": {param: val recall@10},
    "fit_seconds": seconds of the final fit + scoring}``."""
    fit_cand = candidate_mask(split.fit, split.num_items)
    val = {}
    for value in grid:
        m = evaluate_scores(make(split.fit, value), split.fit, split.val, split.num_items,
                            ks=(10,), candidates=fit_cand)
        val[value] = m["recall@10"]
        log(f"{name}: {value:g} -> validation Recall@10 {m['recall@10']:.4f}")
    # Recall is a mean of per-owner ratios: equal hit counts can differ in their last bits by
    # summation order, and that must not pick the parameter; a tie goes to the earlier value
    best = max(grid, key=lambda v: (round(val[v], TIE_DIGITS), -grid.index(v)))
    t0 = time.perf_counter()
    fn = make(split.train, best)
    test = evaluate_scores(fn, split.train, split.test, split.num_items, ks=ks,
                           candidates=candidate_mask(split.train, split.num_items),
                           item_artist=split.item_artist)
    return {"test": test, "param": best, "val": val,
            "fit_seconds": round(time.perf_counter() - t0, 2)}


def strong_baselines(split: Split, ks: Sequence[int] = (10, 50),
                     log: Callable[[str], None] = print) -> dict[str, dict]:
    """EASE (λ on validation) and item-kNN + artist (w on validation) on ``split``."""
    p, n = split.num_owners, split.num_items
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sparse CSR beta
        return {
            "ease": tuned("EASE lambda", lambda e, lam: ease_score_fn(e, p, n, lam),
                          EASE_LAMBDAS, split, ks, log),
            "item_knn_artist": tuned(
                "item-kNN + artist w",
                lambda e, w: knn_artist_score_fn(e, p, n, split.item_artist, w),
                ARTIST_WEIGHTS, split, ks, log),
        }


"""Evaluation speed on data shaped like the MPD slices, then the real slices' baselines.

    .venv/bin/python benchmarks/bench_eval.py [--mpd ../shared/data/mpd/slices] [--batch-size N]

Part 1 (random data): 2,655 owners, 100,935 items (all candidates), 242,893 distinct training
edges (popularity-skewed), 5 held-out items per owner; times ``evaluate_scores`` with a random
64-d dot-product scorer and with the popularity and item-kNN baselines.

Part 2 (if ``engine.data.mpd.read_mpd`` exists and the slices are there): protocol split with
``holdout=5`` and the baselines on ``split.test`` with stage edges ``split.train``, next to the
reference figures of ``shared/data/README.md``; once with ``split.train`` as is (every non-test
edge, as the protocol says) and once restricted to the test playlists (the reference counts
only playlists with at least 10 distinct tracks, and its edge counts match that).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from engine.eval import (
    embedding_score_fn,
    evaluate_scores,
    evaluate_with_baselines,
    item_knn_score_fn,
    popularity_score_fn,
)
from engine.graph.split import HeldOut, Split, make_split

OWNERS, ITEMS, EDGES, HOLDOUT, DIM = 2_655, 100_935, 242_893, 5, 64
REFERENCE = {"playlists": 2_655, "candidates": 100_935, "train_edges": 242_893,
             "heldout": 13_275, "coverable_entries": 8_641,
             "popularity recall@10": 0.0042, "item_knn recall@10": 0.0289}


def random_data(seed: int = 0) -> tuple[torch.Tensor, HeldOut]:
    """Distinct (owner, item) training pairs covering every item once, the rest Zipf-skewed;
    5 held-out items per owner outside its training items."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, OWNERS, ITEMS) * ITEMS + np.arange(ITEMS)  # every item gets one edge
    weights = 1.0 / np.arange(1, ITEMS + 1) ** 0.8
    n_extra = 2 * (EDGES - ITEMS)
    extra = np.unique(rng.integers(0, OWNERS, n_extra) * ITEMS
                      + rng.choice(ITEMS, n_extra, p=weights / weights.sum()))
    extra = rng.permutation(extra[~np.isin(extra, base)])[: EDGES - ITEMS]
    key = np.unique(np.r_[base, extra])
    held_owner = np.repeat(np.arange(OWNERS), 2 * HOLDOUT)
    held_key = np.unique(held_owner * ITEMS + rng.integers(0, ITEMS, held_owner.size))
    held_key = held_key[~np.isin(held_key, key)]
    o = held_key // ITEMS
    rank = np.arange(len(o)) - np.searchsorted(o, o)
    held_key = held_key[rank < HOLDOUT]
    train = torch.from_numpy(np.stack([key // ITEMS, key % ITEMS]))
    return train, HeldOut.from_pairs(held_key // ITEMS, held_key % ITEMS)


def timed(label: str, fn) -> tuple[float, object]:
    """Run ``fn``; print wall seconds and process CPU seconds (all threads; on a shared machine
    CPU / threads is the better guide to the uncontended wall time)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    dt, dc = time.perf_counter() - t, time.process_time() - c
    print(f"{label:<34s} wall {dt:7.2f} s   cpu {dc:7.2f} s")
    return dt, out


def fmt(r: dict) -> str:
    return "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items())


def bench_random(batch_size: int) -> None:
    train, held = random_data()
    print(f"random data: {OWNERS} owners, {ITEMS} items, {train.size(1)} train edges, "
          f"{held.items.numel()} held-out; torch threads={torch.get_num_threads()}, "
          f"batch_size={batch_size}")
    g = torch.Generator().manual_seed(0)
    model = embedding_score_fn(torch.randn(OWNERS, DIM, generator=g),
                               torch.randn(ITEMS, DIM, generator=g))
    builders = [("model (dot, d=64)", lambda: model),
                ("popularity", lambda: popularity_score_fn(train, ITEMS)),
                ("item-kNN", lambda: item_knn_score_fn(train, OWNERS, ITEMS))]
    for name, build in builders:
        _, score_fn = timed(f"  build {name}", build)
        _, r = timed(f"  evaluate {name}", lambda f=score_fn: evaluate_scores(
            f, train, held, ITEMS, batch_size=batch_size))
        print("   ", fmt(r))


def compare(split: Split, edges: torch.Tensor, batch_size: int, seeds: int) -> None:
    """Counts and baselines with stage edges ``edges`` on ``split.test``, beside the reference."""
    cand = torch.bincount(edges[1], minlength=split.num_items) > 0
    ours: dict = {"playlists": len(split.test), "candidates": int(cand.sum()),
                  "train_edges": int(edges.size(1)), "heldout": int(split.test.items.numel()),
                  "coverable_entries": int(cand[split.test.items].sum())}
    _, out = timed("  evaluate_with_baselines", lambda: evaluate_with_baselines(
        None, split, stage_edges=edges, batch_size=batch_size))
    for name, r in out["baselines"].items():
        print(f"    {name:<10s}", fmt(r))
    ours["popularity recall@10"] = out["baselines"]["popularity"]["recall@10"]
    ours["item_knn recall@10"] = out["baselines"]["item_knn"]["recall@10"]
    print(f"    {'figure':<22s} {'ours':>10s} {'reference':>10s}")
    for k, ref in REFERENCE.items():
        v = ours[k]
        same = round(v, 4) == ref if isinstance(ref, float) else v == ref
        v_s = f"{v:.5f}" if isinstance(v, float) else str(v)
        print(f"    {k:<22s} {v_s:>10s} {ref!s:>10s} {'same' if same else 'differs'}")
    if seeds > 1:  # spread of the baselines over tie-break orders
        pop = popularity_score_fn(edges, split.num_items)
        knn = item_knn_score_fn(edges, split.num_owners, split.num_items)
        for name, fn in [("popularity", pop), ("item_knn", knn)]:
            rec = [evaluate_scores(fn, edges, split.test, split.num_items, batch_size=batch_size,
                                   seed=s)["recall@10"] for s in range(seeds)]
            print(f"    {name} recall@10 over {seeds} tie-break seeds: "
                  + " ".join(f"{r:.5f}" for r in rec))


def bench_mpd(path: Path, batch_size: int, seeds: int) -> None:
    try:
        from engine.data.mpd import read_mpd
    except ImportError:
        print("engine.data.mpd.read_mpd not available: skipping the real-data run")
        return
    if not path.exists():
        print(f"{path} not found: skipping the real-data run")
        return
    _, ds = timed("read_mpd", lambda: read_mpd(path, progress=False))
    _, split = timed("make_split(holdout=5)", lambda: make_split(ds, holdout=5, val_ratio=0.15, test_ratio=0.15,
                                     max_val_owners=None, seed=0))
    print("stage edges = split.train (every non-test edge, short playlists included):")
    compare(split, split.train, batch_size, seeds)
    # The reference keeps only playlists with >= 10 distinct tracks, i.e. the test playlists.
    print("stage edges = split.train of the test playlists only (the reference's filter):")
    compare(split, split.train[:, torch.isin(split.train[0], split.test.owners)], batch_size,
            seeds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--mpd", type=Path, default=root.parent / "shared/data/mpd/slices")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--tie-seeds", type=int, default=1,
                    help="also evaluate the MPD baselines under this many tie-break seeds")
    ap.add_argument("--skip-random", action="store_true")
    args = ap.parse_args()
    if not args.skip_random:
        bench_random(args.batch_size)
    bench_mpd(args.mpd, args.batch_size, args.tie_seeds)


if __name__ == "__main__":
    main()

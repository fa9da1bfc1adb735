"""Synthetic listening sessions: the Enhanced GAT against item-kNN, and what ``genre_weight`` does.

    .venv/bin/python benchmarks/bench_sessions.py [--users 1000] [--days 30] [--seeds 0]
        [--weights 0 0.25 0.5 0.75 1] [--id-init svd normal] [--knn-init 0 1]
        [--knn-exp 0.5:0 0.5:0.5] [--lr 0.01] [--output runs/bench_sessions]

Generates the seeded session dataset that ``python -m jobs.train_synthetic`` uses (``--users``
× ``--days``, seed 0; the same folder under ``data/generated/``), then for every ``genre_weight``,
``id_init`` and seed runs the training loop in this process (no Ray, one worker) with the
settings of ``jobs.train_synthetic --model enhanced --advanced`` (10 epochs, batches of 128
users, D = 32, 4 heads, early stopping and ReduceLROnPlateau on validation Recall@10) and prints
test Recall@10 / NDCG@10 beside popularity and item-kNN from the same run (the protocol's
70/15/15 per-user split), with each run's ratio to item-kNN.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.data.canonical import is_prepared, save_dataset
from engine.data.sessions import generate_sessions
from engine.training.config import TrainConfig
from engine.training.loop import train_loop_per_worker

DEFAULTS = TrainConfig()  # a run's name shows only what differs from these


def dataset(users: int, days: int) -> Path:
    """The folder ``jobs.train_synthetic --users U --days D`` (seed 0) generates and reuses."""
    path = ROOT / "data" / "generated" / f"sessions.seed0.{users}u.{days}d"
    if not is_prepared(path):
        print(f"generating {users:,} users x {days} days -> {path}", flush=True)
        save_dataset(generate_sessions(num_users=users, days=days, seed=0), path)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--weights", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--id-init", nargs="+", choices=["svd", "normal"], default=["svd", "normal"])
    p.add_argument("--knn-init", nargs="+", type=float, default=[0.0],
                   help="TrainConfig.knn_init values (default 0: no item-kNN term, the table's "
                        "runs before the term)")
    p.add_argument("--knn-exp", nargs="+",
                   default=[f"{DEFAULTS.knn_pop_exp:g}:{DEFAULTS.knn_len_exp:g}"],
                   metavar="POP:LEN", help="the item-kNN term's (knn_pop_exp, knn_len_exp) "
                   "pairs (default TrainConfig's)")
    p.add_argument("--lr", nargs="+", type=float, default=[DEFAULTS.lr],
                   help="learning rates (default: TrainConfig's)")
    p.add_argument("--output", default=str(ROOT / "runs" / "bench_sessions"))
    args = p.parse_args(argv)
    exps = [tuple(float(x) for x in e.split(":")) for e in args.knn_exp]
    data = dataset(args.users, args.days)
    # jobs.train_synthetic's settings for --model enhanced --advanced
    base = TrainConfig(model="enhanced", epochs=10, batch_size=128, embedding_dim=32, heads=4,
                       fixed_lr=False, progress=False, num_threads=1).to_dict()
    print(f"load {os.getloadavg()[0]:.1f}; data {data}")
    print("| id_init | knn_init | genre_weight | seed | test R@10 | test NDCG@10 | item-kNN R@10 / NDCG@10 "
          "| popularity R@10 | R@10 / item-kNN | epochs | train s | knn exponents | lr | best val R@10 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
          flush=True)
    runs = [(i, k, e, lr, w, s) for i in args.id_init for k in args.knn_init for e in exps
            for lr in args.lr for w in args.weights for s in args.seeds]
    for init, knn_init, (pop_exp, len_exp), lr, w, seed in runs:
        name = (f"{init}_w{w:g}_s{seed}" + (f"_knn{knn_init:g}" if knn_init else "")
                + ("" if (pop_exp, len_exp) == (DEFAULTS.knn_pop_exp, DEFAULTS.knn_len_exp)
                   else f"_pop{pop_exp:g}_len{len_exp:g}")
                + ("" if lr == DEFAULTS.lr else f"_lr{lr:g}"))
        out = Path(args.output) / name
        cfg = dict(base, dataset=str(data), output=str(out), genre_weight=w, seed=seed,
                   id_init=init, knn_init=knn_init, knn_pop_exp=pop_exp, knn_len_exp=len_exp,
                   lr=lr)
        t0 = time.perf_counter()
        r = train_loop_per_worker(cfg)
        t, knn = r["test"], r["baselines"]["item_knn"]
        pop = r["baselines"]["popularity"]
        print(f"| {init} | {knn_init:g} | {w:g} | {seed} | {t['recall@10']:.4f} | "
              f"{t['ndcg@10']:.4f} | {knn['recall@10']:.4f} / {knn['ndcg@10']:.4f} | "
              f"{pop['recall@10']:.4f} | {t['recall@10'] / knn['recall@10']:.2f} | "
              f"{r['epochs_run']} | {time.perf_counter() - t0:.0f} | {pop_exp:g} / {len_exp:g} | "
              f"{lr:g} | {r['best_val_recall@10']:.4f} |", flush=True)


if __name__ == "__main__":
    main()

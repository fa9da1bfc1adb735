"""The item-kNN term (``engine.models.knn_term``): what adding it to a trained model gives, and
what it costs at full size.

    .venv/bin/python benchmarks/bench_knn.py posthoc --run runs/ablation_all/svd_zero_msgs_seed0
        [--output runs/ablation_all] [--weights 0.1 0.3 1 3]
    .venv/bin/python benchmarks/bench_knn.py cost --dataset runs/full_ds/dataset [--mode full]
    .venv/bin/python benchmarks/bench_knn.py exponents [--max-playlists 1000]
        [--output runs/ablation] [--pairs 0.5,0 0.3,0.5 ...]

``posthoc``: a finished ``bench_ablation.py`` row (its ``best_model.pt``, trained without the term)
scored on its validation split as trained, then plus ``w * k`` and ``w * log(1 + k)`` for each
weight (``k`` the cosine item-kNN score), beside item-kNN alone: whether the exact counts add
anything to that model, before training with them. ``cost``: on a prepared dataset's fit graph
(one thread), the time to build :class:`engine.graph.cooccur.ItemKNN`, the values of one batch of
the mode's shape (owners x positives x (1 + negatives), half the negatives popularity-drawn) and
full-ranking rows of 64 owners, projected to the test playlists. ``exponents``: no training;
item-kNN alone with each ``(pop_exp, len_exp)`` of :class:`~engine.graph.cooccur.ItemKNN`
(``0.5,0`` is the protocol's cosine) ranked on quick mode's validation split of the sample
(``--max-playlists``, 0 = all). docs/results.md quotes them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._run import quick_data_args, quick_dataset, validation
from benchmarks.bench_ablation import PINNED, ROWS
from engine.eval.baselines import item_knn_score_fn
from engine.graph.cooccur import ItemKNN
from engine.models import score_fn
from engine.training.checkpoint import load_state
from engine.training.config import MODES, TrainConfig, make_model, mode_config
from engine.training.run_data import RunData


def cached(fn):
    """``fn`` with its [b, items] rows kept per batch of owners (validation asks in the same
    batches for every weight)."""
    memo = {}

    def f(ids):
        key = (ids.numel(), int(ids[0]), int(ids[-1]))
        if key not in memo:
            memo[key] = fn(ids)
        return memo[key]
    return f


def posthoc(args) -> None:
    run = Path(args.run)
    name, seed = run.name.rsplit("_seed", 1)
    mode = MODES["quick"]
    cfg = TrainConfig.from_dict({
        "dataset": str(Path(args.output) / "dataset"), "output": str(run),
        "epochs": mode["epochs"], "batch_size": mode["batch_size"], "progress": False,
        "num_threads": 1, "seed": int(seed), **PINNED, **ROWS[name][1]})
    data = RunData.load(cfg)
    graph, split = data.graph("fit"), data.split
    model = make_model(cfg, graph)
    model.load_state_dict(load_state(run / "best_model.pt"))
    model.eval()
    with torch.no_grad():
        full = cached(score_fn(model, graph))
        knn = cached(item_knn_score_fn(split.fit, split.num_owners, split.num_items))
        print(f"{run}: validation Recall@10 / NDCG@10")
        for label, fn in (("the model as trained", full), ("item-kNN", knn)):
            m = validation(fn, split)
            print(f"  {label}: {m['recall@10']:.4f} / {m['ndcg@10']:.4f}", flush=True)
        for w in args.weights:
            for form, f in (("w * k", lambda k: k), ("w * log(1 + k)", torch.log1p)):
                m = validation(lambda ids, w=w, f=f: full(ids) + w * f(knn(ids)), split)
                print(f"  + {form}, w {w:g}: {m['recall@10']:.4f} / {m['ndcg@10']:.4f}",
                      flush=True)


def cost(args) -> None:
    torch.set_num_threads(1)
    cfg = TrainConfig(dataset=args.dataset, **mode_config(args.mode))
    data = RunData.load(cfg)
    g = data.graph("fit")
    t0 = time.perf_counter()
    knn = ItemKNN(g.csr[g.interaction], g.num_nodes[g.item_type])
    out = {"owners": knn.num_owners, "items": knn.num_items, "fit_edges": knn.num_edges,
           "build_s": round(time.perf_counter() - t0, 3)}
    gen = torch.Generator().manual_seed(0)
    rows = knn.rows
    owners = torch.randint(knn.num_owners, (cfg.batch_size,), generator=gen)
    owners = owners[rows.degree()[owners] > 0].repeat_interleave(cfg.pos_per_owner)
    deg = rows.degree()[owners]
    pos = rows.indices[rows.indptr[owners] + (torch.rand(owners.numel(), generator=gen)
                                              * deg).long().clamp(max=deg - 1)]
    half = cfg.num_neg // 2
    popular = rows.indices[torch.randint(rows.indices.numel(), (owners.numel(), half),
                                         generator=gen)]
    uniform = torch.randint(knn.num_items, (owners.numel(), cfg.num_neg - half), generator=gen)
    items = torch.cat([pos[:, None], popular, uniform], 1)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        knn.pairs(owners[:, None].expand_as(items), items)
        times.append(time.perf_counter() - t0)
    out["batch_pairs"] = int(items.numel())
    out["batch_ms"] = round(1000 * min(times), 1)
    t0 = time.perf_counter()
    knn.rows_of(torch.arange(64))
    per_owner = (time.perf_counter() - t0) / 64
    out["rows_ms_per_owner"] = round(1000 * per_owner, 2)
    out["test_owners"] = len(data.split.test)
    out["test_rows_min_projected"] = round(per_owner * len(data.split.test) / 60, 1)
    print(json.dumps(out, indent=1))


def exponents(args) -> None:
    torch.set_num_threads(1)
    dataset = quick_dataset(Path(args.data), Path(args.output), args.max_playlists)
    split = RunData.load(TrainConfig(dataset=str(dataset))).split
    print(f"{len(split.val)} validation playlists")
    print("| pop_exp | len_exp | validation Recall@10 | NDCG@10 |\n| --- | --- | --- | --- |")
    for pair in args.pairs:
        pop, length = (float(v) for v in pair.split(","))
        knn = ItemKNN.of_edges(split.fit, split.num_owners, split.num_items, pop, length)
        m = validation(knn.rows_of, split)
        print(f"| {pop:g} | {length:g} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("posthoc")
    a.add_argument("--run", required=True, help="a bench_ablation.py row folder, NAME_seedS")
    a.add_argument("--output", default=str(ROOT / "runs" / "ablation_all"),
                   help="the folder the row's dataset was prepared in")
    a.add_argument("--weights", nargs="+", type=float, default=[0.1, 0.3, 1.0, 3.0])
    b = sub.add_parser("cost")
    b.add_argument("--dataset", required=True, help="a prepared dataset folder")
    b.add_argument("--mode", default="full", choices=sorted(MODES))
    c = sub.add_parser("exponents")
    quick_data_args(c, "ablation")
    c.add_argument("--pairs", nargs="+", default=[
        "0.5,0", "0.4,0", "0.3,0", "0.2,0", "0.3,0.3", "0.3,0.5", "0.2,0.5", "0.5,0.5", "0.5,1"],
        help="pop_exp,len_exp pairs")
    args = p.parse_args()
    {"posthoc": posthoc, "cost": cost, "exponents": exponents}[args.what](args)


if __name__ == "__main__":
    main()

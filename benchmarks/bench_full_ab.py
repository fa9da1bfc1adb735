"""Issue #15's speed changes against what they replace, in one process, step by step (load-robust).

    python benchmarks/bench_full_ab.py --dataset RUN/dataset [--configs 64:10,5 256:10,3]

On a shared machine the load changes within minutes, so timing the old and the new code in two
runs compares the load as much as the code. Here one process holds one model and alternates, step
by step, between two variants and every ``--configs`` batch shape (``batch:fanouts``), so every
variant sees the same load on average; each step is timed by phase as in ``bench_full.py``
(one thread, no Ray, full mode's other defaults):

* ``before``: the negative pool drawn by ``randperm`` over the catalogue, GAT convs projecting
  every local node (no ``layers.gat_compact``), torch's ``SparseAdam``;
* ``after``: ``batches.uniform_subset``, ``layers.gat_compact``, ``row_adam.RowAdam``.

With ``--id-min-edges 1 2`` (round 3) both variants run today's code, each with a model of its
own: ``before`` with a track ID row per track, ``after`` with rows only for tracks with at least
2 fit edges (``TrainConfig.id_min_edges``); both draw the same batches (same sampler and seed).

Both variants step the same model (one after the other) with their own optimisers; what is
compared is time, not training. Prints median ms per phase, sampled nodes and us per triple,
and per shape the median over steps of (after's step / before's step taken just before it).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHASES = ("sample", "forward", "loss", "backward", "optimiser")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="prepared full-mode dataset folder")
    ap.add_argument("--configs", nargs="+", default=["64:10,5"], help="batch:fanouts shapes")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant and shape")
    ap.add_argument("--id-min-edges", type=int, nargs=2, metavar=("BEFORE", "AFTER"),
                    help="compare two values of TrainConfig.id_min_edges instead (round 3): "
                    "two models, today's code, the same batches")
    args = ap.parse_args()

    import torch

    from engine.graph import batches as B
    from engine.graph.sampler import BPRBatches, owner_shard
    from engine.models import layers, score_bias
    from engine.models.init import svd_init_
    from engine.training.config import TrainConfig, make_model, owner_row_links, pair_knn
    from engine.training.losses import loss_fn
    from engine.training.optim import make_optimisers
    from engine.training.row_adam import RowAdam
    from engine.training.run_data import RunData

    torch.set_num_threads(1)
    cfg = TrainConfig(dataset=args.dataset)
    graph = RunData.load(cfg).graph("fit")
    models = {}
    for name, k in zip(("before", "after"), args.id_min_edges or [cfg.id_min_edges]):
        models[name] = make_model(TrainConfig(dataset=args.dataset, id_min_edges=k), graph)
        svd_init_(models[name], graph, cfg.seed)
    model = models.setdefault("after", models["before"])  # round 2: one model, both variants
    owners = owner_shard(torch.nonzero(graph.csr[graph.interaction].degree() > 0).flatten(),
                         0, 1, cfg.seed)
    fast = {"pool": B.uniform_subset, "conv": layers.gat_compact}
    slow = {"pool": lambda n, k, gen: torch.randperm(n, generator=gen)[:k],
            "conv": lambda conv, xs, xd, ei, ea: conv((xs, xd), ei, edge_attr=ea)}
    variants = {}
    for name, fns in (("before", fast if args.id_min_edges else slow), ("after", fast)):
        opts = make_optimisers(cfg, models[name])
        if fns is slow:
            opts.sparse_adam = torch.optim.SparseAdam(opts.sparse, lr=cfg.lr)
        assert isinstance(opts.sparse_adam, RowAdam) == (fns is fast)
        variants[name] = (fns, opts)
    shapes = {}
    for spec in args.configs:
        bs, fan = spec.split(":")
        shape = TrainConfig(dataset=args.dataset, batch_size=int(bs),
                            fanouts=[int(f) for f in fan.split(",")])
        shapes[spec] = (shape, {name: iter(BPRBatches(
            graph, owners, batch_size=shape.batch_size, num_neg=shape.num_neg,
            fanouts=shape.fanouts, seed=cfg.seed, steps=args.steps + 1,
            pos_per_owner=shape.pos_per_owner, neg_pool=shape.neg_pool,
            neg_popularity=shape.neg_popularity, owner_rows=owner_row_links(shape, model),
            pair_knn=pair_knn(model, graph)))
            for name in variants})
    times = {(s, v): {p: [] for p in (*PHASES, "nodes")} for s in shapes for v in variants}
    criterion = loss_fn(cfg.loss)
    for step in range(args.steps + 1):  # step 0 warms up
        for spec, (shape, its) in shapes.items():
            for name, (fns, opts) in variants.items():
                B.uniform_subset, layers.gat_compact = fns["pool"], fns["conv"]
                t = [time.perf_counter()]
                b = next(its[name])
                t.append(time.perf_counter())
                vecs = models[name](b.sub)
                t.append(time.perf_counter())
                loss = criterion(vecs, graph.owner_type, graph.item_type, b, shape.l2,
                                 score_bias(models[name], b.sub))
                t.append(time.perf_counter())
                opts.zero_grad()
                loss.backward()
                t.append(time.perf_counter())
                opts.step()
                t.append(time.perf_counter())
                if step:
                    rec = times[(spec, name)]
                    for p, a, c in zip(PHASES, t, t[1:]):
                        rec[p].append(1000 * (c - a))
                    rec["nodes"].append(sum(int(v.numel()) for v in b.sub.n_id.values()))
    B.uniform_subset, layers.gat_compact = fast["pool"], fast["conv"]
    out = {}
    for (spec, name), rec in times.items():
        med = {p: statistics.median(v) for p, v in rec.items()}
        total = sum(med[p] for p in PHASES)
        triples = shapes[spec][0].batch_size * shapes[spec][0].pos_per_owner
        out[f"{spec} {name}"] = {**{p: round(med[p], 1) for p in PHASES},
                                 "total": round(total, 1), "nodes": round(med["nodes"]),
                                 "us_per_triple": round(1000 * total / triples, 1)}
        print(f"{spec:>10} {name:>6}: " + " ".join(f"{p} {med[p]:.0f}" for p in PHASES)
              + f" = {total:.0f} ms; {med['nodes']:,.0f} nodes; "
              f"{1000 * total / triples:.0f} us/triple", flush=True)
    for spec in shapes:  # paired: each step's after / before, taken moments apart
        totals = {v: [sum(x) for x in zip(*(times[(spec, v)][p] for p in PHASES))]
                  for v in variants}
        ratio = statistics.median(a / b for a, b in zip(totals["after"], totals["before"]))
        out[f"{spec} after/before"] = round(ratio, 3)
        print(f"{spec:>10}: after / before, median of {len(totals['after'])} paired steps: "
              f"{ratio:.3f}", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

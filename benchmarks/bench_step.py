"""Training-step throughput: sampled-subgraph BPR steps against full-graph-forward BPR steps.

    .venv/bin/python -m benchmarks.bench_step [--threads 1,2] [--batch-sizes 128,64]
        [--steps 20] [--warmup 3] [--full-steps 3] [--full-warmup 1] [--profile 0]

Both arms train the same model (``make_model(TrainConfig(), graph)``, what the training loop
builds with the defaults, both arms starting from the same initial
weights) with the same optimisers (Adam on dense weights, SparseAdam on the ID embeddings via
``split_parameters``) on the same BPR triples, on the fit graph of the shared MPD slices:

* **sampled** (the loop's own step, ``engine.training.steps.train_step``): ``BPRBatches`` draws
  owners, positives, negatives and the sampled subgraph around them; ``model(batch.sub)``;
  ``bpr_loss`` on local indices; backward; ``sync_gradients`` (a no-op in one process);
  optimiser steps. The step time *includes* the sampling.
* **full** (what the seed project did): ``model(graph.full())`` over every node and edge, then
  the batch's owner / positive / negative vectors indexed by the *global* ids of the same batch
  (``batch.sub.n_id[t][local index]``); the same ``train_step`` with the whole graph as its
  ``sub``: same loss, backward, optimisers. The batches are drawn
  beforehand and the drawing is *not* timed, so the ratio is conservative (the reference gets
  its negatives for free).

Each step is timed in phases (sample / forward / loss / backward / sync / optimiser). Triples/s =
timed triples / timed seconds. The full arm costs ~the same whatever the batch size, so it runs
fewer steps (``--full-steps``). ``--profile N`` adds an operator-level profile (torch.profiler)
of N sampled steps. Prints one table row per (threads, batch size) and a final JSON line.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from types import SimpleNamespace

import torch

from engine.data.load import load_any
from engine.graph.build import build_graph
from engine.graph.sampler import BPRBatches
from engine.graph.split import make_split
from engine.models import count_parameters
from engine.training.config import MODES, TrainConfig, make_model, owner_row_links, pair_knn
from engine.training.losses import loss_fn
from engine.training.optim import make_optimisers
from engine.training.steps import train_step

PHASES = ("sample", "forward", "loss", "backward", "sync", "optim")


def load() -> float:
    return os.getloadavg()[0]


def make_arm(base: torch.nn.Module, cfg: TrainConfig):
    model = copy.deepcopy(base)
    model.train()
    return model, make_optimisers(cfg, model)


class Clock:
    """Wall time per phase; ``cpu`` is this process's CPU time over the whole step."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.cpu0 = time.process_time()
        self.phases: dict[str, float] = {}

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self.t
        self.t = now

    def done(self) -> dict[str, float]:
        return {**self.phases, "cpu": time.process_time() - self.cpu0}


def global_batch(batch, owner_t: str, item_t: str) -> SimpleNamespace:
    """The batch's triples as global node ids (for indexing full-graph vectors)."""
    n_id = batch.sub.n_id
    return SimpleNamespace(owner_idx=n_id[owner_t][batch.owner_idx],
                           pos_idx=n_id[item_t][batch.pos_idx],
                           neg_idx=n_id[item_t][batch.neg_idx], num_triples=batch.num_triples,
                           pos_rank=batch.pos_rank)


def summarise(steps: list[dict], triples: int) -> dict:
    wall = [sum(s[p] for p in PHASES if p in s) for s in steps]
    cpu = [s["cpu"] for s in steps]
    return {"steps": len(steps), "triples_per_step": triples,
            "median_step_s": statistics.median(wall), "min_step_s": min(wall),
            "max_step_s": max(wall),
            "triples_per_s": triples * len(steps) / sum(wall),
            "triples_per_cpu_s": triples * len(steps) / sum(cpu),
            "phases_median_s": {p: statistics.median(s.get(p, 0.0) for s in steps)
                                for p in PHASES}}


def run_pair(base, cfg, graph, owners, batch_size, warmup, steps, full_warmup, full_steps):
    """Both arms on the same batches, their timed steps interleaved (the full arm's few steps
    spread evenly among the sampled ones) so that both see the same background load."""
    criterion = loss_fn(cfg.loss, dot_weight=cfg.dot_loss)
    ot, it = graph.owner_type, graph.item_type
    sampled = make_arm(base, cfg)
    full_arm = make_arm(base, cfg)

    def batches(n):
        return BPRBatches(graph, owners, batch_size=batch_size, num_neg=cfg.num_neg,
                          fanouts=cfg.fanouts, seed=cfg.seed, steps=n,
                          pos_per_owner=cfg.pos_per_owner, neg_pool=cfg.neg_pool,
                          neg_popularity=cfg.neg_popularity,
                          owner_rows=owner_row_links(cfg, base),
                          pair_knn=pair_knn(base, graph))

    # Same seed, same shard, same order: the full arm's batches are the sampled arm's first
    # ones, drawn up front (untimed) and turned into global ids.
    full_batches = iter([global_batch(b, ot, it) for b in batches(full_warmup + full_steps)])
    graph_full = graph.full()
    sampled_batches = iter(batches(warmup + steps))
    hops: list[list[int]] = []
    sizes: list[tuple[int, int]] = []

    def sampled_step() -> dict:
        clock = Clock()
        batch = next(sampled_batches)
        clock("sample")
        train_step(*sampled, batch, ot, it, cfg.l2, criterion, clock=clock)
        sub = batch.sub
        hops.append([sum(sub.num_sampled_nodes[t][h] for t in graph.node_types
                         if h < len(sub.num_sampled_nodes[t]))
                     for h in range(len(cfg.fanouts) + 1)])
        sizes.append((sum(sub.num_nodes(t) for t in graph.node_types),
                      sum(int(e.size(1)) for e in sub.edge_index.values())))
        return clock.done()

    def full_step() -> dict:
        clock = Clock()
        batch = next(full_batches)
        clock("sample")  # drawn up front: ~0
        train_step(*full_arm, batch, ot, it, cfg.l2, criterion, sub=graph_full,
                   clock=clock)
        return clock.done()

    for _ in range(warmup):
        sampled_step()
    for _ in range(full_warmup):
        full_step()
    hops.clear()
    sizes.clear()
    s_times, f_times = [], []
    for k in range(steps):
        s_times.append(sampled_step())
        while len(f_times) < (k + 1) * full_steps // steps:
            f_times.append(full_step())
    while len(f_times) < full_steps:
        f_times.append(full_step())
    s = summarise(s_times, batch_size * cfg.pos_per_owner)
    s["sub_nodes_mean"] = statistics.mean(x[0] for x in sizes)
    s["sub_edges_mean"] = statistics.mean(x[1] for x in sizes)
    s["nodes_per_hop_mean"] = [round(statistics.mean(h[i] for h in hops))
                               for i in range(len(hops[0]))]
    return s, summarise(f_times, batch_size * cfg.pos_per_owner)


def profile_sampled(base, cfg, graph, owners, batch_size, steps, top: int = 20) -> str:
    from torch.profiler import ProfilerActivity, profile, record_function

    model, opts = make_arm(base, cfg)
    criterion = loss_fn(cfg.loss, dot_weight=cfg.dot_loss)
    ot, it = graph.owner_type, graph.item_type
    batches = iter(BPRBatches(graph, owners, batch_size=batch_size, num_neg=cfg.num_neg,
                              fanouts=cfg.fanouts, seed=cfg.seed, steps=steps + 1,
                              pos_per_owner=cfg.pos_per_owner, neg_pool=cfg.neg_pool,
                              neg_popularity=cfg.neg_popularity,
                              owner_rows=owner_row_links(cfg, base),
                              pair_knn=pair_knn(base, graph)))
    batch = next(batches)  # warm-up
    train_step(model, opts, batch, ot, it, cfg.l2, criterion)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            with record_function("## sample"):
                batch = next(batches)
            with record_function("## step"):
                train_step(model, opts, batch, ot, it, cfg.l2, criterion)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def main() -> None:
    cfg = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/mpd/slices")
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--batch-sizes", default=f"{cfg.batch_size},{MODES['full']['batch_size']}",
                    help="owners per step (TrainConfig default, 'full' mode)")
    ap.add_argument("--steps", type=int, default=20, help="timed sampled steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed sampled steps first")
    ap.add_argument("--full-steps", type=int, default=3, help="timed full-graph steps")
    ap.add_argument("--full-warmup", type=int, default=1)
    ap.add_argument("--profile", type=int, default=0,
                    help="also profile N sampled steps (first batch size, last thread count)")
    ap.add_argument("--fanouts", default="",
                    help="override TrainConfig.fanouts, e.g. 10,2 (default: the TrainConfig one)")
    args = ap.parse_args()
    if args.fanouts:
        cfg.fanouts = [int(f) for f in args.fanouts.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    sizes = [int(b) for b in args.batch_sizes.split(",")]

    load0 = load()
    t0 = time.perf_counter()
    ds = load_any(args.data)
    split = make_split(ds, holdout=5, val_ratio=0.15, test_ratio=0.15, max_val_owners=None,
                       seed=0)  # every validation owner (not the loop's sample of 1,000)
    graph = build_graph(ds, split, "fit")
    torch.manual_seed(cfg.seed)
    base = make_model(cfg, graph)  # the model the training loop builds
    owners = torch.nonzero(graph.csr[graph.interaction].degree() > 0).flatten()
    n_edges = sum(int(e.size(1)) for e in graph.edge_index.values())
    n_nodes = sum(graph.num_nodes.values())
    print(f"data {args.data}: {ds.num_owners:,} playlists, {graph.num_nodes}, {n_edges:,} "
          f"directed edges; model {cfg.model}, {count_parameters(base):,} parameters; "
          f"set-up {time.perf_counter() - t0:.1f} s")
    print(f"machine: {os.cpu_count()} cores, load {load0:.2f}; TrainConfig: pos_per_owner "
          f"{cfg.pos_per_owner}, num_neg {cfg.num_neg}, fanouts {cfg.fanouts}, dim "
          f"{cfg.embedding_dim}, heads {cfg.heads}, layers {cfg.num_layers}")

    rows = []
    for nt in threads:
        torch.set_num_threads(nt)
        for bs in sizes:
            la = load()
            s, f = run_pair(base, cfg, graph, owners, bs, args.warmup, args.steps,
                            args.full_warmup, args.full_steps)
            row = {"threads": nt, "batch_size": bs, "triples_per_step": s["triples_per_step"],
                   "sampled": s, "full": f, "ratio": s["triples_per_s"] / f["triples_per_s"],
                   "ratio_median": f["median_step_s"] / s["median_step_s"],
                   "ratio_cpu": s["triples_per_cpu_s"] / f["triples_per_cpu_s"],
                   "load_before": la, "load_after": load()}
            rows.append(row)
            print(f"  threads {nt} batch {bs}: sampled {s['triples_per_s']:,.0f} triples/s, "
                  f"full {f['triples_per_s']:,.0f} triples/s, ratio {row['ratio']:.1f}x "
                  f"(load {la:.1f} -> {row['load_after']:.1f})", flush=True)

    print()
    print("triples/s = timed triples / timed wall seconds; ratio(med) = full median step / "
          "sampled median step; ratio(cpu) = the same on process CPU seconds")
    hdr = (f"{'thr':>3} {'batch':>5} {'triples':>7} | {'sampled t/s':>11} {'med s':>6} "
           f"{'max s':>6} | {'full t/s':>8} {'med s':>6} {'max s':>6} | {'ratio':>6} {'ratio(med)':>10} {'ratio(cpu)':>10} | "
           f"{'load':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        s, f = r["sampled"], r["full"]
        print(f"{r['threads']:>3} {r['batch_size']:>5} {r['triples_per_step']:>7} | "
              f"{s['triples_per_s']:>11,.0f} {s['median_step_s']:>6.2f} {s['max_step_s']:>6.2f} | "
              f"{f['triples_per_s']:>8,.0f} {f['median_step_s']:>6.2f} {f['max_step_s']:>6.2f} | "
              f"{r['ratio']:>5.1f}x {r['ratio_median']:>9.1f}x {r['ratio_cpu']:>9.1f}x | "
              f"{r['load_before']:>4.1f}-{r['load_after']:<4.1f}")
    print()
    print("median wall seconds per phase; sampled subgraph: mean nodes / edges, mean new nodes "
          "per hop (hop 0 = distinct seeds)")
    print(f"{'thr':>3} {'batch':>5} {'arm':>7} | " + " ".join(f"{p:>8}" for p in PHASES)
          + " | nodes / edges")
    for r in rows:
        for arm in ("sampled", "full"):
            a = r[arm]
            extra = (f"{a['sub_nodes_mean']:,.0f} / {a['sub_edges_mean']:,.0f}, per hop "
                     f"{a['nodes_per_hop_mean']}"
                     if arm == "sampled" else f"{n_nodes:,} / {n_edges:,} (whole graph)")
            print(f"{r['threads']:>3} {r['batch_size']:>5} {arm:>7} | "
                  + " ".join(f"{a['phases_median_s'][p]:>8.3f}" for p in PHASES) + f" | {extra}")

    if args.profile:
        print(f"\ntorch.profiler, {args.profile} sampled steps, batch {sizes[0]}, threads "
              f"{torch.get_num_threads()}, sorted by self CPU time:")
        print(profile_sampled(base, cfg, graph, owners, sizes[0], args.profile))

    summary = {"bench": "step", "cores": os.cpu_count(), "load_start": load0,
               "load_end": load(), "graph_nodes": n_nodes, "graph_edges": n_edges,
               "results": [{"threads": r["threads"], "batch_size": r["batch_size"],
                            "triples_per_step": r["triples_per_step"],
                            "sampled_triples_per_s": round(r["sampled"]["triples_per_s"], 1),
                            "full_triples_per_s": round(r["full"]["triples_per_s"], 1),
                            "ratio": round(r["ratio"], 2),
                            "ratio_median": round(r["ratio_median"], 2),
                            "ratio_cpu": round(r["ratio_cpu"], 2),
                            "sampled_step_s_median_max": [round(r["sampled"]["median_step_s"], 3),
                                                          round(r["sampled"]["max_step_s"], 3)],
                            "full_step_s_median_max": [round(r["full"]["median_step_s"], 3),
                                                       round(r["full"]["max_step_s"], 3)],
                            "sampled_phases_median_s": {k: round(v, 4) for k, v in
                                                        r["sampled"]["phases_median_s"].items()},
                            "full_phases_median_s": {k: round(v, 4) for k, v in
                                                     r["full"]["phases_median_s"].items()},
                            "sub_nodes_mean": round(r["sampled"]["sub_nodes_mean"]),
                            "sub_edges_mean": round(r["sampled"]["sub_edges_mean"]),
                            "sub_nodes_per_hop": r["sampled"]["nodes_per_hop_mean"],
                            "load": [round(r["load_before"], 2), round(r["load_after"], 2)]}
                           for r in rows]}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

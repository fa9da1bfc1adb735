"""Gradient synchronisation cost: sparse-row sync (``sync_gradients``) against a dense all-reduce.

    .venv/bin/python -m benchmarks.bench_sync [--sizes 100000,2000000] [--dim 64] [--rows 5000]
        [--steps 10] [--warmup 2] [--world 2] [--threads 1]

Starts ``--world`` processes (torch.multiprocessing, gloo over tcp://127.0.0.1 on a free port).
Each builds the same :class:`~engine.models.PlaylistGAT` (``build_model("playlist", meta)``, with
track ID embeddings, LayerNorm and ELU, which are not the defaults) from
synthetic metadata shaped like the MPD graph: ``N`` tracks (each catalogue size of ``--sizes``),
``N * --artist-ratio`` artists (MPD: 296k / 2.26M), ``--owners`` playlists, 33 genres, the MPD
edge types and feature widths, TrainConfig's heads / layers / dropout, dimension ``--dim``. Per
step every rank draws its own synthetic batch: a subgraph over ``--rows`` distinct random tracks
(``rows / 10`` playlists, ``rows / 5`` artists, every genre; ``2 * rows`` random edges per edge
type) and 1024 BPR triples with 4 negatives; forward, ``bpr_loss``, backward, then

* **sparse**: ``split_parameters(model, True)``, ``sync_gradients(dense, sparse)`` (all-gather of
  the touched embedding rows + one all-reduce of the dense weights), Adam + SparseAdam;
* **dense**: ``split_parameters(model, False)`` and ``all_reduce`` of every parameter's (dense)
  gradient, then Adam on everything: what DDP does with dense embeddings.

A barrier precedes each sync so the sync time excludes waiting for the slower rank's backward;
per step the maximum over ranks is kept, and the table shows the median over the timed steps.
"floats" counts what each rank puts into the collectives (dense: every gradient entry; sparse:
the dense weights' entries + per table ``longest row count x (dim + 1)``, the row ids counted as
one number each), next to ``sync_gradients``' own return value. After the steps every
parameter of every rank is compared with rank 0's (``torch.allclose``; the maximum difference is
printed). Prints a table and a final JSON line.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import statistics
import tempfile
import time
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from engine.graph.types import Subgraph
from engine.models import build_model
from engine.training.config import TrainConfig
from engine.training.losses import bpr_loss
from engine.training.optim import make_optimisers
from engine.training.sync import sync_gradients

OWNER, ITEM = "playlist", "track"
FORWARD_TYPES = [("playlist", "to", "track"), ("track", "to", "artist"),
                 ("playlist", "to", "genre"), ("track", "to", "genre"), ("artist", "to", "genre")]
EDGE_TYPES = [et for (s, r, d) in FORWARD_TYPES for et in ((s, r, d), (d, r, s))]
FEATURE_DIMS = {"playlist": 1, "track": 1, "artist": 2}  # as build_graph gives without audio
TRIPLES, NUM_NEG = 1024, 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def meta(num_tracks: int, args) -> dict:
    return {"num_nodes": {OWNER: args.owners, ITEM: num_tracks,
                          "artist": max(1, int(num_tracks * args.artist_ratio)), "genre": 33},
            "owner_type": OWNER, "item_type": ITEM, "edge_types": EDGE_TYPES,
            "feature_dims": FEATURE_DIMS, "edge_attr_dims": {}}


def synthetic_batch(m: dict, rows: int, gen: torch.Generator):
    """A subgraph over ``rows`` distinct random tracks (and proportionate other nodes) plus BPR
    triples in its local indices."""
    sizes = {OWNER: max(1, rows // 10), ITEM: rows, "artist": max(1, rows // 5), "genre": 33}
    n_id = {}
    for t, k in sizes.items():
        n = m["num_nodes"][t]
        k = min(k, n)
        # distinct ids without an O(n) permutation: oversample, unique, trim
        ids = torch.unique(torch.randint(n, (2 * k + 64,), generator=gen))
        ids = ids[torch.randperm(ids.numel(), generator=gen)][:k]
        n_id[t] = ids
    edge_index = {}
    for s, _, d in EDGE_TYPES:
        e = 2 * rows
        edge_index[(s, "to", d)] = torch.stack([
            torch.randint(n_id[s].numel(), (e,), generator=gen),
            torch.randint(n_id[d].numel(), (e,), generator=gen)])
    x = {t: torch.randn(n_id[t].numel(), w, generator=gen) for t, w in FEATURE_DIMS.items()}
    sub = Subgraph(n_id=n_id, edge_index=edge_index, x=x)

    batch = SimpleNamespace(  # what bpr_loss reads
        owner_idx=torch.randint(n_id[OWNER].numel(), (TRIPLES,), generator=gen),
        pos_idx=torch.randint(n_id[ITEM].numel(), (TRIPLES,), generator=gen),
        neg_idx=torch.randint(n_id[ITEM].numel(), (TRIPLES, NUM_NEG), generator=gen))
    return sub, batch


def dense_all_reduce(params: list[torch.nn.Parameter], world_size: int) -> int:
    """What DDP does with dense embeddings: all-reduce (average) every gradient."""
    sent = 0
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world_size
        sent += p.grad.numel()
    return sent


def payload_sparse(dense, sparse, world_size: int) -> int:
    """Numbers this rank puts into sync_gradients' collectives (computed before the sync)."""
    n = sum(p.numel() for p in dense)
    for p in sparse:
        rows = p.grad.coalesce().indices().size(1) if p.grad is not None else 0
        t = torch.tensor([rows])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)  # padded to the longest rank
        n += int(t) * (p.size(1) + 1)
    return n


def max_over_ranks(values: list[float]) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def compare_with_rank0(model: torch.nn.Module) -> float:
    """Max |p - p_rank0| over every parameter, maximum over ranks; asserts allclose."""
    worst = 0.0
    for name, p in model.named_parameters():
        ref = p.detach().clone()
        dist.broadcast(ref, 0)
        diff = float((p.detach() - ref).abs().max()) if p.numel() else 0.0
        worst = max(worst, diff)
        ok = torch.tensor([int(torch.allclose(p.detach(), ref))])
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        assert int(ok) == 1, f"parameter {name} differs across ranks (max diff {diff})"
    return max_over_ranks([worst])[0]


def run_mode(rank: int, world_size: int, num_tracks: int, sparse_mode: bool, args) -> dict:
    cfg = TrainConfig()
    m = meta(num_tracks, args)
    torch.manual_seed(cfg.seed)  # identical initial replicas
    # Track ID embeddings on (not the default): the catalogue-sized table is what sparse sync is
    # for; the other options as when the figures in docs/benchmarks-training.md were measured.
    model = build_model("playlist", m, embedding_dim=args.dim, heads=cfg.heads,
                        num_layers=cfg.num_layers, dropout=cfg.dropout,
                        genre_weight=cfg.genre_weight,
                        id_embeddings=["playlist", "track", "artist", "genre"],
                        feature_types=["playlist", "track", "artist"], layer_norm=True,
                        activation=True)
    opt = make_optimisers(dataclasses.replace(cfg, sparse_embeddings=sparse_mode), model)
    dense, sparse = opt.dense, opt.sparse
    gen = torch.Generator().manual_seed(1000 + rank)  # each rank its own batches
    rec = {"compute": [], "sync": [], "optim": []}
    floats = mine = 0
    grads_differed = None
    for step in range(args.warmup + args.steps):
        sub, batch = synthetic_batch(m, args.rows, gen)
        t0 = time.perf_counter()
        loss = bpr_loss(model(sub), OWNER, ITEM, batch, cfg.l2)
        opt.zero_grad()
        loss.backward()
        t1 = time.perf_counter()
        if step == 0:  # the ranks' local gradients differ before the sync (else the check is moot)
            g = next(p.grad for p in dense if p.grad is not None).detach().clone()
            ref = g.clone()
            dist.broadcast(ref, 0)
            grads_differed = bool(max_over_ranks([float((g - ref).abs().max())])[0] > 0)
        mine = payload_sparse(dense, sparse, world_size) if sparse_mode else 0
        dist.barrier()
        t2 = time.perf_counter()
        if sparse_mode:
            floats = sync_gradients(dense, sparse)
        else:
            floats = mine = dense_all_reduce(dense, world_size)
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if step >= args.warmup:
            rec["compute"].append(t1 - t0)
            rec["sync"].append(t3 - t2)
            rec["optim"].append(t4 - t3)
    rec = {k: max_over_ranks(v) for k, v in rec.items()}
    max_diff = compare_with_rank0(model)
    emb_rows = sum(p.size(0) for mod in model.modules()
                   if isinstance(mod, torch.nn.Embedding) for p in [mod.weight])
    out = {"tracks": num_tracks, "mode": "sparse" if sparse_mode else "dense",
           "embedding_rows": emb_rows,
           "params": sum(p.numel() for p in model.parameters()),
           "dense_params": sum(p.numel() for p in dense),
           "sync_ms_median": 1e3 * statistics.median(rec["sync"]),
           "sync_ms_min": 1e3 * min(rec["sync"]),
           "compute_ms_median": 1e3 * statistics.median(rec["compute"]),
           "optim_ms_median": 1e3 * statistics.median(rec["optim"]),
           "floats_sent": mine, "sync_gradients_return": floats if sparse_mode else None,
           "grads_differed_before_sync": grads_differed,
           "replicas_identical": True, "max_param_diff": max_diff}
    del model, opt, dense, sparse
    return out


def worker(rank: int, world_size: int, port: int, args, out_path: str) -> None:
    torch.set_num_threads(args.threads)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    try:
        results = []
        for n in args.sizes:
            for mode in args.modes:
                r = run_mode(rank, world_size, n, mode == "sparse", args)
                r["load"] = os.getloadavg()[0]
                results.append(r)
                if rank == 0:
                    print(f"  {n:>9,} tracks {r['mode']:>6}: sync {r['sync_ms_median']:8.1f} ms, "
                          f"{r['floats_sent']:>12,} floats, replicas identical "
                          f"(max diff {r['max_param_diff']:.1e}), load {r['load']:.1f}",
                          flush=True)
        if rank == 0:
            with open(out_path, "w") as f:
                json.dump(results, f)
    finally:
        dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,2000000", help="catalogue sizes (tracks)")
    ap.add_argument("--dim", type=int, default=TrainConfig().embedding_dim)
    ap.add_argument("--rows", type=int, default=5000, help="distinct tracks touched per step")
    ap.add_argument("--owners", type=int, default=10_000, help="playlists (embedding rows)")
    ap.add_argument("--artist-ratio", type=float, default=0.13, help="artists per track")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--world", type=int, default=2, help="processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--modes", default="sparse,dense")
    args = ap.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.modes = args.modes.split(",")
    load0 = os.getloadavg()[0]
    port = free_port()
    print(f"{args.world} processes x {args.threads} torch thread(s), gloo on 127.0.0.1:{port}; "
          f"{os.cpu_count()} cores, load {load0:.2f}; dim {args.dim}, ~{args.rows} tracks "
          f"touched per step per rank, {args.steps} timed steps after {args.warmup}")
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "results.json")
        t0 = time.perf_counter()
        mp.spawn(worker, args=(args.world, port, args, out_path), nprocs=args.world, join=True)
        wall = time.perf_counter() - t0
        with open(out_path) as f:
            results = json.load(f)

    print()
    hdr = (f"{'tracks':>9} {'emb rows':>10} {'mode':>6} | {'sync ms':>8} {'(min)':>7} | "
           f"{'floats sent':>12} {'MB':>7} | {'compute ms':>10} {'optim ms':>9} | {'identical':>9}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        print(f"{r['tracks']:>9,} {r['embedding_rows']:>10,} {r['mode']:>6} | "
              f"{r['sync_ms_median']:>8.1f} {r['sync_ms_min']:>7.1f} | "
              f"{r['floats_sent']:>12,} {r['floats_sent'] * 4 / 1e6:>7.1f} | "
              f"{r['compute_ms_median']:>10.1f} {r['optim_ms_median']:>9.1f} | "
              f"{r['replicas_identical']!s:>9}")
    by = {(r["tracks"], r["mode"]): r for r in results}
    growth = {}
    if len(args.sizes) >= 2:
        lo, hi = min(args.sizes), max(args.sizes)
        for mode in args.modes:
            if (lo, mode) in by and (hi, mode) in by:
                growth[mode] = by[(hi, mode)]["sync_ms_median"] / by[(lo, mode)]["sync_ms_median"]
        print(f"\nsync time growth {lo:,} -> {hi:,} tracks ({hi / lo:.0f}x catalogue): "
              + ", ".join(f"{k} {v:.1f}x" for k, v in growth.items()))
    for r in results:
        if r["sync_gradients_return"] is not None:
            print(f"sync_gradients returned {r['sync_gradients_return']:,} for {r['tracks']:,} "
                  f"tracks (payload computed here: {r['floats_sent']:,})")
    print(f"pre-sync gradients differed across ranks: "
          f"{all(r['grads_differed_before_sync'] for r in results)}; wall {wall:.0f} s")
    print(json.dumps({"bench": "sync", "cores": os.cpu_count(), "world": args.world,
                      "threads": args.threads, "load_start": load0, "load_end": os.getloadavg()[0],
                      "dim": args.dim, "rows": args.rows, "growth": growth,
                      "results": [{k: (round(v, 3) if isinstance(v, float) else v)
                                   for k, v in r.items()} for r in results]}))


if __name__ == "__main__":
    main()

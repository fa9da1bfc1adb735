"""The training loop data-parallel over plain torch.distributed (gloo), without Ray.

    python -m benchmarks.bench_workers_noray [--dataset runs/bench_workers_2/dataset]

Runs :func:`engine.training.loop.train_loop_per_worker` (``context="local"``) in 2 processes
started by ``torch.multiprocessing`` and in 1 process, 1 torch thread each, and reports
triples/s and the time each rank spent in ``sync_gradients`` (which includes waiting for the
slower rank). Separates the loop's own scaling from Ray's overhead on a small machine. The
default dataset is the one ``benchmarks.bench_workers --mode balanced`` prepares.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time

import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks._run import ROOT, load


def _worker(rank: int, world: int, dataset: str, epochs: int, port: int) -> None:
    from engine.training import loop, optim

    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    original, spent = optim.sync_gradients, [0.0, 0]

    def timed(dense, sparse, **kw):
        t0 = time.perf_counter()
        out = original(dense, sparse, **kw)
        spent[0] += time.perf_counter() - t0
        spent[1] += 1
        return out

    optim.sync_gradients = timed  # what Optimisers.sync calls (engine.training.steps.train_step)
    out = ROOT / "runs" / f"bench_noray_{world}"
    result = loop.train_loop_per_worker({
        "dataset": dataset, "output": str(out), "epochs": epochs, "batch_size": 96,
        "patience": 0, "progress": False, "num_threads": 1, "final_test": False})
    (out / f"sync_rank{rank}.json").write_text(json.dumps({"seconds": spent[0], "steps": spent[1]}))
    if result is not None:
        (out / "result.json").write_text(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default=str(ROOT / "runs" / "bench_workers_2" / "dataset"))
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    figures = {}
    for world in (1, 2):
        out = ROOT / "runs" / f"bench_noray_{world}"
        shutil.rmtree(out, ignore_errors=True)
        if world == 1:
            _worker(0, 1, a.dataset, a.epochs, 0)
        else:
            mp.spawn(_worker, args=(world, a.dataset, a.epochs, 29533), nprocs=world)
        ckpt = max((out / "checkpoints").glob("epoch_*/state.pt"))
        import torch

        hist = torch.load(ckpt, weights_only=True)["history"][1:]
        tps = statistics.median(h["triples_per_s"] for h in hist)
        syncs = [json.loads(f.read_text()) for f in sorted(out.glob("sync_rank*.json"))]
        figures[world] = {"triples_per_s": tps,
                          "sync_ms_per_step": [round(1000 * s["seconds"] / max(s["steps"], 1), 1)
                                               for s in syncs]}
        print(f"{world} process(es): {tps:,.0f} triples/s (median of epochs 2..{a.epochs}); "
              f"sync incl. waiting {figures[world]['sync_ms_per_step']} ms/step", flush=True)
    print(f"2 vs 1 process: {figures[2]['triples_per_s'] / figures[1]['triples_per_s']:.2f}x; "
          f"load average {load()}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

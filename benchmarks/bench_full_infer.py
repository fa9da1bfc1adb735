"""Rank 0's validation forward at full mode's size: its time and peak extra memory (issue #15).

    PYTHONPATH=CHECKOUT python benchmarks/bench_full_infer.py --dataset RUN/dataset [--repeat 2]

Builds full mode's model (``mode_config("full")`` of the checkout on ``PYTHONPATH``, so an older
commit runs with its own preset) on the fit graph, SVD-started as a run starts, and times
``engine.models.infer`` (the full-graph forward every validation and the test run make) in a
fresh process per repeat (2 threads). The peak extra memory is the process's high-water RSS
during the forward (``VmHWM``, reset to the current RSS just before it through
``/proc/self/clear_refs``: the SVD start sets a higher mark first) minus its RSS before it.
Prints one JSON line per repeat.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _status_gb(key: str) -> float:
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines()
                if ln.startswith(key + ":"))
    return int(line.split()[1]) / 2**20  # kB


def one(dataset: str, chunk: int) -> dict:
    import torch

    from engine.models import infer, layers
    from engine.models.init import svd_init_
    from engine.training.config import TrainConfig, make_model, mode_config
    from engine.training.run_data import RunData

    torch.set_num_threads(2)
    layers.CHUNK_EDGES = chunk or layers.CHUNK_EDGES
    cfg = TrainConfig(dataset=dataset, **mode_config("full"))
    graph = RunData.load(cfg).graph("fit")
    model = make_model(cfg, graph)
    svd_init_(model, graph, cfg.seed)
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark := the RSS now
    base = _status_gb("VmRSS")
    t0 = time.perf_counter()
    vecs = infer(model, graph)
    seconds = time.perf_counter() - t0
    extra = _status_gb("VmHWM") - base
    return {"chunk_edges": layers.CHUNK_EDGES, "seconds": round(seconds, 1), "peak_extra_gb": round(extra, 3),
            "base_gb": round(base, 3),
            "parameters": sum(p.numel() for p in model.parameters()),
            "vectors_sum": float(sum(v.double().sum() for v in vecs.values()))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--chunk-edges", type=int, nargs="+", default=[0],
                    help="layers.CHUNK_EDGES values to alternate (0: the code's own)")
    args = ap.parse_args()
    ctx = multiprocessing.get_context("spawn")
    for _ in range(args.repeat):
        for chunk in args.chunk_edges:
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                print(json.dumps(pool.submit(one, args.dataset, chunk).result()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Rank 0's validation forward at full mode's size: its time and peak extra memory (issue #15).

    PYTHONPATH=CHECKOUT python benchmarks/bench_full_infer.py --dataset RUN/dataset [--repeat 2]

Builds full mode's model (``mode_config("full")`` of the checkout on ``PYTHONPATH``, so an older
commit runs with its own preset) on the fit graph, SVD-started as a run starts, and times
``engine.models.infer`` (the full-graph forward every validation and the test run make) in a
fresh process per repeat (2 threads). The peak is ``ru_maxrss`` after the forward minus before
it, so the process must be fresh: a high-water mark set earlier hides it. Prints one JSON line
per repeat.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor


def one(dataset: str) -> dict:
    import torch

    from engine.models import infer
    from engine.models.init import svd_init_
    from engine.training.config import TrainConfig, make_model, mode_config
    from engine.training.run_data import RunData

    torch.set_num_threads(2)
    cfg = TrainConfig(dataset=dataset, **mode_config("full"))
    graph = RunData.load(cfg).graph("fit")
    model = make_model(cfg, graph)
    svd_init_(model, graph, cfg.seed)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    vecs = infer(model, graph)
    seconds = time.perf_counter() - t0
    extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
    return {"seconds": round(seconds, 1), "peak_extra_gb": round(extra / 2**30, 3),
            "base_gb": round(base * 1024 / 2**30, 3),
            "parameters": sum(p.numel() for p in model.parameters()),
            "vectors_sum": float(sum(v.double().sum() for v in vecs.values()))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    ctx = multiprocessing.get_context("spawn")
    for _ in range(args.repeat):
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            print(json.dumps(pool.submit(one, args.dataset).result()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

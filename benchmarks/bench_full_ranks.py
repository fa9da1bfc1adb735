"""Where each rank's full-mode step goes with several workers on one node (issue #15).

    python benchmarks/bench_full_ranks.py --dataset RUN/dataset [--workers 4] [--steps 30] \
        [--out runs/bench_full_ranks] [--graph-store STORE] [--code OTHER_CHECKOUT]

Runs the training loop (:func:`engine.training.loop.train_loop_per_worker`, full mode's batch
shape: batch 256, fanouts [10, 3], ``id_min_edges`` 2) in ``--workers`` processes over
torch.distributed (gloo), without Ray, ``--threads`` torch threads each (1), for ``--steps``
steps and the two validations of a one-epoch run (the start's and the epoch's), and reports per
rank the mean ms a step spends in each phase:

* ``sample``: drawing the batch (the time between two steps);
* ``forward``, ``loss``, ``backward``, ``sync`` (the gradient sync, waiting for the slowest rank
  included), ``optim`` (the optimiser steps; ``node_step`` is its node-shared sparse part with
  the barrier after it);
* and the seconds of the two validations (rank 0 evaluates, the others wait).

The loop's own code runs; the phases are read by wrapping ``train_step`` (whose ``clock``
argument marks each phase's end), ``NodeShared.step`` and ``validate``. ``--code``: run another
checkout of the project (e.g. an older commit's worktree) on the same dataset, for a before /
after pair. The graph store (split and graphs, mapped by every rank; e.g. a full-mode job's
``RUN/graph_store``) is built first when ``--graph-store`` (default ``OUT/graph_store``) is not
there. Prints the triples per second of the epoch (the loop's own figure).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# imported here, before a worker puts --code first on the path: this checkout's helper
from benchmarks._run import timed


def _config(args, rank_out: str) -> dict:
    """The loop's config, with full mode's batch shape (``args.shape``, from ``MODES``)."""
    return {"dataset": str(Path(args.dataset).resolve()), "output": rank_out, "epochs": 1,
            "steps_per_epoch": args.steps, "patience": 0, "progress": False,
            "num_threads": args.threads, "final_test": False, **args.shape}


def _worker(rank: int, world: int, args, port: int) -> None:
    sys.path.insert(0, args.code)
    import torch.distributed as dist

    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
    from engine.training import loop, shared, steps

    spent: dict[str, float] = {}
    mark = [0.0, None]  # last clock time, end of the previous step

    def add(phase: str, seconds: float) -> None:
        spent[phase] = spent.get(phase, 0.0) + seconds

    def clock(phase: str) -> None:
        now = time.perf_counter()
        add(phase, now - mark[0])
        mark[0] = now

    step = steps.train_step

    def timed_step(*a, **kw):
        if mark[1] is not None:
            add("sample", time.perf_counter() - mark[1])
        mark[0] = time.perf_counter()
        value = step(*a, clock=clock, **kw)
        mark[1] = time.perf_counter()
        add("steps", 1)
        return value

    steps.train_step = timed_step
    shared.NodeShared.step = timed(shared.NodeShared.step, "node_step", spent)
    loop.validate = timed(loop.validate, "validate_s", spent)
    out = Path(args.out)
    cfg = _config(args, str(out / "run"))
    cfg["graph_store"] = args.graph_store
    result = loop.train_loop_per_worker(cfg)
    n = spent.pop("steps")
    row = {k: round(v, 1) if k.endswith("_s") else round(1000 * v / n, 1)
           for k, v in spent.items()}
    (out / f"rank{rank}.json").write_text(json.dumps(row))
    if result is not None:
        (out / "result.json").write_text(json.dumps(result))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="prepared full-mode dataset folder")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30, help="steps per worker")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--out", default="runs/bench_full_ranks")
    ap.add_argument("--graph-store", default="", help="graph store folder (default OUT/graph_store)")
    ap.add_argument("--code", default=str(ROOT), help="checkout whose engine runs")
    args = ap.parse_args()
    args.graph_store = str(Path(args.graph_store or Path(args.out) / "graph_store").resolve())
    args.code = str(Path(args.code).resolve())
    if not (Path(args.code) / "engine").is_dir():  # else this checkout would run, unsaid
        ap.error(f"--code {args.code}: not a checkout of the project (no engine/ folder)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, args.code)
    import socket

    import torch.multiprocessing as mp

    from engine.training.config import MODES, TrainConfig
    from engine.training.run_data import RunData

    # full mode's batch shape, as bench_full.py takes it
    args.shape = {k: v for k, v in MODES["full"].items()
                  if k in ("batch_size", "fanouts", "id_min_edges")}

    if not Path(args.graph_store).exists():
        print("building the graph store ...", flush=True)
        cfg = _config(args, str(out / "run"))
        RunData.save_store(TrainConfig.from_dict(cfg), args.graph_store)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    shutil.rmtree(out / "run", ignore_errors=True)  # an earlier run there would be resumed, not run
    t0 = time.perf_counter()
    mp.spawn(_worker, args=(args.workers, args, port), nprocs=args.workers, join=True)
    wall = time.perf_counter() - t0
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(args.workers)]
    print(f"{args.workers} process(es) x {args.threads} thread(s), {args.steps} steps, code "
          f"{args.code}, load {os.getloadavg()[0]:.1f}, {wall:.0f} s wall")
    print("rank  " + "  ".join(f"{k:>10}" for k in ranks[0]))
    for r, row in enumerate(ranks):
        print(f"{r:>4}  " + "  ".join(f"{row.get(k, 0):>10}" for k in ranks[0]))
    (out / "results.json").write_text(json.dumps({"workers": args.workers, "steps": args.steps,
                                                  "code": args.code, "ranks": ranks}, indent=1))
    print(f"results: {out / 'results.json'}; the epoch line above gives triples/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

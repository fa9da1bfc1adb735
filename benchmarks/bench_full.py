"""Full mode at Kaggle scale (issue #15): step time, memory with 1 and 4 workers, evaluation.

    python -m jobs.generate kaggle --rows 12900000 --seed 0 --output data/kaggle12.9M.csv
    python -m jobs.prepare ... (or a full-mode run's <output>/dataset)
    python benchmarks/bench_full.py --dataset RUN/dataset --out runs/bench_full

``--dataset`` is the prepared 50,000-playlist dataset full mode trains on (a full-mode run writes
it to ``<output>/dataset``). In one run:

1. **step**: a training step's phases (sample, forward, loss, backward, optimiser; one thread, no
   Ray) at full size and on a 1,000-playlist subset of the same dataset (quick mode's size) at
   the same batch shape (full mode's batch and fanouts), and their ratio; the subgraph's nodes
   per type and where the sample phase goes (negatives, subgraph, owner rows, item-kNN pair
   values); with the process's resident memory after the steps and after
   :func:`engine.training.heap.release_heap` (what a worker gives back before rank 0
   validates);
2. **memory**: ``jobs.train_kaggle --mode full`` with 1 and with 4 workers for ``--steps`` steps
   and the first validation; the peak total RSS and PSS (RSS counts a page shared by several
   processes once per process, PSS divides it among them) of every process of the run, sampled
   twice a second; the run is stopped once epoch 1 has been validated;
3. **eval**: the full-size test evaluation (model, popularity, item-kNN) on ``--eval-owners``
   test playlists: its time and peak extra memory (and those of its full-graph forward alone),
   and the time projected to every test playlist;
4. the projected epoch time with 4 workers (the measured time per step and validation, times the
   steps of a full epoch) and of a complete run (at most ``epochs`` of them; early stopping may
   end it sooner). Every projection is labelled as one.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_gb() -> float:
    """This process's resident memory now (Linux ``/proc``), in GB."""
    import os

    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**30, 3)


def step_profile(dataset: str, steps: int, batch_size: int, trim_every: int | None = None,
                 **over) -> dict:
    """Mean ms per phase of ``steps`` training steps (after two warm-up steps), one thread,
    the heap trimmed every ``trim_every`` steps as an epoch does (default the loop's
    ``TRIM_EVERY``; 0: never; the trim counts as the optimiser's); ``over``: further
    TrainConfig fields (e.g. ``fanouts``)."""
    import torch

    import engine.graph.batches as batches_module
    from benchmarks._run import timed
    from engine.graph.cooccur import ItemKNN
    from engine.graph.sampler import BPRBatches, owner_shard
    from engine.models.init import svd_init_
    from engine.training.config import TrainConfig, make_model, owner_row_links, pair_knn
    from engine.training.heap import release_heap, trim_heap
    from engine.training.losses import loss_fn
    from engine.training.optim import make_optimisers
    from engine.training.run_data import RunData
    from engine.training.steps import TRIM_EVERY, train_step

    trim_every = TRIM_EVERY if trim_every is None else trim_every

    torch.set_num_threads(1)
    cfg = TrainConfig(dataset=dataset, batch_size=batch_size, **over)
    graph = RunData.load(cfg).graph("fit")
    model = make_model(cfg, graph)
    svd_init_(model, graph, cfg.seed)
    opts = make_optimisers(cfg, model)
    owners = torch.nonzero(graph.csr[graph.interaction].degree() > 0).flatten()
    batches = iter(BPRBatches(
        graph, owner_shard(owners, 0, 1, cfg.seed), batch_size=cfg.batch_size,
        num_neg=cfg.num_neg, fanouts=cfg.fanouts, seed=cfg.seed, steps=steps + 2,
        pos_per_owner=cfg.pos_per_owner, neg_pool=cfg.neg_pool,
        neg_popularity=cfg.neg_popularity, owner_rows=owner_row_links(cfg, model),
        pair_knn=pair_knn(model, graph)))
    phases = dict.fromkeys(("sample", "forward", "loss", "backward", "optimiser"), 0.0)
    last, warm = 0.0, False
    # where the sample phase goes: the sampler's public pieces, timed in place (this process is
    # the profile's own); the rest of "sample" is drawing positives and dropping target edges
    sampling = dict.fromkeys(("negatives", "subgraph", "owner_rows", "pair_knn"), 0.0)
    for name, attr in (("negatives", "sample_negatives"), ("subgraph", "sample_subgraph"),
                       ("owner_rows", "add_owner_rows")):
        setattr(batches_module, attr,
                timed(getattr(batches_module, attr), name, sampling, lambda: warm))
    ItemKNN.pairs = timed(ItemKNN.pairs, "pair_knn", sampling, lambda: warm)

    def clock(phase: str) -> None:
        """train_step's clock; its sync (a no-op in one process) counts as the optimiser's."""
        nonlocal last
        now = time.perf_counter()
        if warm:
            phases[{"sync": "optimiser", "optim": "optimiser"}.get(phase, phase)] += now - last
        last = now

    nodes: dict[str, int] = {}
    for s in range(steps + 2):
        warm, last = s >= 2, time.perf_counter()  # two warm-up steps first
        b = next(batches)
        clock("sample")
        train_step(model, opts, b, graph.owner_type, graph.item_type, cfg.l2, loss_fn(cfg.loss),
                   clock=clock)
        if trim_every and (s + 1) % trim_every == 0:  # as train_epoch, counting from 1
            trim_heap()
            clock("optim")
        if warm:
            for t, v in b.sub.n_id.items():
                nodes[t] = nodes.get(t, 0) + int(v.numel())
    out = {name: 1000 * v / steps for name, v in phases.items()}
    out["total"] = sum(out.values())
    out["sample_parts"] = {name: 1000 * v / steps for name, v in sampling.items()}
    out["rss_gb_after_steps"] = _rss_gb()  # the model, graph and optimiser are still alive
    del b
    release_heap()
    out["rss_gb_after_release_heap"] = _rss_gb()
    out["subgraph_nodes"] = sum(nodes.values()) / steps
    out["subgraph_nodes_by_type"] = {t: n / steps for t, n in nodes.items()}
    out["trim_every"] = trim_every
    out["triples"] = cfg.batch_size * cfg.pos_per_owner
    out["us_per_triple"] = 1000 * out["total"] / out["triples"]
    out["graph"] = {t: int(n) for t, n in graph.num_nodes.items()}
    return out


def _tree_memory(pid: int) -> tuple[int, int, dict[str, float]]:
    """(RSS, PSS) in bytes summed over ``pid`` and its descendants (Ray's processes included),
    and the PSS in GB of each kind of process (driver, Ray Train worker, other Ray processes)."""
    import psutil

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0, {}
    rss = pss = 0
    kinds: dict[str, float] = {}
    for p in procs:
        try:
            info = p.memory_full_info()
            name = ("driver" if p.pid == pid else "RayTrainWorker" if "RayTrainWorker" in
                    " ".join(p.cmdline()) else "other Ray processes")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss, pss = rss + info.rss, pss + info.pss
        kinds[name] = kinds.get(name, 0.0) + info.pss / 2**30
    return rss, pss, kinds


def memory_run(dataset: str, workers: int, steps: int, out: Path) -> dict:
    """Run full mode for ``steps`` steps and its first validation; peak memory of the run."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "config.json"
    cfg.write_text(json.dumps({"steps_per_epoch": steps}))
    cmd = [sys.executable, "-m", "jobs.train_kaggle", "--data", dataset, "--mode", "full",
           "--workers", str(workers), "--epochs", "1", "--config", str(cfg), "--no-progress",
           "--output", str(out / f"run_w{workers}"), "--force-new"]
    log = (out / f"run_w{workers}.log").open("w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    peak = {"rss": 0, "pss": 0, "kinds": {}}
    lines: list[str] = []

    def sample():
        while proc.poll() is None:
            rss, pss, kinds = _tree_memory(proc.pid)
            peak["rss"] = max(peak["rss"], rss)
            if pss > peak["pss"]:
                peak["pss"], peak["kinds"] = pss, kinds
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in proc.stdout:
        lines.append(line)
        log.write(line)
        log.flush()
        if line.startswith("Epoch 1/1"):  # validated: the test evaluation is part 3's
            proc.send_signal(2)  # Ctrl-C: the job's own clean stop
            break
    proc.wait(timeout=300)
    sampler.join(timeout=5)
    epoch = next(ln for ln in lines if ln.startswith("Epoch 1/1"))
    estimate = next((ln for ln in lines if ln.startswith("memory estimate")), "")
    return {"workers": workers, "steps": steps, "peak_rss_gb": peak["rss"] / 2**30,
            "peak_pss_gb": peak["pss"] / 2**30, "wall_s": time.perf_counter() - t0,
            "pss_gb_at_peak": {k: round(v, 2) for k, v in peak["kinds"].items()},
            "epoch_line": epoch.strip(), "estimate": estimate.strip()}


def eval_run(dataset: str, owners: int, reuse: bool = True) -> dict:
    """The test evaluation (model + popularity + item-kNN) on ``owners`` test playlists, with
    freed pages reused as in rank 0's final test (``reuse=False``: glibc's defaults)."""
    import contextlib

    import torch

    from engine.eval.baselines import evaluate_with_baselines
    from engine.graph.split import HeldOut
    from engine.models import score_fn
    from engine.training.config import TrainConfig, make_model
    from engine.training.heap import reused_pages
    from engine.training.run_data import RunData

    torch.set_num_threads(2)
    cfg = TrainConfig(dataset=dataset, id_init="normal")
    data = RunData.load(cfg)
    graph = data.graph("train")
    torch.manual_seed(0)  # an untrained model: what is timed is the evaluation, not its figures
    model = make_model(cfg, graph)
    test = data.split.test
    k = min(owners, len(test))
    sample = HeldOut(test.owners[:k], test.indptr[:k + 1], test.items[:int(test.indptr[k])])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with reused_pages() if reuse else contextlib.nullcontext():  # as rank 0's final test does
        fn = score_fn(model, graph)
        t_infer = time.perf_counter() - t0
        infer_peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
        report = evaluate_with_baselines(fn, data.split, heldout=sample)
    seconds = time.perf_counter() - t0
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
    per_owner = (seconds - t_infer) / k
    return {"owners": k, "test_owners": len(test), "seconds": seconds, "infer_s": t_infer,
            "peak_extra_gb": peak / 2**30, "infer_peak_extra_gb": infer_peak / 2**30,
            "projected_all_s": t_infer + per_owner * len(test),
            "recall@10": {"model": report["test"]["recall@10"],
                          **{n: m["recall@10"] for n, m in report["baselines"].items()}}}


def _in_process(ctx, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a fresh process of ``ctx``."""
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="prepared full-mode dataset folder")
    ap.add_argument("--out", default="runs/bench_full", help="output folder")
    ap.add_argument("--steps", type=int, default=40, help="steps per measured phase or run")
    ap.add_argument("--eval-owners", type=int, default=2000, help="test playlists evaluated")
    ap.add_argument("--parts", nargs="+", default=["step", "memory", "eval"],
                    choices=["step", "memory", "eval"], help="which parts to run")
    ap.add_argument("--trim-every", type=int, default=None,
                    help="steps between heap trims in the step part (default: the loop's; 0: never)")
    ap.add_argument("--eval-default-heap", dest="reuse", action="store_false",
                    help="evaluate with glibc's defaults, not the final test's reused pages")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    res = json.loads(results_file.read_text()) if results_file.exists() else {}
    from engine.data.canonical import load_dataset, save_dataset
    from engine.data.subset import subset_owners
    from engine.training.config import MODES

    batch = MODES["full"]["batch_size"]
    # full mode's step: its fanouts and track ID rows (round 3), at both sizes
    shape = {k: v for k, v in MODES["full"].items() if k in ("fanouts", "id_min_edges")}
    if "step" in args.parts:
        small = out / "quick_size_dataset"
        if not small.exists():
            save_dataset(subset_owners(load_dataset(args.dataset), 1000, 0), small)
        # each in a fresh process, so that its resident memory is its own size's
        ctx = multiprocessing.get_context("spawn")
        full, quick = (_in_process(ctx, step_profile, data, args.steps, batch, args.trim_every,
                                   **shape)
                       for data in (args.dataset, str(small)))
        res["step"] = {"full": full, "quick_size": quick, "ratio": full["total"] / quick["total"],
                       "batch_size": batch, **shape}
        print(json.dumps(res["step"], indent=1), flush=True)
    if "memory" in args.parts:
        res["memory"] = [memory_run(args.dataset, w, args.steps, out) for w in (1, 4)]
        print(json.dumps(res["memory"], indent=1), flush=True)
    if "eval" in args.parts:
        # its own process: peak memory is read as maxrss, a high-water mark that the step
        # profile above would otherwise have set already
        res["eval"] = _in_process(multiprocessing.get_context("spawn"), eval_run, args.dataset,
                                  args.eval_owners, args.reuse)
        res["eval"]["reused_pages"] = args.reuse
        print(json.dumps(res["eval"], indent=1), flush=True)
    results_file.write_text(json.dumps(res, indent=1) + "\n")
    print(f"results: {results_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

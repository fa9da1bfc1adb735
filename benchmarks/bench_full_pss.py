"""Where a full-mode run's memory goes (issue #15): PSS per process and per kind of mapping.

    python benchmarks/bench_full_pss.py --dataset RUN/dataset --workers 4 --steps 20 \
        --out runs/pss [--code OTHER_CHECKOUT] [--config-json '{"id_min_edges": 1}']
    python benchmarks/bench_full_pss.py --draw A/pss.json B/pss.json --labels a b --png F.png

Runs ``jobs.train_kaggle --mode full`` (``--code``: from another checkout of the project, e.g.
an older commit, with the same dataset) for ``--steps`` steps per worker and its first
validation, as ``bench_full.memory_run`` does, and every ``--every`` seconds reads
``/proc/PID/smaps`` of every process of the run (driver, Ray Train workers, Ray's own
processes). Each mapping's PSS is put in one bucket:

* ``tables``: the node-shared ID tables (``/dev/shm/gatrec-*-param``), ``moments``: their
  Adam moments (``-exp_avg``, ``-exp_avg_sq``); both divided among the workers that map them;
* ``store``: the graph store's files (mapped copy-on-write by every worker);
* ``code``: other file mappings (Python, torch, Ray libraries);
* ``private``: anonymous memory (heap: the model's dense weights, gradients, sync buffers,
  a step's activations, rank 0's validation forward, each runtime's own heap).

Prints the peak of the total PSS with its breakdown per process and bucket, and each process's
own peak (rank 0's validation shows as the worker whose ``private`` peak is highest). PSS is what
the machine pays: a page shared by n processes counts 1/n in each. ``pss.json`` also keeps every
sample's total and the workers' private memory (``series``), drawn in ``pss.png`` (with
matplotlib), so that growth over an epoch (``--steps`` of a whole epoch) shows.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GB = 2**30


def bucket(path: str) -> str:
    if "/dev/shm/gatrec-" in path:
        return "moments" if "exp_avg" in path else "tables"
    if "graph_store" in path:
        return "store"
    if path.startswith("/") and not path.startswith("/dev/zero") and not path.startswith(
            "/SYSV"):
        return "code"
    return "private"  # [heap], [stack], anonymous


def smaps(pid: int) -> dict[str, int]:
    """PSS bytes of ``pid`` per :func:`bucket`."""
    out: dict[str, int] = {}
    path = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if line.startswith("Pss:"):
                b = bucket(path)
                out[b] = out.get(b, 0) + int(line.split()[1]) * 1024
            elif not line[0].isupper():  # a mapping's header: "start-end perms offset dev inode path"
                parts = line.split(None, 5)
                path = parts[5].strip() if len(parts) > 5 else ""
    return out


def label(pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    if "RayTrainWorker" in cmd:
        return f"worker {pid}"
    name = Path(cmd.split(" ")[0]).name or "ray"
    return f"ray {name if 'python' not in name else cmd.split(' ')[1][-40:]}"


def tree(pid: int) -> list[int]:
    import psutil

    try:
        p = psutil.Process(pid)
        return [pid, *(c.pid for c in p.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def shape(workers: int, steps: int) -> str:
    """A run's shape as the figures' titles and labels say it."""
    return f"{workers} workers, " + ("a whole epoch" if steps == 0 else f"{steps} steps a worker")


def draw(runs: dict[str, list[list[float]]], path: Path, title: str) -> None:
    """Total PSS and the workers' private memory against time, one colour per run of ``runs``
    (label -> ``series``), as a PNG (needs matplotlib, the ``report`` extra; skipped without)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for i, (name, series) in enumerate(runs.items()):
        t = [row[0] / 60 for row in series]
        ax.plot(t, [row[1] for row in series], color=f"C{i}", label=f"{name}: total PSS")
        ax.plot(t, [row[2] for row in series], color=f"C{i}", linestyle="--",
                label=f"{name}: workers' private")
    ax.set(xlabel="minutes since the job started", ylabel="GB", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_saved(files: list[str], labels: list[str], png: str) -> int:
    """``--draw``: the series of earlier runs' ``pss.json`` files in one figure."""
    if len(labels) != len(files):
        print(f"--labels: {len(labels)} labels for {len(files)} files", file=sys.stderr)
        return 2
    runs, shapes = {}, {}
    for name, f in zip(labels, files):
        try:
            res = json.loads(Path(f).read_text())
            runs[name] = res["series"]
        except (OSError, ValueError, KeyError) as exc:  # no file, not JSON, a run without series
            print(f"{f}: not a pss.json with a series ({exc.__class__.__name__}: {exc})",
                  file=sys.stderr)
            return 2
        shapes[name] = shape(res["workers"], res["steps"])
    if len(set(shapes.values())) > 1:  # runs of different shapes: each label says its own
        runs = {f"{name} ({shapes[name]})": series for name, series in runs.items()}
        title = "jobs.train_kaggle --mode full"
    else:
        title = f"jobs.train_kaggle --mode full, {next(iter(shapes.values()))}"
    draw(runs, Path(png), title)
    print(f"figure: {png}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", help="prepared full-mode dataset folder (not with --draw)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="runs/pss")
    ap.add_argument("--code", default=str(ROOT), help="checkout whose jobs.train_kaggle runs")
    ap.add_argument("--config-json", default="{}", help="further TrainConfig fields (JSON)")
    ap.add_argument("--job-args", default="",
                    help="further jobs.train_kaggle arguments, e.g. '--no-dashboard'")
    ap.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    ap.add_argument("--draw", nargs="+", metavar="PSS_JSON",
                    help="draw these earlier runs' pss.json in one figure (--png) and exit")
    ap.add_argument("--labels", nargs="+", default=[], help="one label per --draw file")
    ap.add_argument("--png", default="pss.png", help="--draw's figure")
    args = ap.parse_args()
    if args.draw:
        return draw_saved(args.draw, args.labels or args.draw, args.png)
    if not args.dataset:
        ap.error("--dataset is required (or --draw)")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "config.json"
    cfg.write_text(json.dumps({"steps_per_epoch": args.steps, **json.loads(args.config_json)}))
    cmd = [sys.executable, "-m", "jobs.train_kaggle", "--data", str(Path(args.dataset).resolve()),
           "--mode", "full", "--workers", str(args.workers), "--epochs", "1", "--config",
           str(cfg), "--no-progress", "--output", str(out / "run"), "--force-new",
           *shlex.split(args.job_args)]
    env = {**os.environ, "PYTHONPATH": args.code}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=args.code, env=env, stdout=subprocess.PIPE,
                            stderr=(out / "run.log").open("w"), text=True)
    peak = {"total": 0, "at": 0.0, "procs": {}}
    own: dict[str, dict] = {}
    series: list[list[float]] = []  # [seconds, total PSS, workers' private] per sample

    def sample():
        while proc.poll() is None:
            procs = {}
            for pid in tree(proc.pid):
                try:
                    procs[label(pid, proc.pid)] = smaps(pid)
                except OSError:
                    continue
            total = sum(sum(b.values()) for b in procs.values())
            private = sum(b.get("private", 0) for n, b in procs.items()
                          if n.startswith("worker"))
            series.append([round(time.perf_counter() - t0, 1), round(total / GB, 3),
                           round(private / GB, 3)])
            if total > peak["total"]:
                peak.update(total=total, at=time.perf_counter() - t0, procs=procs)
            for name, b in procs.items():
                if sum(b.values()) > sum(own.get(name, {}).values()):
                    own[name] = b
            time.sleep(args.every)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Epoch 1/1"):
            proc.send_signal(2)  # validated: stop (the job's own clean Ctrl-C)
            break
    proc.wait(timeout=300)
    th.join(timeout=10)

    def gb(b: dict) -> dict:
        return {k: round(v / GB, 3) for k, v in sorted(b.items())} | {
            "sum": round(sum(b.values()) / GB, 3)}

    res = {"workers": args.workers, "steps": args.steps, "code": args.code,
           "job_args": args.job_args,
           "config": json.loads(cfg.read_text()), "wall_s": round(time.perf_counter() - t0, 1),
           "peak_pss_gb": round(peak["total"] / GB, 3), "peak_at_s": round(peak["at"], 1),
           "at_peak": {k: gb(v) for k, v in sorted(peak["procs"].items())},
           "own_peak": {k: gb(v) for k, v in sorted(own.items())},
           "lines": [ln.strip() for ln in lines if ln.startswith(("Epoch", "memory estimate",
                                                                     "parameters", "model"))],
           "series": series}
    (out / "pss.json").write_text(json.dumps(res, indent=1) + "\n")
    draw({"this run": series}, out / "pss.png",
         f"jobs.train_kaggle --mode full, {shape(args.workers, args.steps)}")
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

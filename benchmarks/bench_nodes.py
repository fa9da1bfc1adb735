"""Time per epoch: 2 Ray Train workers on 1 node against 1 worker on each of 2 nodes.

    python -m benchmarks.bench_nodes [--mode mini] [--epochs 3]

Both runs join a real local cluster started here (benchmarks/local_cluster.py): first a
one-node cluster with 2 CPUs (workers packed on it), then a two-node cluster with 1 CPU per node
and SPREAD placement (metrics.json worker_nodes confirms one worker per node). Same data (the
shared MPD slices), mode, seed and epochs, one torch thread per worker, early stopping off; the
first epoch is dropped as warm-up. Both nodes are on this machine, so the ratio is what Ray's
node boundary costs (gloo over loopback either way), not network speed. Figures:
docs/distributed.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys

from benchmarks._run import MPD, ROOT, load, metrics
from benchmarks.local_cluster import LocalCluster, clean_env


def run(nodes: dict[str, float], placement: str, name: str, a) -> dict:
    out = ROOT / "runs" / f"bench_nodes_{name}"
    shutil.rmtree(out, ignore_errors=True)
    with LocalCluster(nodes) as cluster:
        ids = {cluster.node_id(n): n for n in cluster.names}
        cmd = [sys.executable, "-m", "jobs.train_kaggle", "--address", cluster.address,
               "--data", a.data, "--mode", a.mode, "--epochs", str(a.epochs), "--patience", "0",
               "--workers", "2", "--threads", "1", "--placement", placement, "--output",
               str(out), "--no-progress"]
        log = out.with_suffix(".log")
        with open(log, "w") as f:
            rc = subprocess.run(cmd, cwd=ROOT, env=clean_env(), stdout=f,
                                stderr=subprocess.STDOUT, check=False).returncode
        if rc != 0:
            sys.exit(f"{name}: train_kaggle failed (exit {rc}); see {log}")
    m = metrics(out)
    hist = m["history"][1:]  # epoch 1 is warm-up
    placed = [ids[w["node_id"]] for w in m["worker_nodes"][-1]]
    row = {"epoch_seconds": statistics.median(h["epoch_seconds"] for h in hist),
           "triples_per_s": statistics.median(h["triples_per_s"] for h in hist),
           "workers_on": placed}
    print(f"{name}: workers on {placed}; {row['epoch_seconds']:.2f} s/epoch, "
          f"{row['triples_per_s']:,.0f} triples/s (median of epochs 2..{a.epochs})", flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", default="mini")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--data", default=str(MPD))
    a = p.parse_args()
    before = load()
    one = run({"head": 2}, "PACK", "1node_x2", a)
    two = run({"head": 1, "node_b": 1}, "SPREAD", "2nodes_x1", a)
    ratio = two["epoch_seconds"] / one["epoch_seconds"]
    print(f"2 nodes x 1 worker vs 1 node x 2 workers: {ratio:.2f}x the time per epoch; "
          f"load average {before} before, {load()} after")
    print(json.dumps({"mode": a.mode, "epochs": a.epochs, "one_node": one, "two_nodes": two,
                      "epoch_ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()

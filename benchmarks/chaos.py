"""Chaos test (not in CI): training jobs whose workers are killed with SIGKILL at random moments.

    python benchmarks/chaos.py --runs 3 --kills 1 --mode quick --epochs 4 --workers 2

First one uninterrupted reference run, then ``--runs`` runs of the same job (same seed, same
data, each in its own folder). In each, ``--kills`` times, a random worker (its pid from the
run's ``worker_nodes.jsonl``) gets SIGKILL at a random moment: either a random time into a random
epoch, or (``--checkpoint-share``, default one kill in three) the moment a new checkpoint
folder appears, before Ray has registered it. Then it checks that every run

* finished (exit 0, a metrics.json with every epoch in its history),
* recorded one resume per kill that hit a live worker, each with its epochs lost,
* kept at most ``KEEP_CHECKPOINTS`` checkpoint folders (no orphan left),
* gave the reference run's per-epoch losses, validation metrics and test metrics, to the last
  digit (a resume continues the run exactly).

Prints one line per kill and per run and a summary; exit status 1 if any check failed.
docs/distributed.md reports a run of it.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.training.ray_train import KEEP_CHECKPOINTS, NODES_FILE


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _workers(out: Path) -> list[dict]:
    try:
        lines = (out / NODES_FILE).read_text().splitlines()
    except OSError:
        return []
    return [json.loads(ln) for ln in lines if ln.strip().endswith("}")]


def _checkpoints(out: Path) -> list[Path]:
    root = out / "ray_train"
    return sorted(p for p in root.glob("checkpoint_*") if p.is_dir()) if root.is_dir() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def job_command(args, out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "jobs.train_kaggle", "--mode", args.mode, "--epochs",
           str(args.epochs), "--patience", "0", "--workers", str(args.workers), "--seed",
           str(args.seed), "--max-failures", str(args.kills + 1), "--no-progress",
           "--output", str(out)]
    return cmd + (["--data", args.data] if args.data else [])


def one_kill(proc, out: Path, rng: random.Random, epochs: int, epoch_s: float,
             workers: int, checkpoint_share: float) -> dict | None:
    """Wait for a random moment, SIGKILL a random live worker; what was done, or None when the
    run ended first."""
    at_checkpoint = rng.random() < checkpoint_share
    target = rng.randint(1, max(1, epochs - 1))  # kill during epoch target+1 (1-based)
    seen = {p.name for p in _checkpoints(out)}
    while proc.poll() is None:
        progress = _json(out / "progress.json") or {}
        if at_checkpoint:
            new = {p.name for p in _checkpoints(out)} - seen
            if new and (out / "progress.json").exists():
                break
        elif progress.get("epoch_started", 0) >= target + 1:
            time.sleep(rng.uniform(0, 0.9 * epoch_s))
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        return None
    newest = _workers(out)[-workers:]  # the current attempt's workers
    live = [w for w in newest if _alive(w["pid"])] or newest
    victim = rng.choice(live)
    epoch = (_json(out / "progress.json") or {}).get("epoch_started")
    try:
        os.kill(victim["pid"], signal.SIGKILL)
        hit = True
    except OSError:
        hit = False
    return {"pid": victim["pid"], "rank": victim["rank"], "epoch": epoch, "hit": hit,
            "moment": "new checkpoint folder" if at_checkpoint else "random"}


def check(run: dict, reference: dict | None, epochs: int) -> list[str]:
    problems = []
    m = run["metrics"]
    if run["rc"] != 0 or m is None:
        return [f"exit status {run['rc']}, metrics.json {'present' if m else 'missing'}"]
    if [h["epoch"] for h in m["history"]] != list(range(1, epochs + 1)):
        problems.append(f"history epochs {[h['epoch'] for h in m['history']]}")
    hits = sum(k["hit"] for k in run["kills"])
    if len(m.get("resumes", [])) != hits:
        problems.append(f"{len(m.get('resumes', []))} resumes recorded for {hits} kills")
    if any("epochs_lost" not in r for r in m.get("resumes", [])):
        problems.append("a resume without epochs_lost")
    if run["checkpoints"] > KEEP_CHECKPOINTS:
        problems.append(f"{run['checkpoints']} checkpoint folders kept (> {KEEP_CHECKPOINTS})")
    if reference is not None and m["test"] != reference["test"]:
        problems.append(f"test recall@10 {m['test']['recall@10']:.4f} vs uninterrupted "
                        f"{reference['test']['recall@10']:.4f}")
    if reference is not None:
        for a, b in zip(m["history"], reference["history"]):
            if (a["train_loss"], a["val_recall@10"]) != (b["train_loss"], b["val_recall@10"]):
                problems.append(f"epoch {a['epoch']} train_loss {a['train_loss']:.6f} vs "
                                f"uninterrupted {b['train_loss']:.6f}")
                break
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs with kills")
    ap.add_argument("--kills", type=int, default=1, help="SIGKILLs per run")
    ap.add_argument("--mode", default="quick")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", default=None, help="as jobs.train_kaggle (default: generated)")
    ap.add_argument("--seed", type=int, default=0, help="training seed (same in every run)")
    ap.add_argument("--chaos-seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--checkpoint-share", type=float, default=1 / 3,
                    help="share of kills made as a new checkpoint folder appears")
    ap.add_argument("--no-reference", action="store_true", help="skip the uninterrupted run")
    ap.add_argument("--reference-from", default=None,
                    help="metrics.json of an earlier uninterrupted run of the same job to compare "
                         "with, instead of running one")
    ap.add_argument("--output", default="runs/chaos")
    args = ap.parse_args(argv)
    root = Path(args.output)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.chaos_seed)
    reference, epoch_s = None, 10.0
    if args.reference_from:
        reference = _json(Path(args.reference_from))
        epoch_s = max(h["epoch_seconds"] for h in reference["history"])
    elif not args.no_reference:
        out = root / "reference"
        t0 = time.monotonic()
        rc = subprocess.run(job_command(args, out), cwd=ROOT, stdout=subprocess.DEVNULL,
                            check=False).returncode
        reference = _json(out / "metrics.json")
        if rc != 0 or reference is None:
            print(f"reference run failed (exit {rc})")
            return 1
        epoch_s = max(h["epoch_seconds"] for h in reference["history"])
        print(f"reference: {time.monotonic() - t0:.0f} s, test recall@10 "
              f"{reference['test']['recall@10']:.4f}, longest epoch {epoch_s:.1f} s", flush=True)
    failed = 0
    for i in range(args.runs):
        out = root / f"run{i}"
        t0 = time.monotonic()
        log = open(root / f"run{i}.log", "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(job_command(args, out), cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
        kills = []
        for _ in range(args.kills):
            k = one_kill(proc, out, rng, args.epochs, epoch_s, args.workers,
                         args.checkpoint_share)
            if k is None:
                break
            kills.append(k)
            print(f"  run {i}: SIGKILL rank {k['rank']} (pid {k['pid']}) in epoch {k['epoch']} "
                  f"at a {k['moment']} moment{'' if k['hit'] else ' (already gone)'}", flush=True)
            # the next kill waits for the restarted group
            n = len(_workers(out))
            while proc.poll() is None and len(_workers(out)) < n + args.workers:
                time.sleep(0.2)
        rc = proc.wait()
        log.close()
        run = {"rc": rc, "kills": kills, "metrics": _json(out / "metrics.json"),
               "checkpoints": len(_checkpoints(out))}
        problems = check(run, reference, args.epochs)
        failed += bool(problems)
        resumes = (run["metrics"] or {}).get("resumes", [])
        print(f"run {i}: {'OK' if not problems else 'FAILED: ' + '; '.join(problems)} "
              f"({time.monotonic() - t0:.0f} s; resumes {resumes}; {run['checkpoints']} "
              f"checkpoint folders)", flush=True)
    print(f"\n{args.runs - failed} of {args.runs} runs passed every check "
          f"({args.kills} kill(s) each, {args.workers} workers, mode {args.mode}, "
          f"{args.epochs} epochs)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

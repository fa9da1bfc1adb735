"""What ``jobs.train_kaggle`` and ``jobs.train_synthetic`` share: options, config merging, the
run dataset, launching, and the final report."""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import fields
from pathlib import Path

from engine.data.canonical import file_fingerprint, is_prepared, load_dataset, save_dataset
from engine.data.subset import subset_owners
from engine.errors import BadInput
from engine.training.config import TrainConfig

# CLI flag -> TrainConfig field, for flags shared by both training jobs
FLAG_FIELDS = {
    "epochs": "epochs", "lr": "lr", "batch_size": "batch_size", "heads": "heads",
    "embedding_dim": "embedding_dim", "genre_weight": "genre_weight", "patience": "patience",
    "seed": "seed", "model": "model", "num_neg": "num_neg", "dropout": "dropout",
    "fail_at_epoch": "fail_at_epoch", "min_lr": "min_lr", "lr_factor": "lr_factor",
    "lr_patience": "lr_patience", "pos_per_owner": "pos_per_owner", "l2": "l2",
    "threads": "num_threads",
}


def add_common_args(p) -> None:
    p.add_argument("--output", default=None, help="run folder: metrics.json, checkpoints, "
                   "TensorBoard events (default runs/<job>). Rerunning with the same folder resumes.")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (data-parallel)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join ('auto' or HOST:PORT); default: start Ray locally")
    p.add_argument("--config", default=None, help="JSON of hyper-parameters, e.g. the "
                   "best_config.json written by tune.search; explicit flags override it")
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int,
                   help="owners (playlists/users) per step; each gives --pos-per-owner positive "
                        "tracks, so a step trains batch_size x pos_per_owner BPR triples, each "
                        "with --num-neg negatives")
    p.add_argument("--pos-per-owner", type=int)
    p.add_argument("--num-neg", type=int)
    p.add_argument("--heads", type=int)
    p.add_argument("--embedding-dim", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--l2", type=float)
    p.add_argument("--genre-weight", type=float)
    p.add_argument("--patience", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch threads per worker (default: the CPUs "
                   "Ray sees divided among the workers)")
    p.add_argument("--max-failures", type=int, default=2,
                   help="worker-group restarts Ray may make after a failure (from the last checkpoint)")
    p.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                   help="do not start the Ray dashboard (default: on, listening on 127.0.0.1; "
                        "Ray's state API, used to clean up after stopped workers, needs it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    # fault injection for tests: the last worker dies once early in this (0-based) epoch
    p.add_argument("--fail-at-epoch", type=int, help=argparse.SUPPRESS)


def read_config_file(path: str | None) -> dict:
    """Hyper-parameters from a JSON file (``best_config.json`` of tune.search or hand-written).
    Accepts either a flat dict of TrainConfig fields or ``{"config": {...}}``."""
    if not path:
        return {}
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise BadInput(f"{p}: config file not found") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{p}: not a JSON config ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise BadInput(f"{p}: config must be a JSON object")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadInput(f"{p}: unknown option(s) {', '.join(unknown)}")
    return data


def merge_config(base: dict, file_cfg: dict, args) -> dict:
    """Mode defaults < config file < explicit flags."""
    cfg = dict(base)
    cfg.update(file_cfg)
    for flag, field_name in FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            cfg[field_name] = value
    if getattr(args, "no_progress", False):
        cfg["progress"] = False
    return cfg


def check_options(cfg: dict, workers: int) -> None:
    if workers < 1:
        raise BadInput(f"--workers must be at least 1, got {workers}")
    for name in ("epochs", "batch_size", "embedding_dim", "heads", "num_neg", "pos_per_owner"):
        if name in cfg and int(cfg[name]) < 1:
            raise BadInput(f"--{name.replace('_', '-')} must be at least 1, got {cfg[name]}")
    if not 0.0 <= float(cfg.get("genre_weight", 0.0)) <= 1.0:
        raise BadInput(f"--genre-weight must be in [0, 1], got {cfg['genre_weight']}")
    if float(cfg.get("lr", 0.01)) <= 0:
        raise BadInput(f"--lr must be positive, got {cfg['lr']}")


def run_dataset(load_raw, source: Path, out: Path, max_owners: int | None, seed: int) -> Path:
    """The prepared dataset a run trains on, at ``<out>/dataset``.

    Reused as it is when it was made from the same source (same size and hash) with the same
    subset, so resuming never re-parses; otherwise (re)built from ``load_raw()``.
    """
    target = out / "dataset"
    fingerprint = ({"prepared": str(source.resolve())} if is_prepared(source)
                   else file_fingerprint(source) if source.is_file()
                   else {"folder": str(source.resolve()),  # names and sizes: no re-hashing
                         "files": sorted([p.name, p.stat().st_size] for p in source.iterdir())})
    want = {"source": fingerprint, "max_owners": max_owners, "seed": seed}
    if is_prepared(target):
        have = load_dataset(target).manifest.get("run_dataset")
        if have == want:
            return target
    ds = load_dataset(source) if is_prepared(source) else load_raw()
    ds = subset_owners(ds, max_owners, seed)
    ds.manifest["run_dataset"] = want
    save_dataset(ds, target)
    return target


def make_output(out: Path) -> None:
    """Create the run folder, or fail as bad input (exit 2) before anything starts."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"{out}: cannot create output folder ({exc.strerror})") from None


def session_source(data: str | None, users: int, days: int, seed: int) -> Path:
    """The prepared session dataset to train on: ``data`` (checked), or one generated once under
    ``data/generated/`` for (users, days, seed) and reused afterwards."""
    from engine.data.canonical import is_prepared

    if data:
        source = Path(data)
        if not is_prepared(source):
            raise BadInput(f"{source}: not a prepared session dataset (no manifest.json)")
        if load_dataset(source).kind != "session":
            raise BadInput(f"{source}: a playlist dataset; use jobs.train_kaggle for it")
        return source
    source = Path("data/generated") / f"sessions.seed{seed}.{users}u.{days}d"
    if not is_prepared(source):
        from engine.data.synthetic import generate_sessions

        print(f"generating {users:,} users x {days} days of sessions -> {source}")
        save_dataset(generate_sessions(num_users=users, days=days, seed=seed), source)
    return source


def launch(cfg: dict, workers: int, address: str | None, max_failures: int,
           dashboard: bool) -> dict:
    """Start (or join) Ray and run the loop on ``workers`` Ray Train workers."""
    from engine.training.ray_train import init_ray, run_torch_trainer

    init_ray(address=address, dashboard=dashboard)
    try:
        result = run_torch_trainer(cfg, workers=workers, output=cfg["output"],
                                   max_failures=max_failures)
    except Exception as exc:  # Ray wraps worker errors; give one readable line
        if isinstance(exc.__cause__, BadInput):
            raise exc.__cause__ from None
        raise
    if result is None:
        result = json.loads((Path(cfg["output"]) / "metrics.json").read_text())
    return result


def print_report(result: dict, out: Path) -> None:
    """The final table: the model beside its baselines, same split, same run."""
    data = result["data"]
    owner = "playlists" if data["kind"] == "playlist" else "users"
    print()
    print(f"Test split of {data['dataset']}: {result['test']['playlists']} {owner}, "
          f"{data['test_items']} held-out items, {result['test']['coverable']:.1%} coverable "
          f"(candidates: items with a training edge; own training items masked)")
    cols = ["recall@10", "ndcg@10", "recall@50", "ndcg@50", "r_precision"]
    print(f"{'':<14}" + "".join(f"{c:>12}" for c in cols))
    rows = [("model", result["test"])] + list(result["baselines"].items())
    for name, m in rows:
        print(f"{name:<14}" + "".join(f"{m[c]:>12.4f}" for c in cols))
    print(f"\nparams {result['params']:,}; train {result['train_seconds']:.1f} s over "
          f"{result['epochs_run']} epoch(s) on {result['workers']} worker(s); "
          f"best val_recall@10 {result['best_val_recall@10']:.4f}")
    for r in result.get("resumes", []):
        print(f"resumed from the checkpoint of epoch {r['from_epoch']}, "
              f"{r['epochs_lost']} epoch(s) lost")
    print(f"metrics: {out / 'metrics.json'}\nTensorBoard: tensorboard --logdir {out} "
          f"--host 127.0.0.1")


def default_output(job: str) -> str:
    return os.path.join("runs", job)

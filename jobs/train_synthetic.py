"""Train a listening-history GAT on synthetic sessions (or a prepared session dataset).

    python -m jobs.train_synthetic [--advanced] [--model basic|enhanced] [--genre-weight W] ...

Simple trainer (default): fixed learning rate, every epoch runs (validation is computed and
logged but drives nothing). ``--advanced``: the 70/15/15 protocol split drives early stopping
(``--patience``) and ReduceLROnPlateau (``--lr-factor``, ``--lr-patience``, ``--min-lr``).
Both report the test split beside popularity and item-kNN (shared/PROTOCOL.md, sessions).
"""
from __future__ import annotations

from pathlib import Path

from engine.training.config import TrainConfig
from jobs.cli import ArgumentParser, run_cli, show_defaults
from jobs.common import (
    FLAG_FIELDS,
    add_common_args,
    check_options,
    check_output,
    check_split,
    launch,
    merge_config,
    print_report,
    read_config_file,
    report_finished,
    run_dataset,
    run_training_job,
    session_source,
)

# This job's TrainConfig values where they differ from TrainConfig's own defaults.
BASE = {"model": "enhanced", "epochs": 10, "batch_size": 128, "embedding_dim": 32, "heads": 4,
        "genre_weight": 0.3}


def parse_args(argv):
    p = ArgumentParser(prog="python -m jobs.train_synthetic", description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="a prepared session dataset folder "
                   "(python -m jobs.generate sessions ...); default: generate one")
    p.add_argument("--users", type=int, default=1000, help="generated users (no --data)")
    p.add_argument("--days", type=int, default=30, help="generated days (no --data)")
    p.add_argument("--advanced", action="store_true",
                   help="early stopping and LR scheduling on the validation split (default: the "
                        "simple trainer, a fixed learning rate and every epoch run)")
    p.add_argument("--model", choices=["basic", "enhanced", "playlist"], default=None,
                   help="the recommender; see the README's Models table")
    p.add_argument("--min-lr", type=float, help="--advanced: lowest learning rate of the "
                   "ReduceLROnPlateau schedule")
    p.add_argument("--lr-factor", type=float, help="--advanced: learning-rate factor on a "
                   "plateau")
    p.add_argument("--lr-patience", type=int, help="--advanced: epochs without a validation "
                   "gain before the learning rate drops")
    p.add_argument("--val-ratio", type=float, default=None,
                   help="share of users in the validation split")
    p.add_argument("--test-ratio", type=float, default=None,
                   help="share of users in the test split")
    add_common_args(p)
    base = TrainConfig(**BASE).to_dict()
    show_defaults(p, {**{flag: base[key] for flag, key in FLAG_FIELDS.items()},
                      "patience": f"{base['patience']} with --advanced; the simple trainer never "
                                  "stops early",
                      "val_ratio": base["val_ratio"], "test_ratio": base["test_ratio"]})
    return p.parse_args(argv)


def main(argv=None) -> int:
    return run_training_job("train_synthetic", parse_args(argv), argv, _main)


def _main(args, out: Path) -> int:
    from engine.data.canonical import load_dataset

    base = TrainConfig(**BASE).to_dict()
    cfg = merge_config(base, read_config_file(args.config), args)
    cfg["fixed_lr"] = not args.advanced
    if not args.advanced:
        cfg["patience"] = 0
    for name in ("val_ratio", "test_ratio"):
        if getattr(args, name) is not None:
            cfg[name] = getattr(args, name)
    check_options(cfg, args.workers)
    cfg["output"] = str(out.resolve())
    seed = int(cfg["seed"])
    check_output(out)
    if report_finished(cfg, out, args.force_new):
        return 0

    source = session_source(args.data, args.users, args.days, seed)
    cfg["dataset"] = str(run_dataset(lambda: load_dataset(source), source, out, None, seed,
                                     lambda ds: check_split(ds, cfg, source)).resolve())
    result = launch(cfg, args.workers, args.address, args.max_failures, args.dashboard,
                    args.placement)
    print_report(result, out)
    return 0


if __name__ == "__main__":
    run_cli(main)

"""Train a listening-history GAT on synthetic sessions (or a prepared session dataset).

    python -m jobs.train_synthetic [--advanced] [--model basic|enhanced] [--genre-weight W] ...

Simple trainer (default): fixed learning rate, every epoch runs (validation is computed and
logged but drives nothing). ``--advanced``: the 70/15/15 protocol split drives early stopping
(``--patience``) and ReduceLROnPlateau (``--lr-factor``, ``--lr-patience``, ``--min-lr``).
Both report the test split beside popularity and item-kNN (shared/PROTOCOL.md, sessions).
"""
from __future__ import annotations

from pathlib import Path

from engine.training.config import PIPELINES, TrainConfig
from jobs.cli import ArgumentParser, run_cli
from jobs.common import (
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
from jobs.flags import COMMON, add_config_flags

# This job's TrainConfig values where they differ from TrainConfig's own defaults: the synthetic
# pipeline's model (engine.training.config.PIPELINES), and this job's epochs and genre mix (tune's
# synthetic trials set epochs by --max-epochs and search genre_weight).
BASE = {**PIPELINES["synthetic"], "epochs": 10, "genre_weight": 0.3}
# the TrainConfig fields this job takes as flags
FLAGS = (*COMMON, "min_lr", "lr_factor", "lr_patience", "val_ratio", "test_ratio")
ADVANCED = ("patience", "min_lr", "lr_factor", "lr_patience")  # read by --advanced runs only


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m jobs.train_synthetic", description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="a prepared session dataset folder "
                   "(python -m jobs.generate sessions ...); default: generate one")
    p.add_argument("--users", type=int, default=1000, help="generated users (no --data)")
    p.add_argument("--days", type=int, default=30, help="generated days (no --data)")
    p.add_argument("--advanced", action="store_true",
                   help="early stopping and LR scheduling on the validation split (default: the "
                        "simple trainer, a fixed learning rate and every epoch run)")
    add_common_args(p)
    base = TrainConfig(**BASE)
    add_config_flags(p, FLAGS, base, shown={
        name: f"{getattr(base, name)} with --advanced; the simple trainer does not read it"
        for name in ADVANCED})
    return p


def parse_args(argv):
    return build_parser().parse_args(argv)


def make_config(args) -> dict:
    """The run's hyper-parameters: :data:`BASE` over TrainConfig's defaults < the --config file
    < explicit flags; the simple trainer (no --advanced) has a fixed learning rate and never
    stops early."""
    cfg = merge_config(TrainConfig(**BASE).to_dict(), read_config_file(args.config), args, FLAGS)
    cfg["fixed_lr"] = not args.advanced
    if not args.advanced:
        cfg["patience"] = 0
    return cfg


def main(argv=None) -> int:
    return run_training_job("train_synthetic", parse_args(argv), argv, _main)


def _main(args, out: Path) -> int:
    from engine.data.canonical import load_dataset

    cfg = make_config(args)
    check_options(cfg, args.workers, FLAGS)
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

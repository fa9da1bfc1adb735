"""Train a playlist-completion GAT on Kaggle "Spotify Playlists", MPD slices, or a prepared folder.

    python -m jobs.train_kaggle --data PATH --mode {mini,quick,balanced,full} --workers N --output DIR

Without ``--data`` a seeded Kaggle-format dataset is generated under ``data/generated/``.
Writes ``DIR/metrics.json`` (test metrics beside popularity and item-kNN baselines, see
shared/PROTOCOL.md), ``best_model.pt``, ``final_model.pt``, per-epoch checkpoints under
``DIR/ray_train/`` and TensorBoard events under ``DIR/tensorboard``.
"""
from __future__ import annotations

from pathlib import Path

from engine.errors import BadInput
from engine.training.config import MODES, TrainConfig, mode_config
from jobs.cli import ArgumentParser, run_cli
from jobs.common import (
    GENERATED_ROWS,
    add_common_args,
    check_options,
    check_output,
    check_split,
    generated_kaggle_csv,
    launch,
    merge_config,
    print_report,
    read_config_file,
    report_finished,
    run_dataset,
    run_training_job,
)
from jobs.flags import COMMON, add_config_flags

# the TrainConfig fields this job takes as flags
FLAGS = (*COMMON, "holdout")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m jobs.train_kaggle", description=__doc__.split("\n")[0])
    per_mode = lambda key: "per --mode: " + ", ".join(f"{m} {v[key]:,}" for m, v in MODES.items())
    p.add_argument("--data", default=None, help="spotify_dataset.csv, a folder of MPD "
                   "mpd.slice.*.json files, one slice, or a prepared dataset folder (default: "
                   f"a seeded {GENERATED_ROWS:,}-row Kaggle-format CSV under data/generated/)")
    p.add_argument("--format", choices=["kaggle", "mpd", "mpd_csv", "prepared"], default=None,
                   help="override the detected input kind (default: detected)")
    p.add_argument("--features", default=None, help="optional tracks_features.csv to join "
                   "(default: none)")
    p.add_argument("--genres", default=None, help="optional CSV artist_name,genres (replaces "
                   "genres derived from playlist titles; default: none)")
    p.add_argument("--mode", choices=sorted(MODES), default="quick",
                   help="; ".join(f"{m} {v['max_playlists']:,} playlists, {v['epochs']} epochs, "
                                  f"batch {v['batch_size']}" + (
                                      f", fanouts {','.join(map(str, v['fanouts']))}"
                                      if "fanouts" in v else "") for m, v in MODES.items()))
    p.add_argument("--max-playlists", type=int, default=None,
                   help="seeded random sample of this many playlists (0 = all; default: "
                        f"{per_mode('max_playlists')})")
    add_common_args(p)
    add_config_flags(p, FLAGS, TrainConfig(), shown={"epochs": per_mode("epochs"),
                                                     "batch_size": per_mode("batch_size")})
    return p


def parse_args(argv):
    return build_parser().parse_args(argv)


def make_config(args) -> dict:
    """The run's hyper-parameters: TrainConfig's defaults with the mode's epochs and batch size
    (full mode: fanouts too) < the --config file < explicit flags."""
    base = TrainConfig(**mode_config(args.mode)).to_dict()
    return merge_config(base, read_config_file(args.config), args, FLAGS)


def main(argv=None) -> int:
    return run_training_job("train_kaggle", parse_args(argv), argv, _main)


def _main(args, out: Path) -> int:
    mode = MODES[args.mode]
    cfg = make_config(args)
    check_options(cfg, args.workers, FLAGS)
    max_playlists = mode["max_playlists"] if args.max_playlists is None else args.max_playlists
    if max_playlists < 0:
        raise BadInput(f"--max-playlists must be at least 0, got {max_playlists}")
    cfg["output"] = str(out.resolve())
    if args.genres:
        cfg["genres_csv"] = str(Path(args.genres).resolve())
    seed = int(cfg["seed"])
    check_output(out)
    if report_finished(cfg, out, args.force_new):
        return 0

    source = Path(args.data) if args.data else generated_kaggle_csv(seed)
    if args.data and not source.exists():
        raise BadInput(f"{source}: no such file or folder")

    def load_raw():
        from engine.data.load import load_any

        return load_any(source, fmt=args.format, features=args.features)

    def check(ds):  # before the run folder is made: bad data leaves nothing behind
        if args.genres:
            from engine.graph.genres import read_artist_genres_csv

            read_artist_genres_csv(args.genres, ds.artists)
        check_split(ds, cfg, source)

    cfg["dataset"] = str(run_dataset(load_raw, source, out, max_playlists or None, seed,
                                     check).resolve())
    result = launch(cfg, args.workers, args.address, args.max_failures, args.dashboard,
                    args.placement)
    print_report(result, out)
    return 0


if __name__ == "__main__":
    run_cli(main)

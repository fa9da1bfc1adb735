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
from engine.training.config import MODES, TrainConfig
from jobs.cli import ArgumentParser, run_cli, show_defaults
from jobs.common import (
    FLAG_FIELDS,
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


def parse_args(argv):
    p = ArgumentParser(prog="python -m jobs.train_kaggle", description=__doc__.split("\n")[0])
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
                                  f"batch {v['batch_size']}" for m, v in MODES.items()))
    p.add_argument("--model", choices=["playlist", "enhanced", "basic"], default=None,
                   help="the recommender; see the README's Models table")
    p.add_argument("--max-playlists", type=int, default=None,
                   help="seeded random sample of this many playlists (0 = all)")
    p.add_argument("--holdout-size", type=int, default=None,
                   help="test tracks held out per playlist")
    add_common_args(p)
    base = TrainConfig(model="playlist").to_dict()  # as _main's, before the mode's values
    per_mode = lambda key: "per --mode: " + ", ".join(f"{m} {v[key]:,}" for m, v in MODES.items())
    show_defaults(p, {**{flag: base[key] for flag, key in FLAG_FIELDS.items()},
                      "epochs": per_mode("epochs"), "batch_size": per_mode("batch_size"),
                      "max_playlists": per_mode("max_playlists"), "holdout_size": base["holdout"]})
    return p.parse_args(argv)


def main(argv=None) -> int:
    return run_training_job("train_kaggle", parse_args(argv), argv, _main)


def _main(args, out: Path) -> int:
    mode = MODES[args.mode]
    base = TrainConfig(model="playlist", epochs=mode["epochs"], batch_size=mode["batch_size"]).to_dict()
    cfg = merge_config(base, read_config_file(args.config), args)
    if args.holdout_size is not None:
        cfg["holdout"] = args.holdout_size
    check_options(cfg, args.workers)
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

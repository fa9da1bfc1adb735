"""Hyper-parameter search: Ray Tune + Optuna (seeded TPE) + ASHA on validation Recall@10.

    python -m tune.search --pipeline kaggle --data PATH --mode mini --trials 12 --max-epochs 6

Each trial runs :func:`engine.training.loop.train_loop_per_worker` and reports every epoch, so ASHA
can stop weak trials early. One worker per trial: the trial runs the loop itself. More workers: the
trial launches a ``TorchTrainer`` and reports through ``TuneReportCallback`` (Train V2 pattern).
The first trial is the defaults (when the space can draw them) and the default space samples
near them, so the closing table says whether the search beat the defaults on the same budget.
Trials never look at the test split. The best configuration goes to ``DIR/best_config.json``,
whose path is the last line printed; ``jobs.train_kaggle --config DIR/best_config.json`` uses it.
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

from engine.errors import BadInput
from engine.training.config import MODES, PIPELINES, TrainConfig, mode_config
from jobs.cli import ArgumentParser, run_cli
from jobs.common import generated_kaggle_csv, run_dataset, session_source
from jobs.interrupts import (
    EXIT_INTERRUPTED,
    Interrupted,
    disable_tune_sigint,
    forward_to_tune,
    resume_command,
    sigint_guard,
)
from tune.space import default_point, load_space, to_train_config, to_tune

METRIC = "val_recall@10"
EXPERIMENT = "search"
# --model's default per --pipeline: the pipeline's (engine.training.config.PIPELINES)
MODEL = {pipe: preset.get("model", TrainConfig.model) for pipe, preset in PIPELINES.items()}


def parse_args(argv):
    p = ArgumentParser(prog="python -m tune.search", description=__doc__.split("\n")[0])
    p.add_argument("--pipeline", choices=["kaggle", "synthetic"], default="kaggle",
                   help="playlists as jobs.train_kaggle, or listening sessions as "
                        "jobs.train_synthetic")
    p.add_argument("--data", default=None, help="as jobs.train_kaggle / jobs.train_synthetic "
                   "(default: their generated dataset)")
    p.add_argument("--format", default=None, choices=["kaggle", "mpd", "mpd_csv", "prepared"],
                   help="--pipeline kaggle: override the detected input kind (default: detected)")
    p.add_argument("--mode", choices=sorted(MODES), default="mini",
                   help="data size and batch size of the kaggle pipeline's modes: " + "; ".join(
                       f"{m} {v['max_playlists']:,} playlists, batch {v['batch_size']}"
                       for m, v in MODES.items()))
    p.add_argument("--model", default=None, choices=["playlist", "enhanced", "basic"],
                   help="the recommender (default: " + ", ".join(
                       f"{model} for --pipeline {pipe}" for pipe, model in MODEL.items()) + ")")
    p.add_argument("--trials", type=int, default=12, help="configurations to sample and train")
    p.add_argument("--max-epochs", type=int, default=6,
                   help="epochs of a trial that ASHA does not stop")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: epochs before a trial "
                   "can be stopped")
    p.add_argument("--reduction-factor", type=float, default=3, help="ASHA: keep 1/factor "
                   "of trials at each rung")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers per "
                   "trial (1: the trial runs the loop itself)")
    p.add_argument("--concurrent", type=int, default=None,
                   help="trials at once (default: CPUs / workers per trial)")
    p.add_argument("--space", default=None, help="YAML/JSON search space (default: "
                   "tune/space.py's DEFAULT_SPACE)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the data sample, the TPE sampler and the trials")
    p.add_argument("--output", default="runs/tune", help="search folder: the Tune experiment, "
                   "each trial's events and best_config.json")
    p.add_argument("--resume", action="store_true", help="continue an interrupted search")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join ('auto' or HOST:PORT); default: start Ray locally")
    p.add_argument("--no-progress", action="store_true",
                   help="no Tune progress table (default: print it)")
    return p.parse_args(argv)


TRIAL_CPU = 0.01  # what a trial that launches a TorchTrainer holds itself


def make_trainable(base: dict, workers: int, root: Path, worker_cpus: float = 1.0):
    """The Tune function trainable: the loop itself, or a TorchTrainer of ``workers`` workers
    with ``worker_cpus`` CPUs each."""

    def trial(sample: dict) -> None:
        from ray import tune

        trial_id = tune.get_context().get_trial_id()
        cfg = to_train_config(sample, base)
        cfg["output"] = str(root / "trials" / trial_id)
        if workers == 1:
            from engine.training.loop import train_loop_per_worker

            train_loop_per_worker(dict(cfg, context="ray_tune"))
            return
        from ray.tune.integration.ray_train import TuneReportCallback

        from engine.training.ray_train import run_torch_trainer

        # Train V2: the trial launches the TorchTrainer, and TuneReportCallback hands each
        # ray.train.report on to this trial. A trial's trainer keeps Ray's defaults: no
        # worker-group restarts, every checkpoint kept, Train's INFO lines.
        run_torch_trainer(cfg, workers, storage=root / "train", name=trial_id,
                          callbacks=[TuneReportCallback()], max_failures=0,
                          worker_cpus=worker_cpus, num_threads=1, keep_checkpoints=None,
                          log_level="INFO")

    return trial


def build_base(args, out: Path) -> dict:
    """Fixed (non-searched) options and the prepared dataset every trial reads."""
    seed = args.seed
    if args.pipeline == "kaggle":
        mode = MODES[args.mode]
        # the mode's fields (batch size, full mode's fanouts); epochs come from --max-epochs
        base = TrainConfig(**{**PIPELINES["kaggle"], **mode_config(args.mode),
                              "model": args.model or MODEL["kaggle"]}).to_dict()
        if args.data:
            source = Path(args.data)
            if not source.exists():
                raise BadInput(f"{source}: no such file or folder")
        else:
            source = generated_kaggle_csv(seed)

        def load_raw():
            from engine.data.load import load_any

            return load_any(source, fmt=args.format)

        dataset = run_dataset(load_raw, source, out, mode["max_playlists"], seed)
    else:
        from engine.data.canonical import load_dataset

        base = TrainConfig(**{**PIPELINES["synthetic"],
                              "model": args.model or MODEL["synthetic"]}).to_dict()
        source = session_source(args.data, 1000, 30, seed)
        dataset = run_dataset(lambda: load_dataset(source), source, out, None, seed)
    base.update(dataset=str(dataset.resolve()), epochs=args.max_epochs, seed=seed,
                patience=0, final_test=False, progress=False, max_val_owners=500)
    return base


def trial_number(folder: str, trial_id: str, default: int) -> int:
    """The trial's number in the search: Tune names a trial's folder
    ``trial_<id>_<number>_<config>``; else an id with a creation counter (Tune's basic variant
    generator: ``8a9e59b6_00003``) gives trial 4; else ``default``. A search algorithm's ids
    (Optuna's here) are 8 hex digits with no counter, which can all be decimal digits."""
    match = re.match(rf"trial_{re.escape(trial_id)}_(\d+)_", folder)
    if match:
        return int(match.group(1))
    head, _, tail = trial_id.rpartition("_")
    return int(tail) + 1 if head and tail.isdigit() else default


def trial_table(results, max_epochs: int) -> list[dict]:
    rows = []
    for i, r in enumerate(results):
        df = r.metrics_dataframe
        epochs = int(df["training_iteration"].max()) if df is not None and len(df) else 0
        best = float(df[METRIC].max()) if df is not None and METRIC in df else float("nan")
        trial_id = str((r.metrics or {}).get("trial_id") or Path(r.path).name)
        rows.append({"trial": Path(r.path).name, "trial_id": trial_id,
                     "number": trial_number(Path(r.path).name, trial_id, i + 1),
                     "config": r.config or {},
                     "epochs": epochs, "best_val_recall@10": best,
                     "stopped_early": epochs < max_epochs,
                     "error": str(r.error).splitlines()[0] if r.error else None})
    return rows


def _cell(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_table(rows: list[dict]) -> None:
    """Every trial: its number and whole id, each searched hyper-parameter under its full name,
    epochs run, best validation Recall@10, whether ASHA stopped it; best first. ``*`` marks the
    trial of the defaults."""
    keys = sorted({k for r in rows for k in r["config"]})
    headers = ["trial", "id", *keys, "epochs", "best val R@10", "stopped"]

    def score(r):
        v = r["best_val_recall@10"]
        return -1.0 if math.isnan(v) else v

    body = [[f"#{r['number']}" + ("*" if r.get("defaults") else ""), r["trial_id"],
             *(_cell(r["config"].get(k, "")) for k in keys),
             str(r["epochs"]), f"{r['best_val_recall@10']:.4f}",
             "yes" if r["stopped_early"] else "no"]
            for r in sorted(rows, key=score, reverse=True)]
    widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(headers)]
    print("\n" + "  ".join(h.ljust(w) if i < 2 else h.rjust(w)
                            for i, (h, w) in enumerate(zip(headers, widths))))
    for r, line in zip(sorted(rows, key=score, reverse=True), body):
        cells = "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                          for i, (c, w) in enumerate(zip(line, widths)))
        print(cells + (f"  ERROR {r['error']}" if r["error"] else ""))


def main(argv=None) -> int:
    """Ctrl-C: before the search starts, nothing is kept; during it, Tune stops the trials and
    saves the experiment (SIGUSR1, see jobs.interrupts), then one line says how to resume."""
    args = parse_args(argv)
    out = Path(args.output).resolve()
    resume = resume_command("tune.search", argv, add=("--resume",))
    phase = {"fit": False}

    def first_press():
        if not phase["fit"]:
            raise KeyboardInterrupt
        forward_to_tune()

    disable_tune_sigint()
    with sigint_guard(first_press) as presses:
        try:
            return _main(args, out, resume, phase, presses)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted before the search started; start again with: "
                              f"{resume_command('tune.search', argv)}") from None


def _main(args, out: Path, resume: str, phase: dict, presses: dict) -> int:
    if args.trials < 1 or args.max_epochs < 1 or args.workers_per_trial < 1:
        raise BadInput("--trials, --max-epochs and --workers-per-trial must be at least 1")
    model = args.model or MODEL[args.pipeline]
    space = load_space(args.space, model)
    out.mkdir(parents=True, exist_ok=True)
    base = build_base(args, out)
    start, outside = default_point(space, base, model)
    print("the first trial is the defaults" if start else
          "the space cannot draw the defaults' " + ", ".join(outside) +
          ": no trial of the defaults to compare with")

    from engine.training.ray_train import init_ray

    # before any other Ray import: an embedded Ray binds to loopback only if it is started by
    # the first import (engine.training.ray_train.init_ray); Ray's own lines: out/ray.log
    # dedup off: concurrent trials' epoch lines differ only in their figures
    ray = init_ray(address=args.address, log_dir=out, dedup_logs=False)
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch
    cpus = int(ray.cluster_resources().get("CPU", 1))
    concurrent = args.concurrent or max(1, cpus // args.workers_per_trial)
    if args.workers_per_trial == 1:
        trainable = tune.with_resources(make_trainable(base, 1, out), {"CPU": 1})
    else:
        # Each running trial gets an equal share of the CPUs. The trial itself only waits on its
        # TorchTrainer and holds a token share (Ray wants a non-empty request); its workers
        # split the rest, so the trainer never waits for CPUs its own trial is holding.
        share = cpus / concurrent
        worker_cpus = min(1.0, (share - TRIAL_CPU) / args.workers_per_trial)
        trainable = tune.with_resources(
            make_trainable(base, args.workers_per_trial, out, worker_cpus), {"CPU": TRIAL_CPU})
    exp_path = out / EXPERIMENT
    if args.resume and tune.Tuner.can_restore(str(exp_path)):
        print(f"resuming the search in {exp_path}")
        tuner = tune.Tuner.restore(str(exp_path), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        if exp_path.exists() and not args.resume:
            raise BadInput(f"{exp_path}: a search already exists here; pass --resume to "
                           "continue it or choose another --output")
        # The first trial is the defaults (when the space can draw them), so the search reports
        # whether it beat them on the same budget; TPE then models after a third of the trials
        # are drawn at random (Optuna's default is 10, all of a short search).
        searcher = OptunaSearch(
            points_to_evaluate=[start] if start else None,
            sampler=optuna.samplers.TPESampler(
                seed=args.seed, n_startup_trials=max(1, min(10, args.trials // 3))))
        tuner = tune.Tuner(
            trainable,
            param_space=to_tune(space),
            tune_config=tune.TuneConfig(
                metric=METRIC, mode="max", search_alg=searcher, num_samples=args.trials,
                max_concurrent_trials=concurrent,
                scheduler=ASHAScheduler(max_t=args.max_epochs, grace_period=args.grace_period,
                                        reduction_factor=args.reduction_factor)),
            run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(out),
                                      verbose=1 if not args.no_progress else 0),
        )
    phase["fit"] = True
    results = tuner.fit()
    phase["fit"] = False
    if presses["count"] or results.num_terminated + results.num_errors < args.trials:
        # Ctrl-C (or trials lost with a killed node): Tune saved the experiment state
        print(f"interrupted: {results.num_terminated} of {args.trials} trials finished; the "
              f"search is saved in {exp_path}; resume with: {resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    rows = trial_table(results, args.max_epochs)
    for r in rows:
        r["defaults"] = start is not None and r["config"] == start
    print_table(rows)
    ok = [r for r in rows if not math.isnan(r["best_val_recall@10"])]
    if not ok:
        raise BadInput(f"{exp_path}: no trial reported a validation metric")
    best = max(ok, key=lambda r: r["best_val_recall@10"])
    total = sum(r["epochs"] for r in rows)
    summary = {
        "config": to_train_config(best["config"]),
        METRIC: best["best_val_recall@10"],
        "trial": best["trial"],
        "pipeline": args.pipeline,
        "dataset": base["dataset"],
        "trials": len(rows),
        "epochs_run": total,
        "epochs_without_early_stopping": len(rows) * args.max_epochs,
        "trials_stopped_early": sum(r["stopped_early"] for r in rows),
        "defaults_val_recall@10": next((r["best_val_recall@10"] for r in rows if r["defaults"]),
                                       None),
        "table": [{k: v for k, v in r.items()} for r in rows],
    }
    path = out / "best_config.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\nbest val Recall@10 {best['best_val_recall@10']:.4f} (trial {best['trial']}); "
          f"{total} epochs run of {len(rows) * args.max_epochs} without early stopping; "
          f"TensorBoard: tensorboard --logdir {out / 'trials'} --host 127.0.0.1")
    if summary["defaults_val_recall@10"] is not None:
        print(f"the defaults (the trial marked *): best val Recall@10 "
              f"{summary['defaults_val_recall@10']:.4f}")
    print(path)
    return 0


if __name__ == "__main__":
    run_cli(main)

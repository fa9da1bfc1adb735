"""What ``jobs.train_kaggle`` and ``jobs.train_synthetic`` share: options, config merging and
validation, the run folder (a finished or interrupted run found before Ray starts), the run
dataset and the generated default datasets, launching, Ctrl-C, and the final report.

A public module: ``tune.search`` and the benchmarks prepare their datasets through it too."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from engine.errors import BadInput
from engine.training.config import TrainConfig, config_diff, describe_diff
from jobs.flags import config_flags, flag_labels
from jobs.interrupts import Interrupted, resume_command, run_in_thread, sigint_guard, stderr_to

# What a run writes in its folder besides the reusable prepared dataset: --force-new removes it.
# Names as engine.training.state writes them (not imported: this module stays free of torch,
# so that --help answers at once; tests/test_jobs_cli.py checks they agree).
GRAPH_STORE = "graph_store"
BEST_FILE = ".best_weights.pt"
RUN_STATE = ("metrics.json", "best_model.pt", "final_model.pt", "ray_train", "checkpoints",
             "tensorboard", "progress.json", "resumes.json", "worker_nodes.jsonl", GRAPH_STORE,
             BEST_FILE)
# Rows of the seeded Kaggle-format CSV a playlist run uses without --data
GENERATED_ROWS = 120_000  # ~2,400 playlists: enough for every mode up to quick


def add_common_args(p) -> None:
    """The training jobs' shared flags that are not hyper-parameters (those come from
    TrainConfig: :func:`jobs.flags.add_config_flags`)."""
    p.add_argument("--output", default=None, help="run folder: metrics.json, checkpoints, "
                   "TensorBoard events (default runs/<job>). Rerunning with the same folder resumes.")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (data-parallel)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join ('auto' or HOST:PORT); default: start Ray locally")
    p.add_argument("--config", default=None, help="JSON of hyper-parameters, e.g. the "
                   "best_config.json written by tune.search; explicit flags override it "
                   "(default: none)")
    p.add_argument("--max-failures", type=int, default=2,
                   help="worker-group restarts Ray may make after a failure (from the last checkpoint)")
    p.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                   help="do not start the Ray dashboard (default: on, listening on 127.0.0.1; "
                        "Ray's state API, used to clean up after stopped workers, needs it)")
    p.add_argument("--placement", choices=["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"],
                   default="PACK", help="where Ray puts the workers: PACK fills a node first, "
                   "SPREAD uses different nodes where it can (metrics.json worker_nodes says where "
                   "each ran)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (default: "
                   "show them)")
    p.add_argument("--force-new", action="store_true",
                   help="the output folder holds a run with other settings: remove its "
                        "checkpoints, models, metrics and events and train a new run there "
                        "(default: refuse, naming the settings that differ)")


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
    TrainConfig.validate({**TrainConfig().to_dict(), **data}, where=str(p))
    return data


def merge_config(base: dict, file_cfg: dict, args, names: Sequence[str]) -> dict:
    """Mode defaults < config file < explicit flags (of the TrainConfig fields ``names``)."""
    cfg = dict(base)
    cfg.update(file_cfg)
    cfg.update(config_flags(args, names))
    if getattr(args, "no_progress", False):
        cfg["progress"] = False
    return cfg


def check_options(cfg: dict, workers: int, names: Sequence[str]) -> None:
    """Every option after merging, in one validation pass (exit 2 naming the flag of the
    TrainConfig fields ``names``, or the key)."""
    if workers < 1:
        raise BadInput(f"--workers must be at least 1, got {workers}")
    TrainConfig.validate(cfg, where="options", labels=flag_labels(names))


def has_run(out: Path) -> bool:
    return any((out / name).exists() for name in RUN_STATE
               if name not in ("progress.json", GRAPH_STORE, BEST_FILE))


def previous_run(cfg: dict, out: Path, force_new: bool) -> dict | None:
    """Look at the run folder before anything starts. A finished run with these settings: its
    metrics (nothing to train). A finished or interrupted run with other settings: BadInput
    naming the keys that differ, or with ``force_new`` its training state is removed. None:
    train (from scratch, or resuming an interrupted run with the same settings)."""
    from engine.training.checkpoint import newest_complete

    if force_new:
        for name in RUN_STATE:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        return None
    metrics = out / "metrics.json"
    done = None
    if metrics.exists():
        try:
            done = json.loads(metrics.read_text())
        except ValueError:
            raise BadInput(f"{metrics}: not valid JSON; pass --force-new to train a new run "
                           "here") from None
        saved, what = done.get("config", {}), "a finished run"
    else:
        state, _, _ = newest_complete(out)
        if state is None:
            return None
        saved, what = state.get("config", {}), f"an interrupted run (epoch {state['epoch']})"
    diff = config_diff(saved, cfg)
    if diff:
        raise BadInput(f"{out}: holds {what} trained with other settings ({describe_diff(diff)}); "
                       "pass --force-new to train a new run there, or choose another --output")
    return done


def check_output(out: Path, verb: str = "create", start: Path | None = None) -> None:
    """Fail as bad input (exit 2) before reading any data when the run folder cannot be made:
    the nearest existing folder from ``start`` (default ``out``) up must be writable. The folder
    itself is created only once the data has been read and checked."""
    parent = out if start is None else start
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BadInput(f"{out}: cannot {verb} output folder ({parent} is not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"{out}: cannot {verb} output folder ({parent} is not writable)")


def check_split(ds, cfg: dict, where: Path) -> None:
    """The protocol split of ``ds`` must give test and validation owners (exit 2 otherwise)."""
    from engine.graph.split import make_split

    split = make_split(ds, holdout=cfg["holdout"], val_ratio=cfg["val_ratio"],
                       test_ratio=cfg["test_ratio"], max_val_owners=cfg["max_val_owners"],
                       seed=cfg["seed"])
    owner = "playlist" if ds.kind == "playlist" else "user"
    need = (f"{cfg['holdout']} + 5 distinct tracks" if ds.kind == "playlist"
            else "5 distinct songs")
    if len(split.test) == 0:
        raise BadInput(f"{where}: no {owner} has the {need} the test split needs")
    if len(split.val) == 0:
        raise BadInput(f"{where}: no {owner} keeps enough items after its test part for the "
                       f"validation split (a {owner} needs {need} beyond its test part)")


def run_dataset(load_raw, source: Path, out: Path, max_owners: int | None, seed: int,
                check: Callable | None = None) -> Path:
    """The prepared dataset a run trains on, at ``<out>/dataset``.

    Reused as it is when it was made from the same source (same size and hash) with the same
    subset, so resuming never re-parses; otherwise (re)built from ``load_raw()``: a run folder
    with a run in it refuses another source (BadInput: --force-new). ``check(ds)`` runs on the
    dataset before it is saved (or on the reused one), so bad data never creates the folder.
    The tables are freed before it returns (the driver only waits for Ray afterwards).
    """
    from engine.training.heap import release_heap

    try:
        return _run_dataset(load_raw, source, out, max_owners, seed, check)
    finally:
        release_heap()  # parsing's pages (docs/benchmarks.md, round 5: the driver)


def _run_dataset(load_raw, source: Path, out: Path, max_owners: int | None, seed: int,
                 check: Callable | None) -> Path:
    from engine.data.canonical import file_fingerprint, is_prepared, load_dataset, save_dataset
    from engine.data.subset import subset_owners

    target = out / "dataset"
    fingerprint = ({"prepared": str(source.resolve())} if is_prepared(source)
                   else file_fingerprint(source) if source.is_file()
                   else {"folder": str(source.resolve()),  # names and sizes: no re-hashing
                         "files": sorted([p.name, p.stat().st_size] for p in source.iterdir())})
    want = {"source": fingerprint, "max_owners": max_owners, "seed": seed}
    if is_prepared(target):
        ds = load_dataset(target)
        if ds.manifest.get("run_dataset") == want:
            if check is not None:
                check(ds)
            return target
        if has_run(out):
            raise BadInput(f"{out}: holds a run trained on another source or subset "
                           f"({source}, {max_owners or 'all'} owners, seed {seed} now); pass "
                           "--force-new to train a new run there, or choose another --output")
    ds = load_dataset(source) if is_prepared(source) else load_raw()
    ds = subset_owners(ds, max_owners, seed)
    if check is not None:
        check(ds)
    ds.manifest["run_dataset"] = want
    save_dataset(ds, target)
    return target


def generated_kaggle_csv(seed: int) -> Path:
    """The seeded Kaggle-format CSV used when no --data is given (made once under
    ``data/generated/``, then reused)."""
    from engine.data.kaggle_writer import write_kaggle_csv

    path = Path("data/generated") / f"spotify_dataset.seed{seed}.{GENERATED_ROWS}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {GENERATED_ROWS:,} Kaggle-format rows (seed {seed}) -> {path}")
        write_kaggle_csv(path, GENERATED_ROWS, seed=seed)
    return path


def session_source(data: str | None, users: int, days: int, seed: int) -> Path:
    """The prepared session dataset to train on: ``data`` (checked), or one generated once under
    ``data/generated/`` for (users, days, seed) and reused afterwards."""
    from engine.data.canonical import is_prepared, load_dataset, save_dataset

    if data:
        source = Path(data)
        if not is_prepared(source):
            raise BadInput(f"{source}: not a prepared session dataset (no manifest.json)")
        if load_dataset(source).kind != "session":
            raise BadInput(f"{source}: a playlist dataset; use jobs.train_kaggle for it")
        return source
    source = Path("data/generated") / f"sessions.seed{seed}.{users}u.{days}d"
    if not is_prepared(source):
        from engine.data.sessions import generate_sessions

        print(f"generating {users:,} users x {days} days of sessions -> {source}")
        save_dataset(generate_sessions(num_users=users, days=days, seed=seed), source)
    return source


def build_graph_store(cfg: dict) -> Path:
    """The run's split and graphs, built once here for every worker to map (one copy per node;
    :meth:`engine.training.run_data.RunData.save_store`), in ``<output>/graph_store``."""
    from engine.training.run_data import RunData

    store = Path(cfg["output"]) / GRAPH_STORE
    print("split and graphs: built once, mapped by every worker", flush=True)
    RunData.save_store_apart(TrainConfig.from_dict(cfg), store)
    return store


def check_memory(cfg: dict, workers: int, local: bool) -> None:
    """Print the run's memory estimate (engine.training.memory); on this machine (no
    ``--address``) a run that cannot fit is bad input, before Ray starts. On a cluster each node
    holds its own share, which Ray's scheduler sees, so the estimate is only printed."""
    from engine.training.memory import check_fits, run_estimate

    train_cfg = TrainConfig.from_dict(cfg)
    try:
        est = check_fits(train_cfg, workers) if local else run_estimate(train_cfg, workers)
    except ValueError as exc:
        raise BadInput(f"{cfg['output']}: {exc}") from None
    print(f"memory estimate: {est.describe()}", flush=True)


def launch(cfg: dict, workers: int, address: str | None, max_failures: int,
           dashboard: bool, placement: str = "PACK", hooks: Sequence[Callable] = ()) -> dict:
    """Start (or join) Ray and run the loop on ``workers`` Ray Train workers. Ray's own log lines
    go to ``<output>/ray.log``. ``hooks``: loop observers for every worker
    (:func:`engine.training.loop.fit`); the jobs pass none, tests wrap this function to add
    theirs."""
    from engine.training.ray_train import LOG_FILE, init_ray, run_torch_trainer, shutdown_ray

    cfg = dict(cfg, graph_store=str(build_graph_store(cfg)))
    check_memory(cfg, workers, local=address is None)
    print(f"Ray's own log: {Path(cfg['output']) / LOG_FILE}", flush=True)
    init_ray(address=address, dashboard=dashboard, log_dir=cfg["output"])
    try:
        # on a helper thread: fit() on the main thread would replace our Ctrl-C handler with
        # Ray Train's (see jobs.interrupts)
        result = run_in_thread(lambda: run_torch_trainer(
            cfg, workers=workers, max_failures=max_failures, placement=placement, hooks=hooks))
    except KeyboardInterrupt:
        # stops the workers (a second Ctrl-C ends the process at once); what Ray prints while
        # it stops goes to its log
        with stderr_to(Path(cfg["output"]) / LOG_FILE):
            shutdown_ray()
        raise
    except Exception as exc:  # Ray wraps worker errors; give one readable line
        if isinstance(exc.__cause__, BadInput):
            raise exc.__cause__ from None
        raise
    if result is None:
        result = json.loads((Path(cfg["output"]) / "metrics.json").read_text())
    return result


def print_report(result: dict, out: Path) -> None:
    """The final table: the model beside its baselines, same split, same run."""
    if "test" not in result:  # final_test false: the run never looked at the test split
        print(f"\nbest val_recall@10 {result['best_val_recall@10']:.4f} over "
              f"{result['epochs_run']} epoch(s); test split not evaluated (final_test is false)")
        print(f"TensorBoard: tensorboard --logdir {out} --host 127.0.0.1")
        return
    data = result["data"]
    owner = "playlists" if data["kind"] == "playlist" else "users"
    print()
    print(f"Test split of {data['dataset']}: {result['test']['playlists']} {owner}, "
          f"{data['test_items']} held-out items, {result['test']['coverable']:.1%} coverable "
          f"(candidates: items with a training edge; own training items masked)")
    cols = ["recall@10", "ndcg@10", "recall@50", "ndcg@50", "r_precision"]
    extra = [c for c in ("distinct_artists@10", "coverage@10") if c in result["test"]]
    heads = [c.replace("distinct_artists@10", "artists@10") for c in cols + extra]
    print(f"{'':<14}" + "".join(f"{c:>12}" for c in heads))
    rows = [("model", result["test"])] + list(result["baselines"].items())
    for name, m in rows:
        print(f"{name:<14}" + "".join(f"{m[c]:>12.4f}" for c in cols)
              + "".join(f"{m.get(c, float('nan')):>12.{2 if 'artists' in c else 4}f}"
                        for c in extra))
    if extra:
        print("artists@10: mean distinct artists in a top-10; coverage@10: share of candidate "
              "tracks in any top-10")
    print(f"\nparams {result['params']:,}; train {result['train_seconds']:.1f} s over "
          f"{result['epochs_run']} epoch(s) on {result['workers']} worker(s); "
          f"best val_recall@10 {result['best_val_recall@10']:.4f}")
    for r in result.get("resumes", []):
        print(f"resumed from the checkpoint of epoch {r['from_epoch']}, "
              f"{r['epochs_lost']} epoch(s) lost")
    print(f"metrics: {out / 'metrics.json'}\nTensorBoard: tensorboard --logdir {out} "
          f"--host 127.0.0.1")


def report_finished(cfg: dict, out: Path, force_new: bool) -> bool:
    """True, after printing its report from ``metrics.json``, when ``out`` holds a finished run
    with these settings (:func:`previous_run`): answered before Ray starts."""
    done = previous_run(cfg, out, force_new)
    if done is None:
        return False
    print(f"run already finished at epoch {done['epochs_run']} ({out / 'metrics.json'}); "
          "not retraining")
    print_report(done, out)
    return True


def run_training_job(job: str, args, argv, body) -> int:
    """``body(args, out)`` for ``python -m jobs.<job>``, with ``out`` the run folder: a Ctrl-C
    ends it with the one line of :func:`interrupted` (what was saved, the resume command)."""
    out = Path(args.output or default_output(job))
    resume = resume_command(f"jobs.{job}", argv, drop=("--force-new",))
    with sigint_guard():
        try:
            return body(args, out)
        except KeyboardInterrupt:
            raise interrupted(out, resume) from None


def interrupted(out: Path, resume: str) -> Interrupted:
    """The one line for a Ctrl-C: what the run folder holds and the command that resumes."""
    from engine.training.checkpoint import newest_complete

    state = newest_complete(out)[0] if out.is_dir() else None
    if state is None:
        return Interrupted(f"interrupted before the first checkpoint: nothing to resume in "
                           f"{out}; start again with: {resume}")
    return Interrupted(f"interrupted: the checkpoint of epoch {state['epoch']} is saved in {out}; "
                       f"resume with: {resume}")


def default_output(job: str) -> str:
    return os.path.join("runs", job)

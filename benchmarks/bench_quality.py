"""Recommendation quality on the real MPD slices: PlaylistGAT beside six baselines, at several
data sizes and seeds.

    .venv/bin/python benchmarks/bench_quality.py [--data ../shared/data/mpd/slices]
        [--sizes 500 1000 0] [--seeds 0 1 2] [--mode quick] [--variants defaults no_artist]
        [--output runs/bench_quality] [--reuse] [--no-implicit] [--summary]

For every size N (playlists in the seeded sample; 0 = all 2,697) and seed S:

1. ``python -m jobs.train_kaggle --data DATA --mode MODE --max-playlists N --seed S --workers 1``
   per variant: ``defaults`` (every hyper-parameter at its default), ``no_artist`` (the same
   model trained without the artist-affinity term, ``model_options.affinity_types = []``),
   ``no_terms`` (without the artist term and the item-kNN term: the learned GAT alone),
   ``dot_loss`` (the defaults plus the same loss on the dot product alone, ``dot_loss`` 1; its
   score parts are reported too), ``wide`` (D = 256 without track features, with that loss, lr
   0.002; its score parts too) and ``tuned`` (``--tuned best_config.json`` of a
   ``tune.search`` on the same sample: its test figures beside the defaults').
   ``--reuse`` reads a variant's existing ``metrics.json`` instead of training again.
2. From the defaults run's ``metrics.json``: the model's test metrics beside popularity and
   item-kNN (same split, candidates, masking and tie-break: the run computed them).
3. The trained model's two score parts on their own (same checkpoint, same graph): the GAT dot
   product alone and the artist affinity alone.
4. On the same split: ALS and BPR-MF (``implicit``, 64 factors; skipped when not importable,
   ``pip install -e '.[bench]'``), EASE (λ chosen on validation) and item-kNN + w·log(1 +
   same-artist count) (w chosen on validation), see :mod:`engine.eval.strong`. Each baseline's
   fit time is recorded beside the model's training time.

Writes ``OUTPUT/n{N}_s{S}/rows.json`` per sample (``--summary`` reads them back, e.g. after
samples were run by several processes) and prints, per size, the mean and spread
(min–max) over seeds of Recall@10, NDCG@10, distinct artists and coverage@10, and the model's
ratio to the best of the six baselines. docs/results.md quotes it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.eval.evaluate import candidate_mask, evaluate_scores
from engine.eval.strong import strong_baselines
from engine.models import part_score_fns
from engine.training.checkpoint import load_state
from engine.training.config import TrainConfig, make_model
from engine.training.run_data import RunData

KEYS = ("recall@10", "ndcg@10", "recall@50", "r_precision", "distinct_artists@10", "coverage@10")
BASELINES = ("popularity", "item-kNN", "ALS", "BPR-MF", "EASE", "item-kNN + artist")
# "tuned": the configuration of --tuned (a tune.search best_config.json)
# "no_terms": neither the artist term nor the item-kNN term, the learned GAT's dot product alone
# "dot_loss": the defaults plus the same loss on the dot product alone (TrainConfig.dot_loss)
VARIANTS = {"defaults": {}, "no_artist": {"model_options": {"affinity_types": []}},
            "no_terms": {"model_options": {"affinity_types": []}, "knn_init": 0.0},
            "dot_loss": {"dot_loss": 1.0},
            # "wide": a rank-256 dot product that starts from the SVD (PureSVD of rank 256 ranks
            # above item-kNN at 2,697 playlists, docs/results.md): D = 256, tracks without feature
            # inputs, the dot-product loss, lr 0.002 (0.01 diverged at D = 256)
            "wide": {"embedding_dim": 256, "dot_loss": 1.0, "lr": 0.002,
                     "model_options": {"feature_types": []}},
            "tuned": {}}
# each trained variant's row, and the prefix of its score parts' rows (None: not reported)
VARIANT_ROWS = {
    "no_artist": ("PlaylistGAT trained without the artist term", None),
    "no_terms": ("PlaylistGAT trained without the artist and kNN terms", None),
    "dot_loss": ("PlaylistGAT trained with the dot-product loss (dot_loss 1)", "  with it, its "),
    "wide": ("PlaylistGAT, D = 256, no track features, dot-product loss, lr 0.002", "  wide, its ")}


def train(data: str, mode: str, out: Path, size: int, seed: int, variant: str,
          tuned: str | None = None, threads: int = 0) -> None:
    cmd = [sys.executable, "-m", "jobs.train_kaggle", "--data", data, "--mode", mode,
           "--workers", "1", "--output", str(out), "--no-progress", "--seed", str(seed),
           "--max-playlists", str(size), "--threads", str(threads)]
    out.parent.mkdir(parents=True, exist_ok=True)
    if variant == "tuned":
        cmd += ["--config", tuned]
    elif VARIANTS[variant]:
        cfg = out.parent / f"{variant}.config.json"
        cfg.write_text(json.dumps(VARIANTS[variant]))
        cmd += ["--config", str(cfg)]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    log = out.parent / f"{variant}.log"
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        sys.exit(f"train_kaggle failed (exit {proc.returncode}); see {log}")
    print(f"  trained in {time.perf_counter() - t0:.0f} s wall", flush=True)


def implicit_rows(data: RunData, threads: int) -> dict[str, dict]:
    """ALS and BPR-MF from ``implicit`` fitted on every non-test edge, scored like the others."""
    try:
        from implicit.als import AlternatingLeastSquares
        from implicit.bpr import BayesianPersonalizedRanking
        from scipy.sparse import csr_matrix
    except ImportError:
        print("implicit not importable: ALS/BPR-MF skipped (pip install -e '.[bench]')")
        return {}
    split = data.split
    e = split.train.numpy()
    key = np.unique(e[0].astype(np.int64) * split.num_items + e[1])
    ui = csr_matrix((np.ones(len(key), np.float32), (key // split.num_items,
                                                     key % split.num_items)),
                    shape=(split.num_owners, split.num_items))
    models = {
        "ALS": lambda: AlternatingLeastSquares(
            factors=64, regularization=0.05, iterations=15, random_state=0, num_threads=threads),
        "BPR-MF": lambda: BayesianPersonalizedRanking(
            factors=64, learning_rate=0.05, regularization=0.01, iterations=100, random_state=0,
            num_threads=threads),
    }
    out = {}
    for name, make in models.items():
        t0 = time.perf_counter()
        model = make()
        model.fit(ui, show_progress=False)
        fit_s = time.perf_counter() - t0
        uf = torch.from_numpy(np.asarray(_numpy(model.user_factors), np.float32))
        itf = torch.from_numpy(np.asarray(_numpy(model.item_factors), np.float32))
        out[name] = {"test": evaluate_scores(lambda ids, uf=uf, itf=itf: uf[ids] @ itf.T,
                                             split.train, split.test, split.num_items,
                                             candidates=candidate_mask(split.train,
                                                                       split.num_items),
                                             item_artist=split.item_artist),
                     "fit_seconds": round(fit_s, 2)}
    return out


def part_rows(cfg: TrainConfig, data: RunData, out: Path) -> dict[str, dict]:
    """The trained model's score parts on their own (``engine.models.part_score_fns``), on
    the test split; empty for a model whose score is the dot product alone."""
    graph = data.graph("train")
    model = make_model(cfg, graph)
    model.load_state_dict(load_state(out / "best_model.pt"))
    parts = part_score_fns(model, graph)
    if len(parts) == 1:
        return {}
    split = data.split
    cand = candidate_mask(split.train, split.num_items)
    names = {"gat": "GAT dot product alone", "affinity": "artist affinity alone",
             "knn": "item-kNN term alone"}
    return {names[k]: {"test": evaluate_scores(fn, split.train, split.test, split.num_items,
                                               candidates=cand, item_artist=split.item_artist)}
            for k, fn in parts.items()}


def _numpy(x):
    return x.to_numpy() if hasattr(x, "to_numpy") else x


def sample_rows(args, size: int, seed: int) -> dict:
    """Every row of one (size, seed) sample, trained or reused; written to rows.json."""
    folder = Path(args.output) / f"n{size}_s{seed}"
    runs = {}
    for variant in args.variants:
        out = folder / variant
        if not (args.reuse and (out / "metrics.json").exists()):
            shutil.rmtree(out, ignore_errors=True)  # the same folder would resume, not train
            train(args.data, args.mode, out, size, seed, variant, args.tuned, args.train_threads)
        runs[variant] = json.loads((out / "metrics.json").read_text())
    m = runs["defaults"]
    cfg = TrainConfig.from_saved(m["config"])
    data = RunData.load(cfg)  # the run's own split
    rows = {"PlaylistGAT": {"test": m["test"], "train_seconds": m["train_seconds"],
                            "best_val_recall@10": m.get("best_val_recall@10")}}
    rows.update({f"  its {k}": v for k, v in part_rows(cfg, data, folder / "defaults").items()})
    for variant, (name, parts) in VARIANT_ROWS.items():
        if variant not in runs:
            continue
        rows[name] = {"test": runs[variant]["test"],
                      "train_seconds": runs[variant]["train_seconds"],
                      "best_val_recall@10": runs[variant].get("best_val_recall@10")}
        if parts:
            v_cfg = TrainConfig.from_saved(runs[variant]["config"])
            rows.update({f"{parts}{k}": v
                         for k, v in part_rows(v_cfg, data, folder / variant).items()})
    if "tuned" in runs:
        rows["PlaylistGAT, tune.search's best configuration"] = {
            "test": runs["tuned"]["test"], "train_seconds": runs["tuned"]["train_seconds"]}
    rows["popularity"] = {"test": m["baselines"]["popularity"]}
    rows["item-kNN"] = {"test": m["baselines"]["item_knn"]}
    if not args.no_implicit:
        rows.update(implicit_rows(data, args.threads))
    strong = strong_baselines(data.split, log=lambda s: print("  " + s, flush=True))
    rows["EASE"] = {**strong["ease"], "param": f"lambda {strong['ease']['param']:g}"}
    rows["item-kNN + artist"] = {**strong["item_knn_artist"],
                                 "param": f"w {strong['item_knn_artist']['param']:g}"}
    d = m["data"]
    result = {"size": size, "seed": seed, "data": d, "mode": args.mode,
              "epochs_run": m["epochs_run"], "rows": rows}
    (folder / "rows.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"n={size} seed={seed}: {d['owners']:,} playlists, {d['items']:,} tracks, "
          f"{d['test_owners']:,} test playlists; model Recall@10 {m['test']['recall@10']:.4f}, "
          f"best baseline {best_baseline(rows)[1]:.4f}", flush=True)
    return result


def best_baseline(rows: dict, key: str = "recall@10") -> tuple[str, float]:
    name = max((n for n in BASELINES if n in rows), key=lambda n: rows[n]["test"][key])
    return name, rows[name]["test"][key]


def spread(values: list[float], fmt: str = ".4f") -> str:
    a = np.asarray(values, dtype=float)
    if len(a) == 1:
        return format(a[0], fmt)
    return f"{a.mean():{fmt}} ({a.min():{fmt}}–{a.max():{fmt}})"


def summary(results: list[dict]) -> str:
    lines = []
    for size in dict.fromkeys(r["size"] for r in results):
        rs = [r for r in results if r["size"] == size]
        d = rs[0]["data"]
        lines += [(f"\n### {d['owners']:,} playlists (size {size or 'all'}), seeds "
                   f"{', '.join(str(r['seed']) for r in rs)}: mean (min–max)\n"),
                  "| model | " + " | ".join(KEYS) + " | fit / train s |",
                  "|" + " --- |" * (len(KEYS) + 2)]
        for name in rs[0]["rows"]:
            got = [r["rows"][name] for r in rs if name in r["rows"]]
            cells = [spread([g["test"][k] for g in got], ".2f" if "distinct" in k else ".4f")
                     for k in KEYS]
            secs = [g.get("train_seconds", g.get("fit_seconds")) for g in got]
            cells.append(spread(secs, ".0f") if None not in secs else "")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for key in ("recall@10", "ndcg@10"):
            ratios = [r["rows"]["PlaylistGAT"]["test"][key] / best_baseline(r["rows"], key)[1]
                      for r in rs]
            names = sorted({best_baseline(r["rows"], key)[0] for r in rs})
            lines.append(f"\nPlaylistGAT {key} / best baseline ({', '.join(names)}): "
                         f"{spread(ratios, '.2f')} (goal >= 1.15)")
        for name, prefix in (("PlaylistGAT", "  its "),
                             *((n, p) for n, p in VARIANT_ROWS.values() if p)):
            part = f"{prefix}GAT dot product alone"
            gat = [r["rows"][part]["test"]["recall@10"] / r["rows"]["item-kNN"]["test"]["recall@10"]
                   for r in rs if part in r["rows"]]
            if gat:
                lines.append(f"{name}: its GAT dot product alone / item-kNN, Recall@10: "
                             f"{spread(gat, '.2f')}")
            if name == "PlaylistGAT" or not any(name in r["rows"] for r in rs):
                continue
            ratios = [r["rows"][name]["test"]["recall@10"]
                      / best_baseline(r["rows"])[1] for r in rs if name in r["rows"]]
            lines.append(f"{name} Recall@10 / best baseline: {spread(ratios, '.2f')}")
        vals = {name: [r["rows"][name].get("best_val_recall@10") for r in rs if name in r["rows"]]
                for name in ("PlaylistGAT", *(n for n, _ in VARIANT_ROWS.values()))}
        vals = {n: v for n, v in vals.items() if v and None not in v}
        if len(vals) > 1:  # what a choice between the variants would read: validation
            lines.append("best validation Recall@10 (the choice's figure): " + "; ".join(
                f"{n} {spread(v)}" for n, v in vals.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mpd" / "slices"))
    p.add_argument("--output", default=str(ROOT / "runs" / "bench_quality"))
    p.add_argument("--mode", default="quick", help="training mode at every size (default quick)")
    p.add_argument("--sizes", nargs="+", type=int, default=[500, 1000, 0],
                   help="playlists per seeded sample (0 = all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS),
                   default=["defaults", "no_artist"])
    p.add_argument("--tuned", default=None, help="variant tuned: this best_config.json of "
                   "tune.search (its search ran on the same data, mode and seed)")
    p.add_argument("--reuse", action="store_true", help="read existing metrics.json, no training")
    p.add_argument("--summary", action="store_true",
                   help="only print the summary of the samples' existing rows.json files")
    p.add_argument("--no-implicit", action="store_true", help="skip ALS / BPR-MF")
    p.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1),
                   help="ALS / BPR-MF threads")
    p.add_argument("--train-threads", type=int, default=0,
                   help="torch threads of the training job (0: its default, the CPUs Ray sees; "
                        "give 1 to run two of these side by side)")
    args = p.parse_args(argv)
    if "defaults" not in args.variants:
        p.error("--variants must include defaults")
    if ("tuned" in args.variants) != bool(args.tuned):
        p.error("variant tuned and --tuned go together")
    if args.summary:
        files = [Path(args.output) / f"n{size}_s{seed}" / "rows.json"
                 for size in args.sizes for seed in args.seeds]
        missing = [str(f.parent) for f in files if not f.exists()]
        if missing:
            print(f"not run yet (left out): {', '.join(missing)}")
        print(summary([json.loads(f.read_text()) for f in files if f.exists()]))
        return
    print(f"load {os.getloadavg()[0]:.1f} at start", flush=True)
    results = [sample_rows(args, size, seed) for size in args.sizes for seed in args.seeds]
    print(summary(results))


if __name__ == "__main__":
    main()

"""Recommendation quality in quick mode on the real MPD slices: the GAT beside its baselines.

    .venv/bin/python benchmarks/bench_quality.py [--data ../shared/data/mpd/slices]
        [--output runs/bench_quality] [--mode quick] [--seed 0] [--reuse] [--no-implicit]

1. Runs ``python -m jobs.train_kaggle --data DATA --mode quick --workers 1 --output OUTPUT``
   (a seeded sample of 1,000 playlists, 5 epochs, batches of 128 playlists, every other
   hyper-parameter at its ``TrainConfig`` default); ``--reuse`` reads an existing
   ``OUTPUT/metrics.json`` instead of training again. ``--seed S`` passes ``--seed S``: another
   1,000-playlist sample, initialisation and batch order (baselines and ALS follow the sample).
2. Reads ``metrics.json``: the model's test metrics and the popularity and item-kNN baselines of the
   same run (same split, candidates, masking and tie-break).
3. If ``implicit`` is importable (``pip install -e '.[bench]'``), fits ALS (64 factors) and BPR-MF
   (64 factors) on the same prepared dataset and split (``RunData.load`` of the run's own
   config, as the training loop makes it; fitted on every non-test edge, like the baselines) and scores
   them with ``evaluate_scores`` over the same candidates and masks.
4. For a model with a sparse score term (PlaylistGAT's artist affinity), scores the two parts of
   the trained model's score on their own: the GAT dot product alone and the affinity alone.
5. Prints one table (Recall@10/50, NDCG@10/50, R-precision, playlists, coverable) and the model's
   ratio to the better of item-kNN and ALS.
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

from engine.eval.evaluate import candidate_mask, embedding_score_fn, evaluate_scores
from engine.models import infer, score_bias
from engine.training.checkpoint import load_state
from engine.training.config import TrainConfig, make_model
from engine.training.run_data import RunData

KEYS = ("recall@10", "recall@50", "ndcg@10", "ndcg@50", "r_precision", "playlists", "coverable")


def train(data: str, mode: str, output: Path, seed: int) -> None:
    cmd = [sys.executable, "-m", "jobs.train_kaggle", "--data", data, "--mode", mode,
           "--workers", "1", "--output", str(output), "--no-progress", "--seed", str(seed)]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    print(f"train_kaggle finished in {time.perf_counter() - t0:.0f} s", flush=True)


def implicit_rows(metrics: dict, threads: int) -> dict[str, dict]:
    """ALS and BPR-MF from ``implicit`` on the run's split, scored like the baselines."""
    try:
        import implicit  # noqa: F401
        from implicit.als import AlternatingLeastSquares
        from implicit.bpr import BayesianPersonalizedRanking
        from scipy.sparse import csr_matrix
    except ImportError:
        print("implicit not importable: ALS/BPR-MF skipped (pip install -e '.[bench]')")
        return {}
    split = RunData.load(TrainConfig.from_dict(metrics["config"])).split  # the run's own split
    edges = split.train  # every non-test edge, as for the baselines
    cand = candidate_mask(edges, split.num_items)
    e = edges.numpy()
    key = np.unique(e[0].astype(np.int64) * split.num_items + e[1])
    rows, cols = key // split.num_items, key % split.num_items
    ui = csr_matrix((np.ones(len(key), np.float32), (rows, cols)),
                    shape=(split.num_owners, split.num_items))
    out = {}
    models = {
        "ALS (implicit, 64 f.)": lambda: AlternatingLeastSquares(
            factors=64, regularization=0.05, iterations=15, random_state=0, num_threads=threads),
        "BPR-MF (implicit, 64 f.)": lambda: BayesianPersonalizedRanking(
            factors=64, learning_rate=0.05, regularization=0.01, iterations=100, random_state=0,
            num_threads=threads),
    }
    for name, make in models.items():
        t0 = time.perf_counter()
        model = make()
        model.fit(ui, show_progress=False)
        uf = torch.from_numpy(np.asarray(_numpy(model.user_factors), np.float32))
        itf = torch.from_numpy(np.asarray(_numpy(model.item_factors), np.float32))

        def score(owner_ids: torch.Tensor, uf=uf, itf=itf) -> torch.Tensor:
            return uf[owner_ids] @ itf.T
        out[name] = evaluate_scores(score, edges, split.test, split.num_items,
                                    candidates=cand)
        print(f"{name}: fitted and evaluated in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def part_rows(metrics: dict, out: Path) -> dict[str, dict]:
    """The trained model's two score parts on their own, on the test split (how much each
    carries); empty for a model whose score is the dot product alone."""
    cfg = TrainConfig.from_dict(metrics["config"])
    data = RunData.load(cfg)
    graph = data.graph("train")
    model = make_model(cfg, graph)
    model.load_state_dict(load_state(out / "best_model.pt"))
    model.eval()
    with torch.no_grad():
        bias = score_bias(model, graph.full())
        if bias is None:
            return {}
        vecs = infer(model, graph)
        dot = embedding_score_fn(vecs[graph.owner_type], vecs[graph.item_type])
        n = graph.num_nodes[graph.item_type]
        parts = {"  its GAT dot product alone": dot,
                 "  its artist affinity alone": lambda ids: bias.rows(ids, n)}
        split = data.split
        cand = candidate_mask(split.train, split.num_items)
        return {name: evaluate_scores(fn, split.train, split.test, split.num_items,
                                      candidates=cand) for name, fn in parts.items()}


def _numpy(x):
    return x.to_numpy() if hasattr(x, "to_numpy") else x


def table(rows: dict[str, dict]) -> str:
    head = "| model | " + " | ".join(KEYS) + " |"
    lines = [head, "|" + " --- |" * (len(KEYS) + 1)]
    for name, m in rows.items():
        cells = []
        for k in KEYS:
            v = m[k]
            cells.append(str(v) if k == "playlists" else f"{v:.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mpd" / "slices"))
    p.add_argument("--output", default=str(ROOT / "runs" / "bench_quality"))
    p.add_argument("--mode", default="quick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reuse", action="store_true", help="read OUTPUT/metrics.json, do not train")
    p.add_argument("--no-implicit", action="store_true", help="skip ALS / BPR-MF")
    p.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    args = p.parse_args(argv)

    out = Path(args.output)
    if not (args.reuse and (out / "metrics.json").exists()):
        shutil.rmtree(out, ignore_errors=True)  # a rerun in the same folder would resume, not train
        train(args.data, args.mode, out, args.seed)
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {f"PlaylistGAT ({metrics['config']['model']})": metrics["test"],
            **part_rows(metrics, out),
            "popularity": metrics["baselines"]["popularity"],
            "item-kNN (cosine)": metrics["baselines"]["item_knn"]}
    if not args.no_implicit:
        rows.update(implicit_rows(metrics, args.threads))
    d = metrics["data"]
    print(f"\ndata: {d['dataset']} ({d['owners']:,} playlists, {d['items']:,} tracks, "
          f"{d['train_edges']:,} non-test edges, {d['test_owners']:,} test playlists x "
          f"{metrics['config']['holdout']} held out); train_seconds {metrics['train_seconds']}, "
          f"{metrics['epochs_run']} epoch(s), best val Recall@10 {metrics['best_val_recall@10']:.4f}")
    print(table(rows))
    ref = max(r["recall@10"] for n, r in rows.items() if n.startswith(("item-kNN", "ALS")))
    model = metrics["test"]["recall@10"]
    print(f"\nmodel Recall@10 / best of item-kNN and ALS = {model:.4f} / {ref:.4f} = "
          f"{model / ref if ref else float('nan'):.2f} (goal >= 1.15)")


if __name__ == "__main__":
    main()

"""What PlaylistGAT scores before any training step, with each ``message_init``.

    .venv/bin/python benchmarks/bench_start.py [--data ../shared/data/mpd/slices]
        [--max-playlists 1000] [--output runs/ablation]

On quick mode's data (the seeded 1,000-playlist sample, or ``--max-playlists N``; 0 = all) and
its protocol split, builds the default model on the fit graph, starts its ID tables from the SVD
(``engine.models.init.svd_init_``, seed 0) and prints validation Recall@10 / NDCG@10 of the
untrained model (full score, and its two parts: the GAT dot product and the artist affinity) for
``message_init`` ``glorot`` (PyG's random message projections) and ``zeros`` (every layer starts
as the identity), beside item-kNN on the same validation split. docs/results.md quotes it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._run import quick_data_args, quick_dataset, validation
from engine.eval.baselines import item_knn_score_fn
from engine.models import part_score_fns, score_fn
from engine.models.init import svd_init_
from engine.training.config import TrainConfig, make_model
from engine.training.run_data import RunData


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    quick_data_args(p, "ablation")
    args = p.parse_args()
    dataset = quick_dataset(Path(args.data), Path(args.output), args.max_playlists)
    torch.set_num_threads(1)
    print("| start | full score R@10 / NDCG@10 | GAT dot product alone | artist affinity alone |")
    print("| --- | --- | --- | --- |")
    for init in ("glorot", "zeros"):
        torch.manual_seed(0)
        # no item-kNN term: the start of the model this script measured (docs/results.md)
        cfg = TrainConfig(dataset=str(dataset), knn_init=0.0, model_options={"message_init": init})
        data = RunData.load(cfg)
        split, graph = data.split, data.graph("fit")
        model = make_model(cfg, graph)
        svd_init_(model, graph, cfg.seed)
        model.eval()

        with torch.no_grad():
            parts = part_score_fns(model, graph)
            print(f"| SVD tables, message_init {init} | {val(score_fn(model, graph), split)} | "
                  f"{val(parts['gat'], split)} | {val(parts['affinity'], split)} |", flush=True)
    knn = item_knn_score_fn(split.fit, split.num_owners, split.num_items)
    print(f"| item-kNN (same validation split) | {val(knn, split)} | | |")


def val(fn, split) -> str:
    """Validation Recall@10 / NDCG@10 of a score function (fit edges masked)."""
    m = validation(fn, split)
    return f"{m['recall@10']:.4f} / {m['ndcg@10']:.4f}"


if __name__ == "__main__":
    main()

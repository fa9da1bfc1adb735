"""What a plain dot product can reach: PureSVD at several ranks beside item-kNN and EASE.

    .venv/bin/python benchmarks/bench_puresvd.py [--max-playlists 1000] [--ranks 64 128 256 512]
        [--data ../shared/data/mpd/slices] [--output runs/ablation]

On quick mode's data (the seeded sample of ``--max-playlists`` playlists, 0 = all) and its
protocol split, scores the validation playlists with the rank-k truncated SVD of the fit
matrix (:math:`\\mathbf{U}_k\\boldsymbol{\\Sigma}_k\\mathbf{V}_k^\\top`, from
:func:`engine.models.init.svd_factors` on the fit graph, seed 0: the factors
:func:`~engine.models.init.svd_init_` puts in PlaylistGAT's ID tables at step 0), and
prints validation Recall@10 beside item-kNN and EASE (λ 50 / 200 / 500) on the same split,
candidates and masking. No training: it bounds what the model's dot product starts from and
shows how far a rank-64 dot product is from a full-rank item–item model. docs/results.md
quotes it.
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
from engine.eval.strong import ease_score_fn
from engine.models.init import svd_factors
from engine.training.config import TrainConfig
from engine.training.run_data import RunData


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    quick_data_args(p, "ablation")
    p.add_argument("--ranks", nargs="+", type=int, default=[64, 128, 256, 512])
    args = p.parse_args()
    torch.set_num_threads(1)
    dataset = quick_dataset(Path(args.data), Path(args.output), args.max_playlists)
    data = RunData.load(TrainConfig(dataset=str(dataset)))
    split, graph = data.split, data.graph("fit")
    fit, owners, items = split.fit, split.num_owners, split.num_items

    def val(fn) -> str:
        return f"{validation(fn, split)['recall@10']:.4f}"

    print(f"{len(split.val)} validation playlists")
    print("| scorer | validation Recall@10 |\n| --- | --- |")
    for k in args.ranks:
        u, v = svd_factors(graph, k, seed=0)  # U S^1/2, V S^1/2: their product is U S V^T
        print(f"| PureSVD, rank {k} | {val(lambda ids, u=u, v=v: u[ids] @ v.T)} |", flush=True)
    print(f"| item-kNN | {val(item_knn_score_fn(fit, owners, items))} |", flush=True)
    for lam in (50.0, 200.0, 500.0):
        print(f"| EASE, λ {lam:g} | {val(ease_score_fn(fit, owners, items, lam))} |", flush=True)


if __name__ == "__main__":
    main()

"""Non-GAT signals on the quick split: how much artist and recency information is there to use.

    .venv/bin/python benchmarks/bench_signals.py [--data ../shared/data/mpd/slices]
        [--output runs/signals]

On quick mode's data (seeded sample of 1,000 MPD playlists, protocol split with the
``TrainConfig`` defaults; it first prints how many tracks have exactly one training playlist),
for the validation
split (fit edges) and the test split (all non-test edges), Recall@10 / NDCG@10 of:

* the project's popularity and item-kNN baselines (``evaluate_with_baselines``);
* **artist**: score(p, t) = number of p's training tracks by t's artist (+ 0.001 × popularity to
  break ties);
* **item-kNN + w × artist** for w = 0.1 and 0.3 (the project's item-kNN score plus the above);
* **recency-weighted item-kNN** (dense cosine): score(p, t) = Σ_j exp(-r_j / τ) cos(j, t), r_j
  = distance of j from the end of p's training row, for τ = ∞ (plain), 10, 25, 50.

Scored with ``evaluate_scores`` (same candidates, masks and seeded tie-break as every model).
These are measurements for docs/results.md, not baselines the jobs report.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._run import quick_data_args, quick_dataset
from engine.eval.baselines import evaluate_with_baselines, item_knn_score_fn
from engine.eval.evaluate import evaluate_scores
from engine.graph.split import rank_within_owner
from engine.training.config import TrainConfig
from engine.training.run_data import RunData


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    quick_data_args(p, "signals", sample=False)
    args = p.parse_args()
    path = quick_dataset(Path(args.data), Path(args.output))
    data = RunData.load(TrainConfig(dataset=str(path)))  # the split the quick-mode runs use
    ds, split = data.ds, data.split
    fit_deg = torch.bincount(split.fit[1], minlength=split.num_items)
    print(f"{split.num_items:,} tracks, {int((fit_deg > 0).sum()):,} with a fit edge, "
          f"{int((fit_deg == 1).sum()):,} in exactly one training playlist")
    artist = torch.as_tensor(ds.tracks["artist_id"].to_numpy(np.int64)).clamp(min=0)
    print("| split | scorer | Recall@10 | NDCG@10 |")
    print("| --- | --- | --- | --- |")
    for stage, edges, held in (("val", split.fit, split.val), ("test", split.train, split.test)):
        base = evaluate_with_baselines(None, split, stage_edges=edges, heldout=held, key=stage)
        rows = dict(base["baselines"])
        for name, fn in scorers(edges, split.num_owners, split.num_items, artist).items():
            rows[name] = evaluate_scores(fn, edges, held, split.num_items, ks=(10,))
        for name, m in rows.items():
            print(f"| {stage} | {name} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} |", flush=True)


def scorers(edges: torch.Tensor, n_owners: int, n_items: int, artist: torch.Tensor) -> dict:
    """The score functions of the module docstring on one stage's edges."""
    o, i = edges[0].long(), edges[1].long()
    # dense [owners, artists] counts of each playlist's training tracks per artist
    counts = torch.zeros(n_owners, int(artist.max()) + 1)
    counts.index_put_((o, artist[i]), torch.ones(o.numel()), accumulate=True)
    deg = torch.bincount(i, minlength=n_items).float()
    knn = item_knn_score_fn(edges, n_owners, n_items)
    out = {"artist": lambda ids: counts[ids][:, artist] + 1e-3 * deg}
    for w in (0.1, 0.3):
        out[f"item-kNN + {w} x artist"] = lambda ids, w=w: knn(ids) + w * counts[ids][:, artist]
    # recency-weighted cosine kNN; the split lists each owner's edges in playlist order
    rank, size = rank_within_owner(o.numpy())
    r_end = torch.from_numpy((size - 1 - rank).astype(np.float32))
    x = torch.zeros(n_owners, n_items)
    x[o, i] = 1.0
    xn = x / x.sum(0).sqrt().clamp(min=1e-9)
    for tau in (None, 10, 25, 50):
        wmat = torch.zeros_like(x)
        wmat[o, i] = 1.0 if tau is None else torch.exp(-r_end / tau)
        name = "cosine kNN (dense)" if tau is None else f"recency kNN, tau {tau}"
        out[name] = lambda ids, wmat=wmat: (wmat[ids] @ xn.T) @ xn
    return out

if __name__ == "__main__":
    main()

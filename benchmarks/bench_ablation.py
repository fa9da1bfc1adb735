"""The design ablation behind PlaylistGAT's defaults: quick mode on the MPD slices, one run per row.

    .venv/bin/python benchmarks/bench_ablation.py [--data ../shared/data/mpd/slices]
        [--output runs/ablation] [--only artist_recency basic ...] [--seeds 0 1 2]

Each row is ``train_loop_per_worker`` in this process (no Ray, one thread, seed 0) on the quick
mode's data (a seeded sample of 1,000 playlists, the protocol split; ``--max-playlists N`` for
another size, 0 for all of them) with quick mode's 5 epochs
and batches of 128 playlists, and the options below on top of the ``TrainConfig`` defaults. Every
option that changed default during the quality work is spelled out (``neg_popularity``,
``owner_rows`` and the affinity options included; ``knn_init`` is 0 unless a row sets it), so a
row means the same model whatever the defaults are. ``--seeds 0 1 2`` repeats each row with other seeds (initialisation and batch
sampling; the data and split stay the same). It prints best validation Recall@10 (the item-kNN
baseline on that validation split is 0.0229) and test Recall@10 / NDCG@10 beside item-kNN's from the same
run, then the validation curve per epoch. docs/results.md quotes the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._run import quick_data_args, quick_dataset, validation
from engine.models import part_score_fns
from engine.training.checkpoint import load_state
from engine.training.config import MODES, TrainConfig, make_model
from engine.training.loop import train_loop_per_worker
from engine.training.run_data import RunData

ALL_IDS = ["playlist", "track", "artist", "genre"]
NO_TRACK_IDS = ["playlist", "artist", "genre"]
ALL_FEATURES = ["playlist", "track", "artist"]
LINEAR = {"layer_norm": False, "activation": False}

ROWS: dict[str, tuple[str, dict]] = {
    "basic": ("GATRecommender (basic)", {"model": "basic", "neg_popularity": 0.0}),
    "ids_feats_genres_1l": ("1 layer, track IDs, all features, title genres", {
        "num_layers": 1, "model_options": {**LINEAR, "id_embeddings": ALL_IDS,
                                           "feature_types": ALL_FEATURES, "skip_types": []}}),
    "ids_genres_1l": ("1 layer, track IDs, no features, title genres", {
        "num_layers": 1, "model_options": {**LINEAR, "id_embeddings": ALL_IDS,
                                           "feature_types": [], "skip_types": []}}),
    "ids_genres_2l_ln_elu": ("2 layers + LayerNorm/ELU, track IDs, no features, title genres", {
        "model_options": {"layer_norm": True, "activation": True, "id_embeddings": ALL_IDS,
                          "feature_types": [], "skip_types": []}}),
    "ids_1l": ("1 layer, track IDs, no features, no genres", {
        "num_layers": 1, "model_options": {**LINEAR, "id_embeddings": ALL_IDS,
                                           "feature_types": [], "skip_types": ["genre"]}}),
    "ids_2l": ("2 layers, track IDs, no features, no genres", {
        "model_options": {**LINEAR, "id_embeddings": ALL_IDS, "feature_types": [],
                          "skip_types": ["genre"]}}),
    "ids_2l_l2": ("same, L2 1e-4", {
        "l2": 1e-4, "model_options": {**LINEAR, "id_embeddings": ALL_IDS, "feature_types": [],
                                      "skip_types": ["genre"]}}),
    "no_track_ids": ("2 linear layers, no track IDs, track features, no title genres",
                     {}),
    "no_track_ids_dropout03": ("same, dropout 0.3", {"dropout": 0.3}),
    "no_track_ids_title_genres": ("same + title genres", {
        "model_options": {"id_embeddings": NO_TRACK_IDS, "skip_types": []}}),
    "no_track_ids_dim128": ("same, embedding_dim 128", {"embedding_dim": 128}),
    "no_track_ids_all_features": ("same + playlist and artist count features", {
        "model_options": {"feature_types": ALL_FEATURES}}),
    "no_track_ids_negpop05": ("same, half the negatives popularity-drawn (the defaults)", {
        "neg_popularity": 0.5}),
    "no_track_ids_negpop05_dropout03": ("same, half popularity negatives, dropout 0.3", {
        "neg_popularity": 0.5, "dropout": 0.3}),
    "no_track_ids_neg8": ("same (uniform negatives), 8 negatives per positive", {"num_neg": 8}),
    "no_track_ids_negpop025": ("same, a quarter of the negatives popularity-drawn", {
        "neg_popularity": 0.25}),
    "no_track_ids_negpop075": ("same, three quarters popularity-drawn", {
        "neg_popularity": 0.75}),
    "negpop05_lr0005": ("defaults, lr 0.005", {"neg_popularity": 0.5, "lr": 0.005}),
    "negpop05_dim128": ("defaults, embedding_dim 128", {"neg_popularity": 0.5,
                                                         "embedding_dim": 128}),
    "negpop05_fanouts20_10": ("defaults, fanouts 20,10", {"neg_popularity": 0.5,
                                                          "fanouts": [20, 10]}),
    "negpop05_degree_norm": ("defaults, degree_norm", {"neg_popularity": 0.5,
                                                       "model_options": {"degree_norm": True}}),
    "no_track_ids_recency": ("same (uniform negatives), recency edge features", {
        "recency": True}),
    "no_track_ids_negpop05_recency": ("same, half popularity negatives, recency edge features", {
        "neg_popularity": 0.5, "recency": True}),
}
# Rows without their own neg_popularity use uniform negatives, as when they were measured, and
# rows measured before the artist affinity had neither it nor whole owner rows.
for _label, _over in ROWS.values():
    _over.setdefault("neg_popularity", 0.0)
    _over.setdefault("owner_rows", False)
    _over.setdefault("id_init", "normal")
    if _over.get("model", "playlist") == "playlist":
        _over["model_options"] = {"affinity_types": [], "message_init": "glorot",
                                  **_over.get("model_options", {})}


def _row(label: str, tau: float = 0.0, init: float = 2.0, affinity: bool = True,
         owner_rows: bool = True, options: dict | None = None, **over) -> tuple[str, dict]:
    """A row of this round (artist affinity; half the negatives popularity-drawn), every option
    that this round introduced spelled out."""
    opts = {"affinity_types": ["artist"] if affinity else [], "affinity_init": init,
            "affinity_tau": tau, "message_init": "glorot", **(options or {})}
    return label, {"neg_popularity": 0.5, "owner_rows": owner_rows, "id_init": "normal",
                   **over, "model_options": opts}


ROWS.update({
    "negpop05_owner_rows": _row("defaults before the affinity, whole owner rows at hop 1",
                                affinity=False),
    "artist_affinity": _row("+ artist affinity starting at 0.5, whole owner rows", init=0.5),
    "artist_affinity_init2": _row("+ artist affinity starting at 2.0"),
    "artist_affinity_init2_dropout03": _row("same, dropout 0.3", dropout=0.3),
    "artist_affinity_init2_l2_1e-4": _row("same, L2 1e-4", l2=1e-4),
    "artist_affinity_init2_sampled_rows": _row("same, owner rows sampled (fanout 10)",
                                               owner_rows=False),
    "artist_recency": _row("+ recency count (tau 10), both weights starting at 2.0", tau=10.0),
    "artist_recency_dropout03": _row("same, dropout 0.3", tau=10.0, dropout=0.3),
    "artist_recency_lr0005": _row("same, lr 0.005", tau=10.0, lr=0.005),
    "artist_recency_no_playlist_ids": _row(
        "same, no playlist ID embedding (playlist count feature)", tau=10.0,
        options={"id_embeddings": ["artist", "genre"], "feature_types": ["playlist", "track"]}),
    "artist_recency_tau25": _row("same, tau 25", tau=25.0),
    "artist_recency_tau4": _row("same, tau 4", tau=4.0),
    "artist_recency_tau2": _row("same, tau 2 (**defaults**)", tau=2.0),
    "artist_recency_tau1": _row("same, tau 1", tau=1.0),
    "artist_recency_sampled_rows": _row("same, owner rows sampled (fanout 10)", tau=10.0,
                                        owner_rows=False),
})
ALL_TYPES = {"id_embeddings": ALL_IDS}
ROWS.update({  # the SVD round: tau 2 as in the defaults row above
    "track_ids_normal": _row("track ID tables, random start", tau=2.0, options=ALL_TYPES),
    "track_ids_svd": _row("track ID tables, SVD start (**defaults**)", tau=2.0, id_init="svd",
                          options=ALL_TYPES),
    "track_ids_svd_no_artist": _row("same, trained without the artist term", tau=2.0,
                                    id_init="svd", affinity=False, options=ALL_TYPES),
})
ROWS.update({  # the loss round: the SVD round's defaults with each loss spelled out
    "svd_bpr": _row("track ID tables, SVD start, BPR", tau=2.0, id_init="svd", loss="bpr",
                    options=ALL_TYPES),
    "svd_softmax": _row("same, sampled softmax with in-batch negatives", tau=2.0, id_init="svd",
                        loss="softmax", options=ALL_TYPES),
    "svd_softmax_logq": _row("same, logQ correction of the in-batch negatives", tau=2.0,
                             id_init="svd", loss="softmax", logq=True, options=ALL_TYPES),
    "svd_softmax_logq_l2_1e-4": _row("same, L2 1e-4", tau=2.0, id_init="svd", loss="softmax",
                                     logq=True, l2=1e-4, options=ALL_TYPES),
    "svd_bpr_dim128": _row("BPR, embedding_dim 128", tau=2.0, id_init="svd", loss="bpr",
                           embedding_dim=128, options=ALL_TYPES),
    "svd_bpr_l2_1e-4": _row("BPR, L2 1e-4", tau=2.0, id_init="svd", loss="bpr", l2=1e-4,
                            options=ALL_TYPES),
    "svd_bpr_no_playlist_ids": _row(
        "BPR, no playlist ID table (a playlist is its count feature and its tracks' messages)",
        tau=2.0, id_init="svd", loss="bpr",
        options={"id_embeddings": ["track", "artist", "genre"],
                 "feature_types": ["playlist", "track"]}),
    "svd_bpr_no_artist_lr2e-3": _row("BPR, trained without the artist term, lr 0.002", tau=2.0,
                                     id_init="svd", loss="bpr", affinity=False, lr=0.002,
                                     options=ALL_TYPES),
    "svd_bpr_lr2e-3": _row("BPR, lr 0.002", tau=2.0, id_init="svd", loss="bpr", lr=0.002,
                           options=ALL_TYPES),
    "svd_zero_msgs": _row("BPR, layers start as the identity (message_init zeros)", tau=2.0,
                          id_init="svd", loss="bpr",
                          options={**ALL_TYPES, "message_init": "zeros"}),
    "svd_zero_msgs_no_artist": _row("same, trained without the artist term", tau=2.0,
                                    id_init="svd", loss="bpr", affinity=False,
                                    options={**ALL_TYPES, "message_init": "zeros"}),
    "svd_zero_msgs_no_artist_uniform": _row("same, uniform negatives", tau=2.0, id_init="svd",
                                            loss="bpr", affinity=False, neg_popularity=0.0,
                                            options={**ALL_TYPES, "message_init": "zeros"}),
    "svd_zero_msgs_no_artist_lr1e-3": _row("same (half popularity negatives), lr 0.001", tau=2.0,
                                           id_init="svd", loss="bpr", affinity=False, lr=0.001,
                                           options={**ALL_TYPES, "message_init": "zeros"}),
    "svd_zero_msgs_id_lr1e-3": _row("new defaults, ID tables at lr 0.001 (id_lr)", tau=2.0,
                                    id_init="svd", loss="bpr", id_lr=0.001,
                                    options={**ALL_TYPES, "message_init": "zeros"}),
    "svd_zero_msgs_id_lr1e-4": _row("new defaults, ID tables at lr 0.0001", tau=2.0,
                                    id_init="svd", loss="bpr", id_lr=1e-4,
                                    options={**ALL_TYPES, "message_init": "zeros"}),
    "svd_zero_msgs_no_artist_id_lr1e-3": _row("same, trained without the artist term",
                                              tau=2.0, id_init="svd", loss="bpr",
                                              affinity=False, id_lr=0.001,
                                              options={**ALL_TYPES, "message_init": "zeros"}),
    "svd_zero_msgs_no_artist_id_lr1e-4": _row("same, ID tables at lr 0.0001", tau=2.0,
                                              id_init="svd", loss="bpr", affinity=False,
                                              id_lr=1e-4,
                                              options={**ALL_TYPES, "message_init": "zeros"}),
    "svd_zero_msgs_dot_loss1": _row("new defaults, + the same loss on the dot product alone",
                                    tau=2.0, id_init="svd", loss="bpr", dot_loss=1.0,
                                    options={**ALL_TYPES, "message_init": "zeros"}),
    "svd_zero_msgs_dot_loss03": _row("same, weight 0.3", tau=2.0, id_init="svd", loss="bpr",
                                     dot_loss=0.3, options={**ALL_TYPES, "message_init": "zeros"}),
    "svd_zero_msgs_no_artist_lr1e-3_id_lr1e-4": _row(
        "same, lr 0.001, ID tables at 0.0001", tau=2.0, id_init="svd", loss="bpr",
        affinity=False, lr=0.001, id_lr=1e-4, options={**ALL_TYPES, "message_init": "zeros"}),
    "svd_zero_msgs_no_artist_no_track_features": _row(
        "trained without the artist term, tracks without feature inputs", tau=2.0,
        id_init="svd", loss="bpr", affinity=False,
        options={**ALL_TYPES, "feature_types": [], "message_init": "zeros"}),
    "svd_zero_msgs_no_artist_negpop1": _row(
        "trained without the artist term, every negative popularity-drawn", tau=2.0,
        id_init="svd", loss="bpr", affinity=False, neg_popularity=1.0,
        options={**ALL_TYPES, "message_init": "zeros"}),
    "svd_zero_msgs_no_track_features": _row(
        "new defaults, tracks without feature inputs", tau=2.0, id_init="svd", loss="bpr",
        options={**ALL_TYPES, "feature_types": [], "message_init": "zeros"}),
    "svd_zero_msgs_no_track_features_dot_loss1": _row(
        "same, + the same loss on the dot product alone", tau=2.0, id_init="svd", loss="bpr",
        dot_loss=1.0, options={**ALL_TYPES, "feature_types": [], "message_init": "zeros"}),
    "svd_zero_msgs_no_artist_no_track_features_id_lr1e-3": _row(
        "trained without the artist term, tracks without feature inputs, ID tables at 0.001",
        tau=2.0, id_init="svd", loss="bpr", affinity=False, id_lr=1e-3,
        options={**ALL_TYPES, "feature_types": [], "message_init": "zeros"}),
    "svd_softmax_no_artist": _row("same, trained without the artist term", tau=2.0,
                                  id_init="svd", loss="softmax", affinity=False,
                                  options=ALL_TYPES),
})

_SVD = {**ALL_TYPES, "message_init": "zeros"}
ROWS.update({  # issue #15: full mode's batch and fanouts, checked at a size that trains here
    "full_b64_f10_5": _row("full mode's step before #15: batch 64, fanouts 10,5", tau=2.0,
                           id_init="svd", loss="bpr", batch_size=64, fanouts=[10, 5],
                           options=_SVD),
    "full_b64_f10_3": _row("batch 64, fanouts 10,3", tau=2.0, id_init="svd", loss="bpr",
                           batch_size=64, fanouts=[10, 3], options=_SVD),
    "full_b256_f10_3": _row("batch 256, fanouts 10,3", tau=2.0, id_init="svd", loss="bpr",
                            batch_size=256, fanouts=[10, 3], options=_SVD),
    # round 3: track ID rows only for tracks with >= 2 fit edges (TrainConfig.id_min_edges)
    "full_b256_f10_3_idmin2": _row("batch 256, fanouts 10,3, track IDs for >= 2 fit edges",
                                   tau=2.0, id_init="svd", loss="bpr", batch_size=256,
                                   fanouts=[10, 3], id_min_edges=2, options=_SVD),
})
for _name in ("full_b64_f10_5", "full_b64_f10_3", "full_b256_f10_3"):  # measured with a row each
    ROWS[_name][1].setdefault("id_min_edges", 1)

ROWS.update({  # issue #10: a wider dot product (PureSVD rank 256 is above item-kNN at 2,697)
    "svd_zero_msgs_dim256": _row("new defaults, D = 256 (SVD start of rank 256)", tau=2.0,
                                 id_init="svd", loss="bpr", embedding_dim=256, options=_SVD),
    "svd_zero_msgs_dim256_no_track_features_dot_loss1": _row(
        "D = 256, tracks without feature inputs, + the loss on the dot product alone", tau=2.0,
        id_init="svd", loss="bpr", embedding_dim=256, dot_loss=1.0,
        options={**_SVD, "feature_types": []}),
    # at lr 0.01 the row above diverged (train loss 0.42 -> 71 by epoch 2, seed 0, 2,697)
    "svd_zero_msgs_dim256_no_track_features_dot_loss1_lr2e-3": _row(
        "same, lr 0.002", tau=2.0, id_init="svd", loss="bpr", embedding_dim=256, dot_loss=1.0,
        lr=0.002, options={**_SVD, "feature_types": []}),
})
ROWS.update({  # issue #10: an exact item-kNN term beside the dot product and the artist term
    "svd_zero_msgs_knn1": _row("+ item-kNN term, kappa from 1 (the defaults since)", tau=2.0,
                               id_init="svd", loss="bpr", knn_init=1.0, options=_SVD),
    "svd_zero_msgs_knn1_dot_loss1": _row(
        "+ item-kNN term, + the loss on the dot product alone", tau=2.0, id_init="svd",
        loss="bpr", knn_init=1.0, dot_loss=1.0, options=_SVD),
    "svd_zero_msgs_no_playlist_ids": _row(
        "defaults, no playlist ID table (a playlist is its count feature and its tracks' "
        "messages)", tau=2.0, id_init="svd", loss="bpr",
        options={**_SVD, "id_embeddings": ["track", "artist", "genre"],
                 "feature_types": ["playlist", "track"]}),
    "svd_zero_msgs_no_artist_knn1": _row("same, without the artist term", tau=2.0,
                                         affinity=False, id_init="svd", loss="bpr",
                                         knn_init=1.0, options=_SVD),
})
ROWS.update({  # issue #10: the item-kNN term's exponents (engine.graph.cooccur; cosine 0.5, 0)
    "svd_zero_msgs_knn1_pop03_len05": _row(
        "+ item-kNN term with a popular candidate penalised less (pop_exp 0.3) and long "
        "playlists counted less (len_exp 0.5)", tau=2.0, id_init="svd", loss="bpr",
        knn_init=1.0, knn_pop_exp=0.3, knn_len_exp=0.5, options=_SVD),
    "svd_zero_msgs_knn1_pop03_len05_dot_loss1": _row(
        "same, + the loss on the dot product alone", tau=2.0, id_init="svd", loss="bpr",
        knn_init=1.0, knn_pop_exp=0.3, knn_len_exp=0.5, dot_loss=1.0, options=_SVD),
})


# what a row leaves out trains as when the rows were written: no item-kNN term, and the term's
# cosine when a row adds it without its exponents
PINNED = {"knn_init": 0.0, "knn_pop_exp": 0.5, "knn_len_exp": 0.0}


def part_vals(cfg: dict) -> dict[str, float]:
    """Validation Recall@10 of each part of the best weights' score alone ("gat": the dot
    product; "knn": the item-kNN term, where the model has one), on the fit graph as the run
    validated them; empty for a model whose score is the dot product alone."""
    tc = TrainConfig.from_dict(cfg)
    data = RunData.load(tc)
    graph = data.graph("fit")
    model = make_model(tc, graph)
    model.load_state_dict(load_state(Path(cfg["output"]) / "best_model.pt"))
    model.eval()
    parts = part_score_fns(model, graph)
    if len(parts) == 1:
        return {}
    with torch.no_grad():
        return {k: validation(parts[k], data.split)["recall@10"] for k in ("gat", "knn")
                if k in parts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    quick_data_args(p, "ablation")
    p.add_argument("--only", nargs="*", choices=sorted(ROWS), default=list(ROWS))
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    args = p.parse_args()
    out, mode = Path(args.output), MODES["quick"]
    dataset = quick_dataset(Path(args.data), out, args.max_playlists)
    print("| run | seed | best val R@10 | test R@10 | test NDCG@10 | item-kNN R@10 / NDCG@10 "
          "| train s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, seed in [(n, sd) for n in args.only for sd in args.seeds]:
        label, over = ROWS[name]
        cfg = {"dataset": str(dataset), "output": str(out / f"{name}_seed{seed}"),
               "epochs": mode["epochs"], "batch_size": mode["batch_size"], "progress": False,
               "num_threads": 1, "seed": seed, **PINNED, **over}
        t0 = time.perf_counter()
        r = train_loop_per_worker(cfg)
        t, knn = r["test"], r["baselines"]["item_knn"]
        print(f"| {label} | {seed} | {r['best_val_recall@10']:.4f} | {t['recall@10']:.4f} | "
              f"{t['ndcg@10']:.4f} | {knn['recall@10']:.4f} / {knn['ndcg@10']:.4f} | "
              f"{r['train_seconds']:.0f} |", flush=True)
        curve = " ".join(f"{h['val_recall@10']:.4f}" for h in r["history"])
        print(f"    validation Recall@10 per epoch: {curve}", flush=True)
        vals = part_vals(cfg)
        for k, name in (("gat", "GAT dot product"), ("knn", "item-kNN term")):
            if k in vals:
                print(f"    its {name} alone, validation Recall@10: {vals[k]:.4f}", flush=True)
        (Path(cfg["output"]) / "row.json").write_text(json.dumps(
            {"label": label, "options": over, "wall_s": time.perf_counter() - t0,
             "val_history": [h["val_recall@10"] for h in r["history"]],
             "val_dot_alone": vals.get("gat"), "val_knn_alone": vals.get("knn")}) + "\n")


if __name__ == "__main__":
    main()

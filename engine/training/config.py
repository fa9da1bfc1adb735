"""Run configuration: the modes of ``jobs.train_kaggle`` and every hyper-parameter of the loop.

``batch_size`` counts *owners* (playlists or users) per step; each owner contributes
``pos_per_owner`` positive tracks and each positive ``num_neg`` negatives, so one step trains
``batch_size * pos_per_owner`` BPR triples, each with ``num_neg`` negatives.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from torch import nn

from engine.graph.types import GraphData
from engine.models import build_model

MODES: dict[str, dict] = {
    # playlists kept, epochs, owners per batch (as in the seed project)
    "mini": {"max_playlists": 500, "epochs": 3, "batch_size": 256},
    "quick": {"max_playlists": 1000, "epochs": 5, "batch_size": 128},
    "balanced": {"max_playlists": 5000, "epochs": 8, "batch_size": 96},
    "full": {"max_playlists": 50000, "epochs": 20, "batch_size": 64},
}


@dataclass
class TrainConfig:
    dataset: str = ""  # prepared dataset folder (shared storage), see engine.data.canonical
    genres_csv: str = ""  # optional artist_name,genres CSV replacing title-derived genres
    output: str = "runs/run"  # metrics.json, checkpoints, TensorBoard events land here
    model: str = "playlist"  # basic | enhanced | playlist
    epochs: int = 5
    # optimiser steps per epoch and rank; 0: one pass over the training edges (steps_per_epoch)
    steps_per_epoch: int = 0
    lr: float = 0.01
    batch_size: int = 128
    pos_per_owner: int = 8
    num_neg: int = 4
    # uniform negatives come from one shared pool of this many items per batch (0: the catalogue)
    neg_pool: int = 1024
    # share of each positive's negatives drawn in proportion to item degree (hard negatives)
    neg_popularity: float = 0.5
    recency: bool = False  # playlist edges carry recency features (engine.graph.build)
    embedding_dim: int = 64
    heads: int = 2
    num_layers: int = 2
    dropout: float = 0.1
    genre_weight: float = 0.0
    fanouts: list[int] = field(default_factory=lambda: [10, 5])
    # models with an affinity term: batches add their seed owners' whole item rows for the term's
    # counts (owner_row_links; not read by the layers); False: counts from the sampled rows
    owner_rows: bool = True
    model_options: dict = field(default_factory=dict)  # extra keyword arguments of the model
    l2: float = 1e-5  # L2 penalty on the batch's score vectors (BPR regulariser)
    holdout: int = 5
    val_ratio: float = 0.15
    test_ratio: float = 0.15
    max_val_owners: int = 1000
    patience: int = 3  # epochs without val Recall@10 gain before early stopping (0 = never)
    lr_factor: float = 0.5
    lr_patience: int = 1
    min_lr: float = 1e-5
    fixed_lr: bool = False  # the "simple" trainer: no scheduler, no early stopping
    sparse_embeddings: bool = True
    seed: int = 0
    eval_batch_size: int = 1024
    num_threads: int = 0  # torch intra-op threads per worker (0 = leave torch's default)
    fail_at_epoch: int = -1  # fault-injection for tests: rank 1 (or 0) dies once at this epoch
    progress: bool = True
    final_test: bool = True  # evaluate the test split at the end (hyper-parameter search: False)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def hparams(self) -> dict:
        """The hyper-parameters worth comparing across runs (TensorBoard HParams)."""
        keys = ("model", "lr", "batch_size", "pos_per_owner", "num_neg", "embedding_dim", "heads",
                "num_layers", "dropout", "genre_weight", "l2", "neg_popularity", "owner_rows",
                "seed")
        d = {k: getattr(self, k) for k in keys}
        d["fanouts"] = ",".join(map(str, self.fanouts))
        return d


def model_options(cfg: TrainConfig, graph: GraphData) -> dict:
    """The model's keyword arguments for ``graph``: the config's hyper-parameters and
    ``model_options``, plus one data-dependent default.

    PlaylistGAT ignores *title-derived* genre edges unless ``model_options`` sets ``skip_types``
    itself. Those edges give a track the title genres of the training playlists that contain
    it, so during BPR a positive (playlist p, track t) keeps the path p -> genre -> t made from p's
    own title even after the sampler drops the edge p -> t: the label leaks, and a model trained
    on it leans on genres that held-out tracks do not share. On the MPD slices in quick mode the
    title genres cost a third of validation Recall@10 (docs/results.md). Genres from artist facts
    (``--genres`` CSV, dataset tables) do not depend on the playlists and are used. With
    ``genre_weight > 0`` the genre-affinity path still reads the genre edges, title-derived or
    not: the user asked for it, and validation measures what it costs.
    """
    opts = {"embedding_dim": cfg.embedding_dim, "heads": cfg.heads, "num_layers": cfg.num_layers,
            "dropout": cfg.dropout, "genre_weight": cfg.genre_weight, **cfg.model_options}
    if cfg.model == "playlist" and graph.genre_source == "titles" and "skip_types" not in opts:
        opts["skip_types"] = ["genre"]
    return opts


def make_model(cfg: TrainConfig, graph: GraphData) -> nn.Module:
    """``build_model(cfg.model, graph, **model_options(cfg, graph))``, for training and for
    loading a finished run's weights (the same arguments both times)."""
    return build_model(cfg.model, graph, **model_options(cfg, graph))


def owner_row_links(cfg: TrainConfig, model: nn.Module) -> list[str] | None:
    """``BPRBatches(owner_rows=...)`` for this run: the model's affinity attribute types
    (``model.affinity_types``, PlaylistGAT's artists) with ``cfg.owner_rows``, so that each batch
    holds its seed owners' whole rows and the affinity counts are exact; ``None`` (plain sampled
    batches) for models without an affinity term or with ``owner_rows`` off."""
    links = list(getattr(model, "affinity_types", None) or [])
    return links if cfg.owner_rows and links else None

"""Run configuration: the modes of ``jobs.train_kaggle`` and every hyper-parameter of the loop.

``batch_size`` counts *owners* (playlists or users) per step; each owner contributes
``pos_per_owner`` positive tracks and each positive ``num_neg`` negatives, so one step trains
``batch_size * pos_per_owner`` BPR triples, each with ``num_neg`` negatives.

Validation: each field's type carries its range (``PosInt``, ``Share``, ...) and pydantic (already
installed with ``ray[default]``) checks a whole config against them in one pass,
:meth:`TrainConfig.validate`, reporting every bad or unknown key by name. Flags, ``--config``
files, tune search spaces and saved configs all go through it, so a range is written once, here.
pydantic rather than hand-written checks because it validates the nested, typed models that
issue 13's split of this config into data / sampler / model / optimiser / run sections needs,
with the same error report.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError

from engine.errors import BadInput

if TYPE_CHECKING:  # torch and the models load when a model is made, so --help stays fast
    from torch import nn

    from engine.graph.types import GraphData

MODES: dict[str, dict] = {
    # playlists kept, epochs, owners per batch (as in the seed project)
    "mini": {"max_playlists": 500, "epochs": 3, "batch_size": 256},
    "quick": {"max_playlists": 1000, "epochs": 5, "batch_size": 128},
    "balanced": {"max_playlists": 5000, "epochs": 8, "batch_size": 96},
    "full": {"max_playlists": 50000, "epochs": 20, "batch_size": 64},
}


# Field types carry their ranges: one pydantic validation pass (``TrainConfig.validate``) checks
# every way a configuration enters (flags, --config files, search spaces, a saved run's config).
# Strict: a JSON "3" is not an int and "yes" not a bool; an int is accepted where a float is asked.
_S = Strict()
PosInt = Annotated[int, _S, Field(ge=1)]
NonNegInt = Annotated[int, _S, Field(ge=0)]
PosFloat = Annotated[float, _S, Field(gt=0)]
NonNegFloat = Annotated[float, _S, Field(ge=0)]
Share = Annotated[float, _S, Field(ge=0, le=1)]
Ratio = Annotated[float, _S, Field(gt=0, lt=0.5)]
Bool = Annotated[bool, _S]
Str = Annotated[str, _S]

# keys of a saved config that may differ on resume: where files go and how fast it runs, not
# what is trained (a run folder can be moved; threads and eval batches do not change results)
RUNTIME_KEYS = frozenset({"output", "dataset", "graph_store", "progress", "num_threads",
                          "eval_batch_size"})
RETIRED_KEYS = frozenset({"fail_at_epoch"})  # in configs saved before it left the loop
# keys added after runs were saved, with the value every run saved before them trained with
LEGACY_VALUES = {"id_init": "normal", "loss": "bpr", "logq": False}


@dataclass
class TrainConfig:
    __pydantic_config__ = ConfigDict(extra="forbid")  # an unknown key is an error, by name

    dataset: Str = ""  # prepared dataset folder (shared storage), see engine.data.canonical
    # the split and graphs of ``dataset`` built once and mapped by every worker of a node
    # (engine.training.run_data, RunData.save_store); "" = each worker builds its own
    graph_store: Str = ""
    genres_csv: Str = ""  # optional artist_name,genres CSV replacing title-derived genres
    output: Str = "runs/run"  # metrics.json, checkpoints, TensorBoard events land here
    model: Literal["basic", "enhanced", "playlist"] = "playlist"
    epochs: PosInt = 5
    # optimiser steps per epoch and rank; 0: one pass over the training edges (steps_per_epoch)
    steps_per_epoch: NonNegInt = 0
    lr: PosFloat = 0.01
    batch_size: PosInt = 128
    pos_per_owner: PosInt = 8
    num_neg: PosInt = 4
    # uniform negatives come from one shared pool of this many items per batch (0: the catalogue)
    neg_pool: NonNegInt = 1024
    # share of each positive's negatives drawn in proportion to item degree (hard negatives)
    neg_popularity: Share = 0.5
    recency: Bool = False  # playlist edges carry recency features (engine.graph.build)
    embedding_dim: PosInt = 64
    heads: PosInt = 2
    num_layers: PosInt = 2
    dropout: Annotated[float, _S, Field(ge=0, lt=1)] = 0.1
    genre_weight: Share = 0.0
    fanouts: Annotated[list[PosInt], Field(min_length=1)] = field(
        default_factory=lambda: [10, 5])
    # models with an affinity term: batches add their seed owners' whole item rows for the term's
    # counts (owner_row_links; not read by the layers); False: counts from the sampled rows
    owner_rows: Bool = True
    model_options: dict = field(default_factory=dict)  # extra keyword arguments of the model
    # how the owner and item ID embeddings start: "svd", a truncated SVD of the training
    # playlist x track matrix (engine.models.init; co-occurrence from step 0), or "normal"
    id_init: Literal["normal", "svd"] = "svd"
    l2: NonNegFloat = 1e-5  # L2 penalty on the batch's score vectors (BPR regulariser)
    # ranking loss (engine.training.losses): "bpr", or "softmax" over each positive's negatives
    # and the batch's other positives (in-batch negatives)
    loss: Literal["bpr", "softmax"] = "bpr"
    # softmax: subtract log(item's share of training edges) from in-batch negatives' logits
    logq: Bool = False
    holdout: PosInt = 5
    val_ratio: Ratio = 0.15
    test_ratio: Ratio = 0.15
    max_val_owners: PosInt = 1000
    patience: NonNegInt = 3  # epochs without val Recall@10 gain before early stopping (0 = never)
    lr_factor: Annotated[float, _S, Field(gt=0, lt=1)] = 0.5
    lr_patience: NonNegInt = 1
    min_lr: NonNegFloat = 1e-5
    fixed_lr: Bool = False  # the "simple" trainer: no scheduler, no early stopping
    sparse_embeddings: Bool = True
    seed: NonNegInt = 0
    eval_batch_size: PosInt = 1024
    num_threads: NonNegInt = 0  # torch intra-op threads per worker (0 = leave torch's default)
    progress: Bool = True
    final_test: Bool = True  # evaluate the test split at the end (hyper-parameter search: False)

    @classmethod
    def validate(cls, d: dict, where: str = "config",
                 labels: dict[str, str] | None = None) -> TrainConfig:
        """``d`` as a TrainConfig, types and ranges checked; BadInput (exit 2) names every bad key
        and why, prefixed by ``where`` (the file or the options it came from). ``labels`` shows
        a key as the user typed it (``{"lr": "--lr"}``)."""
        try:
            return _ADAPTER.validate_python(d)
        except ValidationError as exc:
            errors = "; ".join(_describe(e, labels or {}) for e in exc.errors())
            raise BadInput(f"{where}: {errors}") from None

    @classmethod
    def from_saved(cls, d: dict) -> TrainConfig:
        """The config a finished run or checkpoint saved: keys it predates take the value it
        was trained with (:data:`LEGACY_VALUES`), not today's default."""
        return cls.from_dict(with_legacy_values(d))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config saved by this or an earlier version (retired keys dropped), validated."""
        return cls.validate({k: v for k, v in d.items() if k not in RETIRED_KEYS})

    def to_dict(self) -> dict:
        return asdict(self)

    def hparams(self) -> dict:
        """The hyper-parameters worth comparing across runs (TensorBoard HParams)."""
        keys = ("model", "lr", "batch_size", "pos_per_owner", "num_neg", "embedding_dim", "heads",
                "num_layers", "dropout", "genre_weight", "l2", "neg_popularity", "owner_rows",
                "id_init", "loss", "seed")
        d = {k: getattr(self, k) for k in keys}
        d["fanouts"] = ",".join(map(str, self.fanouts))
        return d


_ADAPTER = TypeAdapter(TrainConfig)


def _describe(err: dict, labels: dict[str, str]) -> str:
    key = ".".join(str(p) for p in err["loc"])
    key = labels.get(key, key)
    if err["type"] == "unexpected_keyword_argument":
        return f"unknown option '{key}'"
    return f"{key}: {err['msg'].lower()} (got {err['input']!r})"


def with_legacy_values(saved: dict) -> dict:
    """``saved`` with the :data:`LEGACY_VALUES` of the keys it predates."""
    return {**{k: v for k, v in LEGACY_VALUES.items() if k not in saved}, **saved}


def config_diff(saved: dict, new: dict) -> dict[str, tuple]:
    """Keys whose value differs between a saved run's config and a new one, ``{key: (saved,
    new)}``, leaving out :data:`RUNTIME_KEYS` and :data:`RETIRED_KEYS`; keys the saved config
    predates count with their :data:`LEGACY_VALUES`."""
    saved = with_legacy_values(saved)
    skip = RUNTIME_KEYS | RETIRED_KEYS
    keys = (set(saved) | set(new)) - skip
    return {k: (saved.get(k), new.get(k)) for k in sorted(keys) if saved.get(k) != new.get(k)}


def describe_diff(diff: dict[str, tuple]) -> str:
    return ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())


def model_options(cfg: TrainConfig, graph: GraphData) -> dict:
    """The model's keyword arguments for ``graph``: the config's hyper-parameters and
    ``model_options``, plus two derived defaults.

    With ``id_init = "svd"`` PlaylistGAT gives every node type an ID embedding, tracks included
    (unless ``model_options`` sets ``id_embeddings``): the SVD start fills the track table with
    the co-occurrence structure of the training matrix, which a random start lacks (with a random
    start, track IDs overfit the few edges most tracks have; docs/results.md measures both).
    Its layers then start as the identity (``message_init = "zeros"`` unless ``model_options``
    sets it), so the score at step 0 is the SVD's own: PyG's random message projections would
    scramble it before training starts (validation Recall@10 of the untrained model 0.0263
    against 0.0316 on the quick split; docs/results.md).

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
    if cfg.model == "playlist" and cfg.id_init == "svd" and "id_embeddings" not in opts:
        opts["id_embeddings"] = list(graph.num_nodes)  # the types it reads get tables
    if cfg.model == "playlist" and cfg.id_init == "svd" and "message_init" not in opts:
        opts["message_init"] = "zeros"  # the layers start as the identity: PureSVD at step 0
    return opts


def make_model(cfg: TrainConfig, graph: GraphData) -> nn.Module:
    """``build_model(cfg.model, graph, **model_options(cfg, graph))``, for training and for
    loading a finished run's weights (the same arguments both times)."""
    from engine.models import build_model

    return build_model(cfg.model, graph, **model_options(cfg, graph))


def owner_row_links(cfg: TrainConfig, model: nn.Module) -> list[str] | None:
    """``BPRBatches(owner_rows=...)`` for this run: the model's affinity attribute types
    (``model.affinity_types``, PlaylistGAT's artists) with ``cfg.owner_rows``, so that each batch
    holds its seed owners' whole rows and the affinity counts are exact; ``None`` (plain sampled
    batches) for models without an affinity term or with ``owner_rows`` off."""
    links = list(getattr(model, "affinity_types", None) or [])
    return links if cfg.owner_rows and links else None

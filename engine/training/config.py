"""Run configuration: the modes of ``jobs.train_kaggle`` and every hyper-parameter of the loop.

``batch_size`` counts *owners* (playlists or users) per step; each owner contributes
``pos_per_owner`` positive tracks and each positive ``num_neg`` negatives, so one step trains
``batch_size * pos_per_owner`` BPR triples, each with ``num_neg`` negatives.

One home per hyper-parameter: each :class:`TrainConfig` field is written once, by :func:`opt`,
with its type (which carries its range), its default, its section and its one-line description.
The rest is derived from it: the training CLIs' flags (``jobs.flags``: type, choices, help text,
the default shown, grouped by section), TensorBoard HParams (fields marked ``hparam``), and the
checks of ``--config`` files, tune search spaces and saved configs.

Validation: each field's type carries its range (``PosInt``, ``Share``, ...) and pydantic (already
installed with ``ray[default]``) checks a whole config against them in one pass,
:meth:`TrainConfig.validate`, reporting every bad or unknown key by name. Flags, ``--config``
files, tune search spaces and saved configs all go through it, so a range is written once, here.
pydantic rather than hand-written checks: one library reports the bad key and why, for every
way a configuration enters.

Flat, with sections as metadata (not nested data / sampler / model / optimiser / run models):
the sections group the fields here and in ``--help``, but a config is stored and read flat.
Every run saved so far (checkpoints, ``metrics.json``, tune's ``best_config.json``) is a flat
dict that must keep loading and comparing key by key (:meth:`from_saved`, :func:`config_diff`),
the search space names flat keys, and the code reads ``cfg.lr``; nesting would add a
translation layer at each of those edges and change no value. Each default and range is still
written only here.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
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
    # full: larger batches and a shorter second hop than the other modes (issue #15: at 50,000
    # playlists a step's 2-hop neighbourhood does not saturate; docs/benchmarks.md)
    "full": {"max_playlists": 50000, "epochs": 20, "batch_size": 256, "fanouts": [10, 3],
             "id_min_edges": 2},
}

# Each pipeline's model where it differs from TrainConfig's defaults (the one place for it):
# "kaggle" (playlists: jobs.train_kaggle, tune.search --pipeline kaggle) trains the defaults,
# PlaylistGAT; "synthetic" (listening sessions: jobs.train_synthetic, tune.search --pipeline
# synthetic) the enhanced GAT, narrower. A job adds its own run settings (epochs, ...) on top.
PIPELINES: dict[str, dict] = {
    "kaggle": {},
    "synthetic": {"model": "enhanced", "embedding_dim": 32, "heads": 4},
}


def mode_config(mode: str) -> dict:
    """The TrainConfig fields that ``mode`` sets (each key of ``MODES[mode]`` but
    ``max_playlists``, which picks the data)."""
    return {k: v for k, v in MODES[mode].items() if k != "max_playlists"}


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
LEGACY_VALUES = {"id_init": "normal", "loss": "bpr", "logq": False, "dot_loss": 0.0, "id_lr": 0.0,
                 "id_min_edges": 1, "knn_init": 0.0, "knn_pop_exp": 0.5, "knn_len_exp": 0.0}

# field sections (``opt(section=...)``) and their titles: the training CLIs group their flags
# under these titles in --help, in this order
SECTIONS = {
    "data": "data and split",
    "sampler": "sampler: what one training step draws",
    "model": "model",
    "optimiser": "optimiser, learning-rate schedule and early stopping",
    "run": "run",
}


def opt(default=MISSING, section: str = "", doc: str = "", *, hparam: bool = False,
        factory=MISSING):
    """A TrainConfig field: its default (or ``factory``), its :data:`SECTIONS` key, its one-line
    description (the training CLIs' help text) and whether TensorBoard HParams compares runs on
    it (:meth:`TrainConfig.hparams`)."""
    assert section in SECTIONS and doc, "every field has a section and a description"
    return field(default=default, default_factory=factory,
                 metadata={"section": section, "doc": doc, "hparam": hparam})


@dataclass
class TrainConfig:
    __pydantic_config__ = ConfigDict(extra="forbid")  # an unknown key is an error, by name

    # data and split
    dataset: Str = opt("", "data", "prepared dataset folder (shared storage; "
                       "engine.data.canonical)")
    # engine.training.run_data, RunData.save_store
    graph_store: Str = opt("", "data", "the split and graphs of the dataset, built once and "
                           "mapped by every worker of a node (\"\": each worker builds its own)")
    genres_csv: Str = opt("", "data", "optional artist_name,genres CSV replacing genres derived "
                          "from playlist titles")
    recency: Bool = opt(False, "data", "playlist edges carry recency features "
                        "(engine.graph.build)")
    holdout: PosInt = opt(5, "data", "test tracks held out per playlist")
    val_ratio: Ratio = opt(0.15, "data", "share of owners (playlists or users) in the "
                           "validation split")
    test_ratio: Ratio = opt(0.15, "data", "share of owners (playlists or users) in the test "
                            "split")
    max_val_owners: PosInt = opt(1000, "data", "owners in the seeded validation sample scored "
                                 "after each epoch")

    # sampler: what one training step draws
    batch_size: PosInt = opt(128, "sampler", "owners (playlists or users) per step; a step "
                             "trains batch_size x pos_per_owner BPR triples, each with num_neg "
                             "negatives", hparam=True)
    pos_per_owner: PosInt = opt(8, "sampler", "positive items drawn per owner in a step",
                                hparam=True)
    num_neg: PosInt = opt(4, "sampler", "sampled negatives per positive", hparam=True)
    neg_pool: NonNegInt = opt(1024, "sampler", "uniform negatives come from one shared pool of "
                              "this many items per batch (0: the whole catalogue)")
    neg_popularity: Share = opt(0.5, "sampler", "share of each positive's negatives drawn in "
                                "proportion to item degree (hard negatives)", hparam=True)
    fanouts: Annotated[list[PosInt], Field(min_length=1)] = opt(
        section="sampler", doc="neighbours sampled per node, one count per hop",
        hparam=True, factory=lambda: [10, 5])
    # the rows feed owner_row_links and are not read by the layers
    owner_rows: Bool = opt(True, "sampler", "models with an affinity term: batches add their "
                           "seed owners' whole item rows, so the term's counts are exact "
                           "(False: counts from the sampled rows)", hparam=True)

    # model
    model: Literal["basic", "enhanced", "playlist"] = opt(
        "playlist", "model", "the recommender; see the README's Models table", hparam=True)
    embedding_dim: PosInt = opt(64, "model", "width D of the node vectors", hparam=True)
    heads: PosInt = opt(2, "model", "attention heads per GAT conv", hparam=True)
    num_layers: PosInt = opt(2, "model", "GAT layers (message-passing hops)", hparam=True)
    dropout: Annotated[float, _S, Field(ge=0, lt=1)] = opt(
        0.1, "model", "attention and message dropout", hparam=True)
    genre_weight: Share = opt(0.0, "model", "share w of the genre-affinity score: (1 - w) "
                              "collaborative + w genre", hparam=True)
    # engine.models.knn_term; chosen on validation at 1,000 and 2,697 MPD playlists (docs/results.md)
    knn_init: NonNegFloat = opt(
        1.0, "model", "start of the learnt weight of an exact item-kNN term in the score "
        "(PlaylistGAT and the Enhanced GAT): kappa * log(1 + item-kNN score); 0: no such "
        "term", hparam=True)
    # engine.graph.cooccur; (0.5, 0) is the cosine. (0.3, 0.5) ranks 1.2-1.4x better than the
    # cosine on its own but left the full model level on validation at 500, 1,000 and 2,697 MPD
    # playlists (docs/results.md), so the defaults stay the protocol's cosine
    knn_pop_exp: Share = opt(0.5, "model", "item-kNN term: exponent of the candidate's degree "
                             "in the denominator (0.5: cosine; lower favours popular tracks)",
                             hparam=True)
    knn_len_exp: Share = opt(0.0, "model", "item-kNN term: each co-occurring playlist counts "
                             "its length to the power -this (0: cosine, every playlist counts 1)",
                             hparam=True)
    model_options: dict = opt(section="model", doc="further model options by name (playlist: "
                              "the fields of engine.models.PlaylistGATOptions)", factory=dict)
    # svd: engine.models.init; the table holds the co-occurrence structure from step 0
    id_init: Literal["normal", "svd"] = opt(
        "svd", "model", "how the owner and item ID embeddings start: \"svd\", a truncated SVD "
        "of the training owner x item matrix, or \"normal\"", hparam=True)
    # engine.models.id_rows.id_row_map. At the Kaggle file's size 55 % of the tracks have one fit
    # edge: their rows were most of the table, its Adam moments and its gradient sync, and a row
    # fitted to a single edge mostly memorises it (docs/benchmarks.md, round 3)
    id_min_edges: PosInt = opt(
        1, "model", "items (tracks) get an ID embedding row only with at least this many fit "
        "(training) edges; the others are their features plus their neighbours (1: every item; "
        "PlaylistGAT with item IDs)", hparam=True)

    # optimiser, learning-rate schedule and early stopping
    lr: PosFloat = opt(0.01, "optimiser", "Adam learning rate (start value)", hparam=True)
    id_lr: NonNegFloat = opt(0.0, "optimiser", "learning rate of the ID embedding tables "
                             "(0: lr); an SVD start keeps its small singular directions only "
                             "under steps smaller than theirs", hparam=True)
    l2: NonNegFloat = opt(1e-5, "optimiser", "L2 penalty on the batch's score vectors (BPR "
                          "regulariser)", hparam=True)
    # engine.training.losses
    loss: Literal["bpr", "softmax"] = opt(
        "bpr", "optimiser", "ranking loss: \"bpr\", or \"softmax\" over each positive's "
        "negatives and the batch's other positives (in-batch negatives)", hparam=True)
    logq: Bool = opt(False, "optimiser", "softmax: subtract log(item's share of training "
                     "edges) from in-batch negatives' logits")
    dot_loss: NonNegFloat = opt(0.0, "optimiser", "weight of a second loss on the dot product "
                                "alone, without the artist affinity: the learned part must "
                                "rank on its own too", hparam=True)
    sparse_embeddings: Bool = opt(True, "optimiser", "ID embeddings take sparse gradients and "
                                  "SparseAdam (False: dense Adam for every parameter)")
    patience: NonNegInt = opt(3, "optimiser", "epochs without a validation Recall@10 gain "
                              "before early stopping (0 = never)")
    lr_factor: Annotated[float, _S, Field(gt=0, lt=1)] = opt(
        0.5, "optimiser", "learning-rate factor on a validation plateau (ReduceLROnPlateau)")
    lr_patience: NonNegInt = opt(1, "optimiser", "epochs without a validation gain before the "
                                 "learning rate drops")
    min_lr: NonNegFloat = opt(1e-5, "optimiser", "lowest learning rate of the "
                              "ReduceLROnPlateau schedule")
    fixed_lr: Bool = opt(False, "optimiser", "the \"simple\" trainer: no scheduler, no early "
                         "stopping")

    # run
    output: Str = opt("runs/run", "run", "run folder: metrics.json, checkpoints and "
                      "TensorBoard events land here")
    epochs: PosInt = opt(5, "run", "training epochs, each one pass over the training edges "
                         "unless steps_per_epoch is set")
    steps_per_epoch: NonNegInt = opt(0, "run", "optimiser steps per epoch and rank (0: one "
                                     "pass over the training edges)")
    seed: NonNegInt = opt(0, "run", "seed of generated data, the split, the sample and the "
                          "training", hparam=True)
    eval_batch_size: PosInt = opt(1024, "run", "owners scored per batch in validation and "
                                  "test (bounds memory; results do not change)")
    # 0 under Ray Train: engine.training.ray_train.worker_resources picks the count
    num_threads: NonNegInt = opt(0, "run", "torch threads per worker (0: under Ray, the CPUs "
                                 "Ray sees divided among the workers; elsewhere torch's default)")
    progress: Bool = opt(True, "run", "show progress bars")
    final_test: Bool = opt(True, "run", "evaluate the test split at the end (hyper-parameter "
                           "search: False)")

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
        """The hyper-parameters worth comparing across runs (TensorBoard HParams): the fields
        marked ``hparam``; a list (``fanouts``) as its comma-joined values."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["hparam"]}
        return {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in d.items()}


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
    """The model's options for ``graph`` as a flat keyword dict (what :func:`build_model` takes;
    for PlaylistGAT the fields of :class:`~engine.models.PlaylistGATOptions`): the config's
    hyper-parameters and ``model_options``, plus two derived defaults; ``knn_init`` and the
    term's exponents go only to the models that take them (not the basic GAT). (The item
    table's row count under ``id_min_edges`` is :func:`make_model`'s: it needs the row map it
    sizes.)

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
    if "id_rows" in cfg.model_options:  # a row count without its map: tracks would get none
        raise BadInput("model_options: 'id_rows' is derived from id_min_edges and the graph; "
                       "set id_min_edges instead")
    opts = {"embedding_dim": cfg.embedding_dim, "heads": cfg.heads, "num_layers": cfg.num_layers,
            "dropout": cfg.dropout, "genre_weight": cfg.genre_weight, **cfg.model_options}
    from engine.models import model_option_names

    for name in ("knn_init", "knn_pop_exp", "knn_len_exp"):
        if name in model_option_names(cfg.model) and name not in opts:
            opts[name] = getattr(cfg, name)
    if cfg.model == "playlist" and graph.genre_source == "titles" and "skip_types" not in opts:
        opts["skip_types"] = ["genre"]
    if cfg.model == "playlist" and cfg.id_init == "svd" and "id_embeddings" not in opts:
        opts["id_embeddings"] = list(graph.num_nodes)  # the types it reads get tables
    if cfg.model == "playlist" and cfg.id_init == "svd" and "message_init" not in opts:
        opts["message_init"] = "zeros"  # the layers start as the identity: PureSVD at step 0
    return opts


def id_rows_apply(cfg: TrainConfig, graph: GraphData, opts: dict) -> bool:
    """Whether ``id_min_edges`` leaves some items without an ID row: PlaylistGAT whose options
    ``opts`` give the item type an ID table (``id_init = "svd"``, or ``id_embeddings``)."""
    return (cfg.model == "playlist" and cfg.id_min_edges > 1
            and graph.item_type in (opts.get("id_embeddings") or ()))


def make_model(cfg: TrainConfig, graph: GraphData) -> nn.Module:
    """``build_model(cfg.model, graph, **model_options(cfg, graph))``, for training and for
    loading a finished run's weights (the same arguments both times). A ``model_options`` key
    that no model takes is bad input (BadInput, exit 2), named. With ``id_min_edges > 1`` the
    item table has a row only for the items with that many edges in ``graph`` (the fit graph
    when training; a checkpoint brings its own map, :class:`engine.models.id_rows.RowEmbedding`)."""
    from engine.models import UnknownModelOption, build_model

    opts = model_options(cfg, graph)
    row = None
    if id_rows_apply(cfg, graph, opts):
        from engine.models.id_rows import id_row_map

        # the map of this graph (one pass over its edges) sizes the table and fills it; loading
        # a checkpoint replaces it with the one it trained with
        row = id_row_map(graph, cfg.id_min_edges)
        opts["id_rows"] = {graph.item_type: int((row >= 0).sum())}
    try:
        model = build_model(cfg.model, graph, **opts)
    except UnknownModelOption as exc:
        raise BadInput(f"model_options: {exc}") from None
    if row is not None:
        model.emb[graph.item_type].set_rows(row)
    return model


def pair_knn(model: nn.Module, graph: GraphData):
    """``BPRBatches(pair_knn=...)`` for this model: the item-kNN scorer of ``graph`` (the fit
    graph; :class:`engine.graph.cooccur.ItemKNN`) when the model has an item-kNN term, so that
    each batch carries its pairs' values; ``None`` otherwise."""
    if getattr(model, "knn_weight", None) is None:
        return None
    from engine.graph.cooccur import ItemKNN

    return ItemKNN.of_graph(graph, *model.knn_exponents)


def owner_row_links(cfg: TrainConfig, model: nn.Module) -> list[str] | None:
    """``BPRBatches(owner_rows=...)`` for this run: the model's affinity attribute types
    (``model.affinity_types``, PlaylistGAT's artists) with ``cfg.owner_rows``, so that each batch
    holds its seed owners' whole rows and the affinity counts are exact; ``None`` (plain sampled
    batches) for models without an affinity term or with ``owner_rows`` off."""
    links = list(getattr(model, "affinity_types", None) or [])
    return links if cfg.owner_rows and links else None

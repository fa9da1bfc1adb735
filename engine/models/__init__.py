"""GAT recommenders. Each maps a :class:`~engine.graph.types.Subgraph` to one score vector per
local owner node and per local item node; ``score(owner, item)`` is their dot product, plus, for a
model with a ``score_bias`` method (PlaylistGAT's exact artist affinity), that sparse term
(:func:`score_bias`, :func:`score_fn`).

- ``"basic"``: :class:`GATRecommender`, ID embeddings and one bipartite GAT layer;
- ``"enhanced"``: :class:`EnhancedGATRecommender`, two hetero GAT layers mixed with a
  genre-affinity score by ``genre_weight``;
- ``"playlist"``: :class:`PlaylistGAT`, ID embeddings plus content features, ``num_layers`` hetero
  GAT layers, and the artist-affinity term.

Models are built from plain metadata (:func:`graph_meta`), never from tensors, so that they pickle
and build identically on every DDP rank.
"""
from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any

import torch
from torch import Tensor, nn

from engine.graph.types import GraphData
from engine.models.affinity import ScoreBias
from engine.models.gat_basic import GATRecommender
from engine.models.gat_enhanced import EnhancedGATRecommender
from engine.models.playlist_gat import PlaylistGAT, PlaylistGATOptions

MODELS: dict[str, type[nn.Module]] = {
    "basic": GATRecommender,
    "enhanced": EnhancedGATRecommender,
    "playlist": PlaylistGAT,
}

__all__ = ["META_KEYS", "MODELS", "EnhancedGATRecommender", "GATRecommender", "PlaylistGAT",
           "PlaylistGATOptions", "UnknownModelOption", "build_model", "count_parameters",
           "graph_meta", "infer", "known_option_names", "model_option_defaults",
           "model_option_names", "part_score_fns", "rank_scores", "score", "score_bias",
           "score_fn"]
# the constructor arguments every model takes from the graph (graph_meta's keys)
META_KEYS = ("num_nodes", "owner_type", "item_type", "edge_types", "feature_dims",
             "edge_attr_dims")


def graph_meta(graph: GraphData) -> dict[str, Any]:
    """The constructor metadata of a graph as plain Python values (no tensors)."""
    return {
        "num_nodes": {t: int(n) for t, n in graph.num_nodes.items()},
        "owner_type": graph.owner_type,
        "item_type": graph.item_type,
        "edge_types": [tuple(et) for et in graph.edge_types],
        "feature_dims": graph.feature_dims(),
        "edge_attr_dims": {et: int(ea.view(ea.size(0), -1).size(1))
                           for et, ea in graph.edge_attr.items()},
    }


def model_option_names(name: str) -> set[str]:
    """The hyper-parameters model ``name`` takes beyond the graph metadata: the fields of its
    ``Options`` dataclass (PlaylistGAT's :class:`PlaylistGATOptions`), or else its constructor's
    keyword arguments. An unknown name raises."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    cls = MODELS[name]
    options = getattr(cls, "Options", None)
    if options is not None:
        return {f.name for f in fields(options)}
    return set(inspect.signature(cls.__init__).parameters) - {"self", *META_KEYS}


def model_option_defaults(name: str) -> dict[str, Any]:
    """The defaults of model ``name``'s own options (those :func:`model_option_names` lists that
    have one; training hyper-parameters such as ``heads`` have theirs in ``TrainConfig``)."""
    model_option_names(name)  # an unknown name raises
    cls = MODELS[name]
    options = getattr(cls, "Options", None)
    if options is not None:
        return {f.name: f.default for f in fields(options) if f.default is not MISSING}
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if k not in ("self", *META_KEYS) and p.default is not inspect.Parameter.empty}


def known_option_names() -> set[str]:
    """Every option some model takes: :func:`model_option_names` over :data:`MODELS`."""
    return set().union(*(model_option_names(name) for name in MODELS))


class UnknownModelOption(ValueError, TypeError):
    """An option no model takes (a mistyped key), named in the message. A ValueError, and a
    TypeError as an unexpected keyword argument is (what ``strict=True`` raised before)."""


def build_model(name: str, graph_meta_: dict[str, Any] | GraphData, strict: bool = False,
                **hparams: Any) -> nn.Module:
    """``MODELS[name](**meta, **hparams)``, or ``MODELS[name](**meta, options=Options(**hparams))``
    for a model with an ``Options`` dataclass (PlaylistGAT): the keyword dict is the same either
    way, as a saved run's ``model_options`` holds it. ``graph_meta_`` is a :func:`graph_meta`
    dict or a :class:`GraphData` (converted). An unknown name raises.

    Each model declares the options it takes (:func:`model_option_names`: its ``Options`` fields
    or constructor keywords); the training hyper-parameters among them have no default, so
    ``hparams`` must hold them. A key that no model takes (a typo: ``"haeds"``) raises
    :class:`UnknownModelOption` naming it. One training config serves every model, so an option
    of *another* model (``num_layers`` and ``genre_weight`` for ``"basic"``; PlaylistGAT's
    ``affinity_tau`` in a search space run with ``"enhanced"``) is dropped with a warning, or
    raises (TypeError) with ``strict=True``."""
    accepted = model_option_names(name)
    meta = graph_meta(graph_meta_) if isinstance(graph_meta_, GraphData) else dict(graph_meta_)
    cls = MODELS[name]
    unknown = sorted(set(hparams) - known_option_names())
    if unknown:
        raise UnknownModelOption(
            f"model {name!r}: no model takes the option(s) {unknown}; {name!r} takes "
            f"{sorted(accepted)}")
    unused = sorted(set(hparams) - accepted)
    if unused:
        if strict:
            raise TypeError(f"model {name!r} takes no hyper-parameters {unused}")
        warnings.warn(f"model {name!r} ignores hyper-parameters {unused}", stacklevel=2)
    kept = {k: v for k, v in hparams.items() if k in accepted}
    options = getattr(cls, "Options", None)
    if options is not None:
        return cls(**meta, options=options(**kept))
    return cls(**meta, **kept)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars (each shared parameter counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def score(vecs: dict[str, Tensor], owner_idx: Tensor, item_idx: Tensor,
          owner_type: str | None = None, item_type: str | None = None,
          bias: ScoreBias | None = None) -> Tensor:
    """``<vecs[owner][owner_idx], vecs[item][item_idx]>`` row by row, for local indices, plus
    ``bias.pairs(owner_idx, item_idx)`` when the model has a :func:`score_bias`. The types
    default to the first and second key of ``vecs`` (every model returns the owner type first)."""
    if owner_type is None or item_type is None:
        first, second = list(vecs)[:2]
        owner_type, item_type = owner_type or first, item_type or second
    s = (vecs[owner_type][owner_idx] * vecs[item_type][item_idx]).sum(-1)
    return s if bias is None else s + bias.pairs(owner_idx, item_idx)


@torch.no_grad()
def infer(model: nn.Module, graph: GraphData) -> dict[str, Tensor]:
    """Score vectors of every node from one full-graph forward in eval mode (no sampling noise,
    no dropout); the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        return model(graph.full())
    finally:
        model.train(was_training)


def score_bias(model: nn.Module, sub) -> ScoreBias | None:
    """The model's sparse score term on ``sub`` (PlaylistGAT's artist affinity), or ``None`` for
    a model whose score is the dot product alone."""
    fn = getattr(model, "score_bias", None)
    return fn(sub) if fn is not None else None


def rank_scores(vecs: dict[str, Tensor], bias: ScoreBias | None, owner_type: str,
                item_type: str) -> Callable[[Tensor], Tensor]:
    """``owner_ids -> [b, num_items]`` full-ranking scores from full-graph vectors and the
    model's bias on the full graph: dot products plus ``bias.rows`` (no autograd)."""
    owner_vecs, item_vecs = vecs[owner_type], vecs[item_type]

    @torch.no_grad()
    def score(owner_ids: Tensor) -> Tensor:
        ids = owner_ids.to(owner_vecs.device).long()
        s = owner_vecs[ids] @ item_vecs.T
        return s if bias is None else bias.add_rows_(s, ids)
    return score


@torch.no_grad()
def score_fn(model: nn.Module, graph: GraphData) -> Callable[[Tensor], Tensor]:
    """Full-ranking scorer of a model on ``graph`` (for ``evaluate_scores``): one full-graph
    :func:`infer`, then ``owner_ids -> [b, num_items]`` dot products plus the model's
    :func:`score_bias` rows, if it has one."""
    vecs = infer(model, graph)
    bias = score_bias(model, graph.full())  # counts and two weights: no train/eval difference
    return rank_scores(vecs, bias, graph.owner_type, graph.item_type)


@torch.no_grad()
def part_score_fns(model: nn.Module, graph: GraphData) -> dict[str, Callable[[Tensor], Tensor]]:
    """The parts of :func:`score_fn` as full-ranking scorers of their own: ``"gat"`` (the dot
    product of the full-graph vectors) and, for a model with a :func:`score_bias`,
    ``"affinity"`` (its attribute terms alone, where it has them) and ``"knn"`` (its item-kNN
    term alone, where it has one); they add up to :func:`score_fn`. Benchmarks rank each part on
    its own to show what it carries."""
    vecs = infer(model, graph)
    parts = {"gat": rank_scores(vecs, None, graph.owner_type, graph.item_type)}
    bias = score_bias(model, graph.full())
    if bias is not None:
        n = graph.num_nodes[graph.item_type]
        if bias.terms:
            parts["affinity"] = torch.no_grad()(
                lambda ids: bias.rows(ids.long(), n, ("affinity",)))
        if bias.knn is not None:
            parts["knn"] = torch.no_grad()(lambda ids: bias.rows(ids.long(), n, ("knn",)))
    return parts

"""The training jobs' hyper-parameter flags, derived from :class:`TrainConfig`.

A job lists the fields it exposes (:data:`COMMON` plus its own); each becomes a flag with the
field's type (a ``Literal``'s values as choices), its description as help, and the default a run
uses shown, grouped in ``--help`` by the field's section. Flags that are not hyper-parameters
(``--output``, ``--workers``, ...) stay hand-written in the jobs. Light imports only (pydantic,
no torch): ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Literal, get_args, get_origin

from engine.training.config import SECTIONS, TrainConfig

# field -> flag, where the flag's name is not the field's (both flags are older than the field
# names and are kept so that existing commands keep working)
RENAMED = {"num_threads": "threads", "holdout": "holdout_size"}
# the hyper-parameter flags both training jobs take
COMMON = ("model", "epochs", "lr", "batch_size", "pos_per_owner", "num_neg", "heads",
          "embedding_dim", "dropout", "l2", "genre_weight", "patience", "seed", "num_threads")


def dest(name: str) -> str:
    """The argparse ``dest`` of field ``name``'s flag."""
    return RENAMED.get(name, name)


def flag(name: str) -> str:
    """Field ``name``'s flag as typed (``lr_factor`` -> ``--lr-factor``)."""
    return "--" + dest(name).replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, names: Sequence[str], defaults: TrainConfig,
                     shown: Mapping[str, str] | None = None) -> None:
    """A flag for each TrainConfig field in ``names``, in one argument group per section. The
    help is the field's description, then ``(default: ...)``: the field's value in ``defaults``
    (the job's base config), or ``shown[name]`` where the value a run uses depends on another
    option (``--mode``, ``--advanced``). A flag parses to None when not given, so that
    :func:`config_flags` can tell an explicit flag from the config file and the job's base."""
    meta = {f.name: f.metadata for f in fields(TrainConfig)}
    unknown = [n for n in names if n not in meta]
    if unknown:
        raise ValueError(f"not TrainConfig fields: {unknown}")
    types = typing.get_type_hints(TrainConfig)  # Annotated ranges stripped: int, Literal, ...
    shown = shown or {}
    for section, title in SECTIONS.items():
        mine = [n for n in names if meta[n]["section"] == section]
        group = parser.add_argument_group(title) if mine else None
        for name in mine:
            default = shown.get(name, getattr(defaults, name))
            text = f"{meta[name]['doc']} (default: {default})".replace("%", "%%")
            group.add_argument(flag(name), dest=dest(name), default=None, help=text,
                               **_parse_as(name, types[name]))


def _parse_as(name: str, tp) -> dict:
    if get_origin(tp) is Literal:
        return {"choices": list(get_args(tp))}
    if tp in (int, float, str):
        return {"type": tp}
    # a bool, list or dict field needs its own flag syntax (a switch pair, a comma list)
    raise TypeError(f"{name}: no flag form for a field of type {tp}")


def config_flags(args: argparse.Namespace, names: Sequence[str]) -> dict:
    """The fields among ``names`` whose flag was given, ``{field: value}``."""
    values = {name: getattr(args, dest(name)) for name in names}
    return {k: v for k, v in values.items() if v is not None}


def flag_labels(names: Sequence[str]) -> dict[str, str]:
    """``{field: flag}``, so a validation error names the flag the user typed."""
    return {name: flag(name) for name in names}

"""One read-only copy of a run's split and graphs per node: tensors in files that every worker maps.

Without it each data-parallel worker parses the prepared dataset, makes the split and builds the
graphs itself, so a node with ``W`` workers holds ``W`` copies (about 0.5 GB each at the Kaggle
file's 50,000 playlists). :func:`save_tree` writes a tree of dataclasses, dicts, lists and tensors
once (the driver does it, before Ray starts); :func:`load_tree` maps every tensor with
``torch.from_file(shared=False)``: a private, copy-on-write mapping of the file, so the pages come
from the node's page cache and all the workers of a node read the same physical memory. A write
(no code path makes one) would copy that page for its own process and never reach the file or
the other workers.

Layout: ``tree.json`` (the skeleton, with each tensor as ``{"tensor": file, "dtype", "shape"}``)
and one raw little-endian file per tensor. Only the dataclasses of :data:`CLASSES` are rebuilt, so
loading runs no code named by the file. The folder is written under a temporary name and renamed
into place: a half-written store is never read.
"""
from __future__ import annotations

import dataclasses
import importlib
import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

TREE = "tree.json"
#: Dataclasses a store may hold ("module:Class").
CLASSES = frozenset({"engine.graph.types:GraphData", "engine.graph.types:CSR",
                     "engine.graph.split:Split", "engine.graph.split:HeldOut"})


def save_tree(tree: Any, folder: str | Path, meta: dict | None = None) -> Path:
    """Write ``tree`` to ``folder`` (replacing a store there), with ``meta`` kept beside it
    (:func:`read_meta`). Returns the folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        numbers = itertools.count()  # file names

        def enc(obj: Any) -> Any:
            if isinstance(obj, torch.Tensor):
                name = f"{next(numbers)}.bin"
                t = obj.detach().cpu().contiguous()
                if t.numel():
                    t.numpy().tofile(tmp / name)
                else:
                    (tmp / name).touch()
                return {"tensor": name, "dtype": str(t.dtype).removeprefix("torch."),
                        "shape": list(t.shape)}
            if dataclasses.is_dataclass(obj):
                cls = f"{type(obj).__module__}:{type(obj).__qualname__}"
                if cls not in CLASSES:
                    raise TypeError(f"a graph store cannot hold {cls}")
                return {"dataclass": cls, "fields": {f.name: enc(getattr(obj, f.name))
                                                     for f in dataclasses.fields(obj)}}
            if isinstance(obj, dict):
                return {"dict": [[enc(k), enc(v)] for k, v in obj.items()]}
            if isinstance(obj, tuple):
                return {"tuple": [enc(v) for v in obj]}
            if isinstance(obj, list):
                return [enc(v) for v in obj]
            if obj is None or isinstance(obj, (bool, int, float, str)):
                return obj
            raise TypeError(f"a graph store cannot hold {type(obj).__name__}")

        doc = {"meta": meta or {}, "tree": enc(tree)}
        (tmp / TREE).write_text(json.dumps(doc))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_meta(folder: str | Path) -> dict | None:
    """The ``meta`` a store was saved with, or None when ``folder`` holds no complete store."""
    try:
        return json.loads((Path(folder) / TREE).read_text())["meta"]
    except (OSError, ValueError, KeyError):
        return None


def load_tree(folder: str | Path) -> Any:
    """The tree saved in ``folder``, every tensor a copy-on-write mapping of its file."""
    folder = Path(folder)
    doc = json.loads((folder / TREE).read_text())

    def dec(obj: Any) -> Any:
        if isinstance(obj, list):
            return [dec(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if "tensor" in obj:
            dtype = getattr(torch, obj["dtype"])
            n = 1
            for s in obj["shape"]:
                n *= s
            if n == 0:
                return torch.empty(obj["shape"], dtype=dtype)
            flat = torch.from_file(str(folder / obj["tensor"]), shared=False, size=n, dtype=dtype)
            return flat.view(obj["shape"])
        if "dataclass" in obj:
            if obj["dataclass"] not in CLASSES:
                raise ValueError(f"{folder}: a graph store cannot hold {obj['dataclass']}")
            module, name = obj["dataclass"].split(":")
            cls = getattr(importlib.import_module(module), name)
            return cls(**{k: dec(v) for k, v in obj["fields"].items()})
        if "dict" in obj:
            return {_key(dec(k)): dec(v) for k, v in obj["dict"]}
        if "tuple" in obj:
            return tuple(dec(v) for v in obj["tuple"])
        raise ValueError(f"{folder}: unknown entry in {TREE}")

    return dec(doc["tree"])


def _key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k

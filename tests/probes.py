"""What a process holds, for tests: :func:`rss_mb`, :func:`own_edge_bytes`, and loop hooks
(``engine.training.loop``, ``hooks``): each rank writes ``probe-rank<R>.json`` to the run folder. A
Ray worker cannot import this folder, so tests register the module to be pickled by value
(:func:`for_ray`)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


def rss_mb() -> float:
    """This process's resident memory in MB (``VmRSS`` of ``/proc/self/status``, Linux)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def own_edge_bytes(obj, graph, num_edges: int) -> int:
    """Bytes of the tensors ``obj`` holds (its attributes, and those of dataclasses and tuples
    among them) that have at least ``num_edges`` entries and are not ``graph``'s own (the graph
    store's, shared by a node's workers): what each worker adds per edge."""
    import dataclasses

    import torch

    mine = {t.untyped_storage().data_ptr() for c in graph.csr.values()
            for t in (c.indptr, c.indices, c.perm)}
    mine |= {t.untyped_storage().data_ptr() for t in graph.edge_index.values()}
    seen, total = set(), 0

    def walk(x, depth=0):
        nonlocal total
        if isinstance(x, torch.Tensor):
            ptr = x.untyped_storage().data_ptr()
            if x.numel() >= num_edges and ptr not in mine and ptr not in seen:
                seen.add(ptr)
                total += x.untyped_storage().nbytes()
        elif depth < 2 and dataclasses.is_dataclass(x):
            for f in dataclasses.fields(x):
                walk(getattr(x, f.name), depth + 1)
        elif depth < 2 and isinstance(x, (tuple, list)):
            for v in x:
                walk(v, depth + 1)

    for value in vars(obj).values():
        walk(value)
    return total


def _mapped_files() -> list[str]:
    """Files this process maps (``/proc/self/maps``), unlinked ones included."""
    names = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            names.add(parts[5])
    return sorted(names)


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


class SharedMemoryProbe:
    """At "data": a digest of the split and fit graph and the files mapped; at the first
    "checkpoint": a digest of the ID tables and the files mapped then."""

    def __call__(self, event, rank=0, output=None, data=None, graph=None, epoch=None, **info):
        path = Path(output) / f"probe-rank{rank}.json"
        record = json.loads(path.read_text()) if path.exists() else {}
        if event == "data":
            csr = graph.csr[graph.interaction]
            record["data"] = _digest([data.split.fit, data.split.train, csr.indptr, csr.indices,
                                      *graph.x.values()])
            record["data_maps"] = _mapped_files()
        elif event == "checkpoint" and epoch == 1:
            record["table_maps"] = _mapped_files()
        else:
            return
        path.write_text(json.dumps(record))


def for_ray():
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])

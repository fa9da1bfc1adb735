"""ID embedding tables and their SparseAdam state held once per node, not once per worker.

Data-parallel replicas hold identical ID tables, and after :func:`~engine.training.sync.
sync_gradients` every rank holds the same averaged sparse gradient, so every replica would apply
the same SparseAdam update to the same rows. With the Kaggle file's 1.18 M tracks the tables and
their two moment buffers are about 1.2 GB per worker; four workers on a node held four identical
copies. Here the workers of a node map one shared copy instead (a file in ``/dev/shm``, mapped
``MAP_SHARED`` by ``torch.from_file(shared=True)``), and one of them, the node's *leader* (its
lowest rank), applies the sparse optimiser step for all of them:

1. every rank runs forward and backward on the shared rows (reads only);
2. the gradient sync is a collective, so when it returns every rank of the node has finished
   reading;
3. the leader runs ``SparseAdam.step`` (torch's own, on shared parameters and shared moments);
4. a barrier: no rank starts the next forward before the update is written.

The result is the same, bit for bit, as every rank applying the update to a private copy. The
files are unlinked as soon as every rank has mapped them, so nothing is left behind when a worker
dies; the memory is freed when the last worker of the node exits.
"""
from __future__ import annotations

import os
import shutil
import socket
import uuid
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from engine.training.sync import world

SHM = Path("/dev/shm")


def node_leaders() -> tuple[list[int], int]:
    """(the lowest rank of every node, this rank's node leader), nodes told apart by host name.
    Collective: every rank calls it."""
    rank, world_size = world()
    if world_size == 1:
        return [0], 0
    hosts: list = [None] * world_size
    dist.all_gather_object(hosts, socket.gethostname())
    first = {}
    for r, h in enumerate(hosts):  # a loop over ranks, not data
        first.setdefault(h, r)
    return sorted(first.values()), first[hosts[rank]]


def _folder(nbytes: int, fallback: Path) -> Path:
    """``/dev/shm`` when it can hold ``nbytes`` with room to spare, else ``fallback`` (a local
    folder of the run; the mapping is still shared through the page cache)."""
    try:
        if shutil.disk_usage(SHM).free > 2 * nbytes:
            return SHM
    except OSError:
        pass
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


class NodeShared:
    """Moves ``params`` (the sparse ID tables) and their SparseAdam moments into memory shared by
    the ranks of a node. Use :meth:`step` for the sparse optimiser: only the leader updates.

    Collective (every rank constructs it, in the same order of parameters). ``optimiser`` is the
    SparseAdam over ``params``; its state, when already loaded from a checkpoint, is carried over
    (the leader's values): construct it after resuming."""

    def __init__(self, params: list[nn.Parameter], optimiser: torch.optim.Optimizer,
                 fallback: Path):
        self.rank, self.world_size = world()
        _, mine = node_leaders()
        self.leader = self.rank == mine
        self.params, self.optimiser = params, optimiser
        token = [uuid.uuid4().hex if self.rank == 0 else None]
        dist.broadcast_object_list(token, 0)  # one name per run, shared by every rank
        nbytes = 3 * sum(p.numel() * p.element_size() for p in params)
        where = [str(_folder(nbytes, fallback)) if self.leader else None]
        # every rank learns its leader's folder (leaders first, then the same list to all)
        folders: list = [None] * self.world_size
        dist.all_gather_object(folders, where[0])
        base = Path(folders[mine]) / f"gatrec-{token[0]}-{socket.gethostname()}"
        files = []
        for i, p in enumerate(params):
            state = optimiser.state.get(p, {})
            for name, value in (("param", p.data), ("exp_avg", state.get("exp_avg")),
                                ("exp_avg_sq", state.get("exp_avg_sq"))):
                path = f"{base}-{i}-{name}"
                files.append(path)
                if self.leader:
                    t = torch.from_file(path, shared=True, size=p.numel(), dtype=p.dtype)
                    t.copy_(value.reshape(-1)) if value is not None else t.zero_()
        dist.barrier()  # the leaders have written every file
        for i, p in enumerate(params):
            shared = {name: torch.from_file(f"{base}-{i}-{name}", shared=True, size=p.numel(),
                                            dtype=p.dtype).view_as(p)
                      for name in ("param", "exp_avg", "exp_avg_sq")}
            p.data = shared["param"]
            state = optimiser.state.setdefault(p, {})
            state.update(step=state.get("step", 0), exp_avg=shared["exp_avg"],
                         exp_avg_sq=shared["exp_avg_sq"])
        dist.barrier()  # every rank has mapped every file
        if self.leader:
            for path in files:
                os.unlink(path)

    def step(self) -> None:
        """The sparse optimiser step, once per node (see the module docstring). Rank 0, the one
        that checkpoints, is always a leader, so its optimiser state is the run's."""
        if self.leader:
            self.optimiser.step()
        dist.barrier()

"""ID embedding tables and their SparseAdam state held once per node, not once per worker.

Data-parallel replicas hold identical ID tables, and after :func:`~engine.training.sync.
sync_gradients` every rank holds the same averaged sparse gradient, so every replica would apply
the same SparseAdam update to the same rows. With the Kaggle file's 1.18 M tracks the tables and
their two moment buffers are about 1.2 GB per worker; four workers on a node held four identical
copies. Here the workers of a node map one shared copy instead (a file in ``/dev/shm``, mapped
``MAP_SHARED`` by ``torch.from_file(shared=True)``; the node's *leader*, its lowest rank, writes
the files), and the ranks of a node split the sparse optimiser step by rows
(:class:`~engine.training.sync.RowShards`):

1. every rank runs forward and backward on the shared rows (reads only);
2. the gradient sync sends each touched row to the one rank of each node that owns it; it is a
   collective, so when it returns every rank of the node has finished reading;
3. every rank runs ``SparseAdam.step`` (:class:`~.row_adam.RowAdam`) on its own rows of the
   shared parameters and moments: disjoint rows, written by one rank each;
4. a barrier: no rank starts the next forward before the update is written.

The result is the same, bit for bit, as every rank applying the update to a private copy
(``tests/test_shared.py``). The files are unlinked as soon as every rank has mapped them, so
nothing is left behind when a worker dies; the memory is freed when the last worker of the node
exits.
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

from engine.training.sync import RowShards, world

SHM = Path("/dev/shm")
# the kernel's id of this boot: two machines (containers) may share a host name, not this
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def node_id() -> str:
    """This machine: its host name and :data:`BOOT_ID`, so that containers on different
    machines that share a host name are still told apart."""
    return f"{socket.gethostname()}/{BOOT_ID.read_text().strip() if BOOT_ID.exists() else ''}"


def node_layout() -> tuple[int, RowShards]:
    """(this rank's node leader: the lowest rank on its machine, the ranks' :class:`RowShards`),
    machines told apart by :func:`node_id`. Collective: every rank calls it."""
    rank, world_size = world()
    if world_size == 1:
        return 0, RowShards((0,), (1,))
    hosts: list = [None] * world_size
    dist.all_gather_object(hosts, node_id())
    seen: dict[str, int] = {}  # host -> ranks on it so far
    index = []
    for h in hosts:  # a loop over ranks, not data
        index.append(seen.get(h, 0))
        seen[h] = index[-1] + 1
    return hosts.index(hosts[rank]), RowShards(tuple(index), tuple(seen[h] for h in hosts))


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
    the ranks of a node. Sync with :attr:`shards` and use :meth:`step` for the sparse optimiser:
    each rank updates its own rows.

    Collective (every rank constructs it, in the same order of parameters). ``optimiser`` is the
    SparseAdam over ``params``; its state, when already loaded from a checkpoint, is carried over
    (the leader's values): construct it after resuming."""

    def __init__(self, params: list[nn.Parameter], optimiser: torch.optim.Optimizer,
                 fallback: Path):
        self.rank, self.world_size = world()
        mine, self.shards = node_layout()
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
        """The sparse optimiser step on this rank's rows (see the module docstring; the gradients
        of ``sync_gradients(..., shards=self.shards)``). Every rank counts every step, so rank 0,
        the one that checkpoints, holds the run's step count and, mapped, all of its node's
        moments."""
        self.optimiser.step()
        dist.barrier()

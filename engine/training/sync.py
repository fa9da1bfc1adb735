"""Data-parallel gradient synchronisation whose cost does not grow with the catalogue.

Why not plain DDP: DDP all-reduces every parameter's dense gradient each step. With ID embeddings
for 2 M tracks at dimension 64 that is a 512 MB all-reduce per step, although one step touches a
few thousand rows. Here ID embeddings produce *sparse* gradients (``nn.Embedding(sparse=True)``),
and each step

* all-reduces the dense parameters (attention, projections: a few hundred thousand numbers) as
  one flat buffer, and
* exchanges the touched rows of every embedding table (row ids + values; the payload is
  ``rows touched x dim``, independent of the table size) and sums them, either
  - all-gathered, so that every rank holds every averaged row (private tables), or
  - with :class:`RowShards` (the tables shared by the ranks of a node, :mod:`.shared`), sent
    only to the rank of each node that owns the row (one ``all_to_all``): each rank then holds
    the averaged gradient of its own rows and steps those. A rank receives about
    ``1 / ranks per node`` of what an all-gather brings it, and the node's sparse optimiser step
    is split among its ranks instead of run by one while the others wait.

Both are averaged over ranks, which is what DDP computes, so the optimiser sees the same
gradient on every rank and the replicas stay identical. Works over gloo (CPU) and NCCL (GPU): only
``all_gather``, ``all_to_all_single`` and ``all_reduce`` of dense tensors are used.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


def id_tables(model: nn.Module) -> list[nn.Embedding]:
    """The model's ID tables: its ``nn.Embedding`` modules (``RowEmbedding`` included)."""
    return [m for m in model.modules() if isinstance(m, nn.Embedding)]


def split_parameters(model: nn.Module, sparse: bool) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Mark the ID tables sparse (when asked) and return (dense params, sparse params)."""
    sparse_params: list[nn.Parameter] = []
    for module in id_tables(model):
        module.sparse = sparse
        if sparse:
            sparse_params.append(module.weight)
    ids = {id(p) for p in sparse_params}
    dense = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]
    return dense, sparse_params


def world() -> tuple[int, int]:
    """(rank, world_size) of the default process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@dataclass(frozen=True)
class RowShards:
    """Which rank steps which rows of node-shared ID tables: rank ``r`` owns the rows whose key
    (table, row) satisfies ``key % size[r] == index[r]``, with ``size[r]`` the number of ranks on
    ``r``'s node and ``index[r]`` ``r``'s place among them. The ranks of every node together own
    every row exactly once, so each node's copy of the tables gets every update."""

    index: tuple[int, ...]
    size: tuple[int, ...]

    @property
    def nodes(self) -> int:
        """How many nodes (each has one rank of place 0)."""
        return self.index.count(0)

    def owners(self, keys: Tensor) -> Tensor:
        """[world_size, len(keys)] bool: which ranks receive each key (one per node)."""
        index = torch.tensor(self.index)[:, None]
        size = torch.tensor(self.size)[:, None]
        return keys[None, :] % size == index


def _all_gather_rows(index: Tensor, values: Tensor, world_size: int) -> tuple[Tensor, Tensor]:
    """All-gather variable-length (row index, row values) pairs by padding to the longest."""
    n = torch.tensor([index.numel()], device=index.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    pad = longest - index.numel()
    index = torch.cat([index, index.new_full((pad,), -1)])
    values = torch.cat([values, values.new_zeros((pad,) + tuple(values.shape[1:]))])
    all_index = [torch.empty_like(index) for _ in range(world_size)]
    all_values = [torch.empty_like(values) for _ in range(world_size)]
    dist.all_gather(all_index, index)
    dist.all_gather(all_values, values)
    index, values = torch.cat(all_index), torch.cat(all_values)
    keep = index >= 0
    return index[keep], values[keep]


def _exchange_rows(key: Tensor, value: Tensor, shards: RowShards) -> tuple[Tensor, Tensor]:
    """Send each (key, value row) to the ranks that own it (:class:`RowShards`); returns the
    rows this rank received, in rank order of their senders (an all-gather's order, restricted
    to this rank's keys). The count exchange comes first and has an entry from every rank, so
    when it returns every rank has finished its backward pass (the shared tables' readers)."""
    dest = shards.owners(key)
    pick = torch.nonzero(dest.reshape(-1)).flatten()  # rank-major: rank 0's keys first
    send = pick % key.numel()
    counts = dest.sum(1)
    incoming = torch.empty_like(counts)
    dist.all_to_all_single(incoming, counts)
    out_sizes, in_sizes = incoming.tolist(), counts.tolist()
    keys = key.new_empty(sum(out_sizes))
    values = value.new_empty((sum(out_sizes),) + tuple(value.shape[1:]))
    dist.all_to_all_single(keys, key[send], out_sizes, in_sizes)
    dist.all_to_all_single(values, value[send], out_sizes, in_sizes)
    return keys, values


def sync_gradients(dense: list[nn.Parameter], sparse: list[nn.Parameter],
                   shards: RowShards | None = None) -> int:
    """Average gradients over all ranks in place. Returns the number of floats sent by this rank
    (a measure of communication volume; 0 without a process group). ``shards``: the sparse
    tables are shared per node and every rank steps only its own rows (:mod:`.shared`); each
    rank's sparse gradients then hold the averaged rows it owns (possibly none: an empty
    gradient, so that every rank's optimiser counts the step)."""
    _, world_size = world()
    if world_size == 1:
        return 0
    sent = 0
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in dense]
    if grads:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world_size
        sent += flat.numel()
        offset = 0
        for p, g in zip(dense, grads):
            p.grad = flat[offset:offset + g.numel()].view_as(p)
            offset += g.numel()
    # One gather for all tables of a width: fewer collectives, which dominate at this size.
    by_width: dict[int, list[nn.Parameter]] = {}
    for p in sparse:
        by_width.setdefault(p.size(1), []).append(p)
    for width, params in by_width.items():
        rows = max(p.size(0) for p in params)
        keys, values = [], []
        for t, p in enumerate(params):
            if p.grad is not None:
                g = p.grad.coalesce()
                keys.append(g.indices()[0] + t * rows)  # (table, row) as one int64 key
                values.append(g.values())
        key = torch.cat(keys) if keys else torch.empty(0, dtype=torch.long)
        value = torch.cat(values) if values else params[0].new_zeros((0, width))
        if shards is None:
            sent += value.numel()  # this rank's rows; the gather pads to the longest rank's
            key, value = _all_gather_rows(key, value, world_size)
        else:
            sent += value.numel() * shards.nodes  # each row once to every node
            key, value = _exchange_rows(key, value, shards)
        table, row = key // rows, key % rows
        for t, p in enumerate(params):
            mine = table == t
            p.grad = torch.sparse_coo_tensor(row[mine].unsqueeze(0), value[mine] / world_size,
                                             p.shape, check_invariants=False).coalesce()
    return sent


def broadcast_floats(values: list[float], src: int = 0) -> list[float]:
    """Broadcast a few floats from ``src`` (e.g. rank 0's validation metrics and stop flag)."""
    _, world_size = world()
    if world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.broadcast(t, src)
    return t.tolist()


def broadcast_parameters(params: list[torch.Tensor], src: int = 0) -> None:
    """Copy ``src``'s values of ``params`` to every rank (in place), so a data-dependent start
    (the SVD of :mod:`engine.models.init`) is the same everywhere even where floating-point
    round-off differs between processes."""
    _, world_size = world()
    if world_size == 1:
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src)

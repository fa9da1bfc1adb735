"""The run's optimisers, made and stepped in one place (the loop and the step benchmarks share it).

Adam on the dense weights and SparseAdam on the ID embedding tables (``nn.Embedding(sparse=True)``,
:func:`~engine.training.sync.split_parameters`): a step touches a few thousand of a table's rows,
and SparseAdam updates only those rows' moments (:class:`~.row_adam.RowAdam`: torch's SparseAdam
bit for bit, on gathered rows). Each has a ``ReduceLROnPlateau`` scheduler on
validation Recall@10. With several workers the sparse step runs once per node on shared tables
(:meth:`Optimisers.share`, :mod:`.shared`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.training.config import TrainConfig
from engine.training.row_adam import RowAdam
from engine.training.shared import NodeShared
from engine.training.sync import id_tables, split_parameters, sync_gradients


@dataclass
class Optimisers:
    dense: list[nn.Parameter]
    sparse: list[nn.Parameter]
    adam: torch.optim.Adam
    sparse_adam: RowAdam | None
    schedulers: list
    node: NodeShared | None = None

    @property
    def all(self) -> list[torch.optim.Optimizer]:
        """The optimisers in checkpoint order (dense first)."""
        return [o for o in (self.adam, self.sparse_adam) if o is not None]

    @property
    def lr(self) -> float:
        return self.adam.param_groups[0]["lr"]

    def zero_grad(self) -> None:
        for o in self.all:
            o.zero_grad(set_to_none=True)

    def step(self) -> None:
        """Adam on every rank; SparseAdam once per node when the tables are shared."""
        self.adam.step()
        if self.node is not None:
            self.node.step()
        elif self.sparse_adam is not None:
            self.sparse_adam.step()

    def sync(self) -> int:
        """Average the gradients over the ranks (:func:`sync_gradients`); returns the floats
        this rank sent. With shared tables each rank keeps the sparse gradients of the rows it
        steps (:class:`~.sync.RowShards`)."""
        return sync_gradients(self.dense, self.sparse,
                              None if self.node is None else self.node.shards)

    def share(self, fallback: Path) -> None:
        """Move the ID tables and their moments to memory shared by each node's ranks (call after
        resuming; collective)."""
        if self.sparse:
            self.node = NodeShared(self.sparse, self.sparse_adam, fallback)

    def state_dicts(self) -> dict:
        return {"optimisers": [o.state_dict() for o in self.all],
                "schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dicts(self, state: dict) -> None:
        for o, s in zip(self.all, state["optimisers"]):
            o.load_state_dict(s)
        for sch, s in zip(self.schedulers, state["schedulers"]):
            sch.load_state_dict(s)


def make_optimisers(cfg: TrainConfig, model: nn.Module) -> Optimisers:
    """Adam at ``cfg.lr`` (the ID tables, when dense, at ``cfg.id_lr``), SparseAdam on the sparse
    ID tables at ``cfg.id_lr`` (0: ``cfg.lr``), and their plateau schedulers, for ``model``."""
    dense, sparse = split_parameters(model, cfg.sparse_embeddings)
    id_lr = cfg.id_lr or cfg.lr
    groups = [{"params": dense}]
    if id_lr != cfg.lr:  # dense ID tables in a group of their own (one group otherwise, so
        # checkpoints written before id_lr existed still load)
        tables = {id(m.weight) for m in id_tables(model)}
        groups = [{"params": [p for p in dense if id(p) not in tables]},
                  {"params": [p for p in dense if id(p) in tables], "lr": id_lr}]
    adam = torch.optim.Adam([g for g in groups if g["params"]], lr=cfg.lr)
    sparse_adam = RowAdam(sparse, lr=id_lr) if sparse else None
    schedulers = [torch.optim.lr_scheduler.ReduceLROnPlateau(
        o, mode="max", factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.min_lr)
        for o in (adam, sparse_adam) if o is not None]
    return Optimisers(dense, sparse, adam, sparse_adam, schedulers)

"""How much memory a run will take, estimated before Ray starts, so a configuration that cannot fit
ends at once (exit 2) instead of swapping or being killed an hour in.

From the run's graph store (its files are the read-only data every worker maps) and the model's
shape (built on PyTorch's ``meta`` device: shapes, no memory), per node:

* shared, once per node: the graph store, and with several workers the ID tables with their two
  SparseAdam moments (:mod:`.shared`); with one worker those are the worker's own;
* per worker: :data:`WORKER_BASE` (Python, PyTorch, the Ray worker), the dense weights with their
  gradient and two Adam moments, where its positives are drawn from (an int32 per fit edge), and
  a training step's activations, :data:`STEP_BYTES_PER_NODE` per node of the sampled subgraph
  for :func:`subgraph_nodes` nodes;
* with an item-kNN term (:mod:`engine.graph.cooccur`), per worker its per-item and per-owner
  weights and a step's owner overlaps, nothing per fit edge (:func:`knn_bytes`); rank 0's
  ranking block and a value per fit edge on top;
* rank 0 on top: validation and test. A full-graph forward keeps about
  :data:`INFER_STATES` vectors of width D per node (its per-edge messages run in groups,
  :func:`engine.models.layers.gat_by_destination`) and the evaluation batches
  (:data:`engine.eval.evaluate.SCORE_BYTES`, three at a time); the best weights are a file in
  the run folder (:class:`engine.training.state.TrainState`), not memory;
* the driver and Ray's own processes: :data:`DRIVER_BYTES`.

The node's peak is the larger of two phases (:attr:`Estimate.total`): the steps, every worker
holding a step's activations; and rank 0's validation or test, while the other workers wait
with their step memory given back (``engine.training.heap.release_heap``), which a sum of the
two would count twice (it said 9.8 GB for a run measured at 7.2 GB, round 7 of issue #15).

The constants were measured on the 12.9 M-row Kaggle-format file (docs/benchmarks.md, "Full mode
at Kaggle scale"); the estimate is meant to be within a few tens of percent, which is what a
go / no-go check needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from engine.eval.evaluate import SCORE_BYTES
from engine.graph.cooccur import BLOCK_FLOATS, COSINE
from engine.graph.types import GraphData
from engine.training.config import TrainConfig, make_model

GB = 1 << 30
WORKER_BASE = int(0.45 * GB)
DRIVER_BYTES = int(1.7 * GB)  # the driver 0.46 GB, Ray's own processes 1.24 (round 8)
STEP_BYTES_PER_NODE = 1536
INFER_STATES = 4  # the full-size forward: 1.46 GB for 1.54 M nodes of width 64 (round 7)
KNN_BLOCK_BYTES = 4 * 2 * BLOCK_FLOATS  # a block of owner overlaps of ItemKNN.rows_of


@dataclass
class Estimate:
    workers: int
    shared: int  # bytes once per node
    idle_worker: int  # a worker between steps, its step memory given back
    step: int  # a training step's activations, on top of an idle worker
    chief_extra: int  # rank 0's evaluation on top of an idle worker
    driver: int

    @property
    def per_worker(self) -> int:
        """A worker during the steps."""
        return self.idle_worker + self.step

    @property
    def steps(self) -> int:
        """The node while every worker steps."""
        return self.shared + self.workers * self.per_worker + self.driver

    @property
    def evaluation(self) -> int:
        """The node while rank 0 validates or tests and the other workers wait."""
        return self.shared + self.workers * self.idle_worker + self.chief_extra + self.driver

    @property
    def total(self) -> int:
        """The node's peak: the larger phase, the driver and Ray included."""
        return max(self.steps, self.evaluation)

    def describe(self) -> str:
        return (f"about {self.total / GB:.1f} GB with {self.workers} worker(s): "
                f"{self.steps / GB:.1f} GB while they step ({self.per_worker / GB:.2f} GB each), "
                f"{self.evaluation / GB:.1f} GB while rank 0 evaluates; of it "
                f"{self.shared / GB:.2f} GB shared, {self.driver / GB:.1f} GB driver and Ray")


def subgraph_nodes(cfg: TrainConfig, num_nodes: int) -> int:
    """Nodes of one step's sampled subgraph, at most: the seeds (owners, positives, negatives)
    times 1 + f1 + f1·f2 + ... (a node per drawn neighbour at each hop), capped by the graph;
    a fanout of -1 (every neighbour) is capped by the graph alone."""
    owners = cfg.batch_size
    items = cfg.batch_size * cfg.pos_per_owner * (1 + cfg.num_neg)
    if cfg.neg_pool:
        items = min(items, cfg.batch_size * cfg.pos_per_owner * (1 + cfg.num_neg // 2)
                    + cfg.neg_pool)
    reach, width = 1, 1
    for k in cfg.fanouts:
        if k < 0:
            return num_nodes
        width *= k
        reach += width
    return min((owners + items) * reach, num_nodes)


def knn_bytes(cfg: TrainConfig, graph: GraphData) -> tuple[int, int]:
    """(per worker, rank 0 on top) for the item-kNN term's :class:`~engine.graph.cooccur.ItemKNN`:
    the item degrees and weights, the owner weights and a step's dense owner overlaps (``[batch,
    owners]``, at most :data:`~engine.graph.cooccur.BLOCK_FLOATS`), nothing per fit edge (the
    CSRs it reads are the graph's, shared); at evaluation a block of overlaps and a value per
    fit edge (two for exponents other than the cosine's)."""
    edges = graph.csr[graph.interaction].num_edges
    owners, items = graph.num_nodes[graph.owner_type], graph.num_nodes[graph.item_type]
    worker = 16 * items + 4 * owners + 4 * min(cfg.batch_size * owners, BLOCK_FLOATS)
    cosine = (cfg.knn_pop_exp, cfg.knn_len_exp) == COSINE
    return worker, KNN_BLOCK_BYTES + (4 if cosine else 8) * edges


def store_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def estimate(cfg: TrainConfig, graph: GraphData, workers: int, shared_data: int) -> Estimate:
    """The :class:`Estimate` for ``workers`` workers on one node training ``cfg`` on ``graph``
    (the fit graph), with ``shared_data`` bytes of graph store."""
    with torch.device("meta"):
        model = make_model(cfg, graph)
    tables = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    params = sum(p.numel() for p in model.parameters())
    dense = params - tables if cfg.sparse_embeddings else params
    table_state = 4 * tables * 3  # weights and two moments
    n = sum(graph.num_nodes.values())
    edges = graph.csr[graph.interaction].num_edges
    idle = WORKER_BASE + 4 * dense * 4 + 4 * edges  # + where positives are drawn from
    step = STEP_BYTES_PER_NODE * subgraph_nodes(cfg, n)
    shared = shared_data
    if workers > 1:
        shared += table_state
    else:
        idle += table_state
    chief = 4 * cfg.embedding_dim * n * INFER_STATES + 3 * SCORE_BYTES
    if getattr(model, "knn_weight", None) is not None:
        worker_knn, chief_knn = knn_bytes(cfg, graph)
        idle += worker_knn
        chief += chief_knn
    return Estimate(workers, shared, idle, step, chief, DRIVER_BYTES)


def available_bytes() -> int:
    """Memory this machine can still give (what the kernel reports as available)."""
    import psutil

    return int(psutil.virtual_memory().available)


def run_estimate(cfg: TrainConfig, workers: int | list[int]) -> Estimate | list[Estimate]:
    """The estimate for ``cfg`` on one node (its ``graph_store`` already built), for a number of
    workers or a list of them."""
    from engine.training.run_data import RunData

    graph = RunData.open_store(cfg).graph("fit")
    shared = store_bytes(cfg.graph_store)
    if isinstance(workers, int):
        return estimate(cfg, graph, workers, shared)
    return [estimate(cfg, graph, w, shared) for w in workers]


def check_fits(cfg: TrainConfig, workers: int, available: int | None = None) -> Estimate:
    """:func:`run_estimate`; ValueError with one line when it exceeds ``available`` bytes
    (default: :func:`available_bytes`), naming the number of workers that would fit."""
    est, *fewer = run_estimate(cfg, list(range(workers, 0, -1)))
    available = available_bytes() if available is None else available
    if est.total <= available:
        return est
    fits = [e.workers for e in fewer if e.total <= available]
    hint = (f"use --workers {fits[0]}" if fits else "use a smaller --max-playlists") + \
        " or a machine with more memory"
    raise ValueError(f"this run needs {est.describe()}; this machine has "
                     f"{available / GB:.1f} GB available: {hint}")

"""Facade: the sampler's public names, re-exported from the modules that define them.

The sampler lives in three modules (issue 13): :mod:`engine.graph.neighbours` (the sampled
subgraph: ``sample_subgraph``, ``whole_graph``, ``add_owner_rows``), :mod:`engine.graph.negatives`
(``sample_negatives``) and :mod:`engine.graph.batches` (``BPRBatches`` and its epoch helpers).
This module defines nothing; ``from engine.graph.sampler import ...`` keeps working for existing
importers.
"""
from __future__ import annotations

from engine.graph.batches import Batch, BPRBatches, epoch_generator, owner_shard, steps_per_epoch
from engine.graph.negatives import sample_negatives
from engine.graph.neighbours import (
    Fanouts,
    SampledSubgraph,
    add_owner_rows,
    sample_subgraph,
    whole_graph,
)
from engine.graph.ops import row_lookup

__all__ = [
    "BPRBatches", "Batch", "Fanouts", "SampledSubgraph", "add_owner_rows",
    "epoch_generator", "owner_shard", "row_lookup", "sample_negatives", "sample_subgraph",
    "steps_per_epoch", "whole_graph",
]

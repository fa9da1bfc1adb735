"""What a run config trains and evaluates on: its prepared dataset, protocol split and graphs.

The training loop, ``jobs.recommend`` (rebuilding a finished run's graph) and the quality
benchmarks all derive these from a :class:`~engine.training.config.TrainConfig` the same way,
so a setting that shapes the data (holdout, validation size, seed, ``--genres``, ``recency``)
is read in one place.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from engine.data.canonical import Dataset, load_dataset
from engine.graph.build import build_graph
from engine.graph.genres import read_artist_genres_csv
from engine.graph.split import Split, make_split
from engine.graph.types import GraphData
from engine.training.config import TrainConfig


@dataclass
class RunData:
    cfg: TrainConfig
    ds: Dataset
    split: Split
    artist_genres: pd.DataFrame | None  # from cfg.genres_csv, else None

    @classmethod
    def load(cls, cfg: TrainConfig) -> RunData:
        """Load ``cfg.dataset``, make the protocol split with the config's settings and read
        ``cfg.genres_csv`` (once, so several graphs share it)."""
        ds = load_dataset(cfg.dataset)
        split = make_split(ds, holdout=cfg.holdout, val_ratio=cfg.val_ratio,
                           test_ratio=cfg.test_ratio, max_val_owners=cfg.max_val_owners,
                           seed=cfg.seed)
        genres = read_artist_genres_csv(cfg.genres_csv, ds.artists) if cfg.genres_csv else None
        return cls(cfg, ds, split, genres)

    def graph(self, stage: str) -> GraphData:
        """The message-passing graph of ``stage``: "fit" while training, "train" for the test."""
        return build_graph(self.ds, self.split, stage=stage, artist_genres=self.artist_genres,
                           recency=self.cfg.recency)

"""What a run config trains and evaluates on: its prepared dataset, protocol split and graphs.

The training loop, ``jobs.recommend`` (rebuilding a finished run's graph) and the quality
benchmarks all derive these from a :class:`~engine.training.config.TrainConfig` the same way,
so a setting that shapes the data (holdout, validation size, seed, ``--genres``, ``recency``)
is read in one place.

Shared per node: :meth:`RunData.save_store` builds the split and both graphs once (the job's
driver, before Ray starts) into a graph store (:mod:`engine.graph.store`); a worker whose config
names it (``graph_store``) maps those tensors instead of building its own, so the workers of a
node share one copy of the read-only data.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from engine.data.canonical import Dataset, load_dataset
from engine.graph.build import build_graph
from engine.graph.genres import read_artist_genres_csv
from engine.graph.split import Split, make_split
from engine.graph.store import load_tree, read_meta, save_tree
from engine.graph.types import GraphData
from engine.training.config import TrainConfig

STAGES = ("fit", "train")
# the config fields that shape the split and the graphs: a store made with others is rebuilt
DATA_KEYS = ("dataset", "holdout", "val_ratio", "test_ratio", "max_val_owners", "seed",
             "genres_csv", "recency")


@dataclass
class RunData:
    cfg: TrainConfig
    ds: Dataset | None  # None when mapped from a graph store (workers never need the tables)
    split: Split
    artist_genres: pd.DataFrame | None  # from cfg.genres_csv, else None
    graphs: dict[str, GraphData] = field(default_factory=dict)  # built or mapped, by stage

    @classmethod
    def load(cls, cfg: TrainConfig) -> RunData:
        """The run's data: mapped from ``cfg.graph_store`` when the config names one (made for
        these data settings), else loaded from ``cfg.dataset`` with the protocol split made with
        the config's settings and ``cfg.genres_csv`` read (once, so several graphs share it)."""
        if cfg.graph_store:
            return cls.open_store(cfg)
        ds = load_dataset(cfg.dataset)
        split = make_split(ds, holdout=cfg.holdout, val_ratio=cfg.val_ratio,
                           test_ratio=cfg.test_ratio, max_val_owners=cfg.max_val_owners,
                           seed=cfg.seed)
        genres = read_artist_genres_csv(cfg.genres_csv, ds.artists) if cfg.genres_csv else None
        return cls(cfg, ds, split, genres)

    @property
    def kind(self) -> str:
        return self.split.kind

    def graph(self, stage: str) -> GraphData:
        """The message-passing graph of ``stage``: "fit" while training, "train" for the test."""
        if stage not in self.graphs:
            if self.ds is None:
                raise ValueError(f"the graph store holds no {stage!r} graph")
            return build_graph(self.ds, self.split, stage=stage,
                               artist_genres=self.artist_genres, recency=self.cfg.recency)
        return self.graphs[stage]

    @staticmethod
    def store_key(cfg: TrainConfig) -> dict:
        """What a store must have been made from to serve ``cfg``: its data settings and the
        prepared dataset's manifest (which names the source and subset it was made from)."""
        manifest = Path(cfg.dataset) / "manifest.json"
        return {"data": {k: getattr(cfg, k) for k in DATA_KEYS},
                "manifest": manifest.read_text() if manifest.exists() else ""}

    @classmethod
    def save_store(cls, cfg: TrainConfig, folder: str | Path) -> Path:
        """Build the split and both graphs of ``cfg`` once and write them to ``folder``, unless a
        store for the same data settings is already there. Returns the folder."""
        key = cls.store_key(cfg)
        if read_meta(folder) == key:
            return Path(folder)
        data = cls.load(TrainConfig.from_dict({**cfg.to_dict(), "graph_store": ""}))
        tree = {"split": data.split, **{s: data.graph(s) for s in STAGES}}
        return save_tree(tree, folder, meta=key)

    @classmethod
    def save_store_apart(cls, cfg: TrainConfig, folder: str | Path) -> Path:
        """:meth:`save_store` in a child process: the dataset tables and the builder's
        temporaries (about 2 GB at the Kaggle file's size) go back to the system when it exits,
        so the driver stays small for the whole run. Its errors are raised here."""
        if read_meta(folder) == cls.store_key(cfg):
            return Path(folder)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(cls.save_store, cfg, folder).result()

    @classmethod
    def open_store(cls, cfg: TrainConfig) -> RunData:
        """Map ``cfg.graph_store`` (see :meth:`save_store`); a store made for other data settings
        is refused (ValueError), never silently trained on."""
        if read_meta(cfg.graph_store) != cls.store_key(cfg):
            raise ValueError(f"{cfg.graph_store}: graph store made for other data settings")
        tree = load_tree(cfg.graph_store)
        return cls(cfg, None, tree["split"], None, {s: tree[s] for s in STAGES})

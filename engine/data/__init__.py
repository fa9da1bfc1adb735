"""Data ingest: readers for Kaggle CSV, MPD JSON, audio features, synthetic sessions, and the
canonical on-disk dataset format they all produce (see :mod:`engine.data.canonical`)."""
from engine.data.canonical import Dataset, is_prepared, load_dataset, save_dataset

__all__ = ["Dataset", "is_prepared", "load_dataset", "save_dataset"]

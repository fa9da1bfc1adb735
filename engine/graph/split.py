"""Train / validation / test splits exactly as ``shared/PROTOCOL.md`` fixes them.

Playlist data (``kind="playlist"``): every playlist with at least ``holdout + 5`` distinct tracks
gives its last ``holdout`` tracks (by position) to the test set. Validation comes from training
data only: among the remaining tracks, playlists that still have ``holdout + 5`` give their last
``holdout`` to validation (optionally a seeded sample of at most ``max_val_owners`` of them, to keep
per-epoch validation cheap).

Session data (``kind="session"``): per user, distinct songs ordered by first listen; the first
``1 - val_ratio - test_ratio`` train, the next ``val_ratio`` validate, the last ``test_ratio`` test,
with at least one song in validation and test; users with fewer than 5 distinct songs train only.

Edge sets: ``fit`` = training edges without validation (message passing and BPR positives while
training); ``train`` = ``fit`` plus validation edges = every non-test edge (message passing,
masking, candidates and baselines at test time). Test edges never enter either.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from engine.data.canonical import Dataset


@dataclass
class HeldOut:
    """Held-out items per owner, CSR-style: owner ``owners[k]`` holds out
    ``items[indptr[k]:indptr[k+1]]``."""

    owners: Tensor
    indptr: Tensor
    items: Tensor

    def __len__(self) -> int:
        return int(self.owners.numel())

    @staticmethod
    def from_pairs(owner: np.ndarray, item: np.ndarray) -> HeldOut:
        order = np.lexsort((item, owner))
        owner, item = owner[order], item[order]
        owners, counts = np.unique(owner, return_counts=True)
        indptr = np.zeros(len(owners) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(counts)
        return HeldOut(torch.from_numpy(owners.astype(np.int64)), torch.from_numpy(indptr),
                       torch.from_numpy(item.astype(np.int64)))

    def pairs(self) -> Tensor:
        """[2, m] (owner, item) pairs."""
        counts = self.indptr[1:] - self.indptr[:-1]
        return torch.stack([self.owners.repeat_interleave(counts), self.items])


@dataclass
class Split:
    kind: str
    num_owners: int
    num_items: int
    fit: Tensor  # int64 [2, E_fit] (owner, item)
    train: Tensor  # int64 [2, E_train] = fit + validation edges
    val: HeldOut
    test: HeldOut
    fit_weight: Tensor | None = None  # float [E_fit, 2] (log1p plays, mean completion), sessions
    train_weight: Tensor | None = None
    item_artist: Tensor | None = None  # int64 [num_items]: each item's artist (diversity metrics)

    def edges(self, stage: str) -> tuple[Tensor, Tensor | None]:
        """Message-passing edges for ``stage`` ("fit" while training, "train" for the test run)."""
        if stage == "fit":
            return self.fit, self.fit_weight
        if stage == "train":
            return self.train, self.train_weight
        raise ValueError(f"stage must be 'fit' or 'train', not {stage!r}")

    def summary(self) -> dict:
        return {
            "owners": self.num_owners, "items": self.num_items,
            "fit_edges": int(self.fit.size(1)), "train_edges": int(self.train.size(1)),
            "val_owners": len(self.val), "val_items": int(self.val.items.numel()),
            "test_owners": len(self.test), "test_items": int(self.test.items.numel()),
        }


def rank_within_owner(owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by owner: 0-based rank of each row within its owner, and the owner's size."""
    n = len(owner)
    starts = np.r_[0, np.flatnonzero(owner[1:] != owner[:-1]) + 1]
    sizes = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, sizes)
    return rank, np.repeat(sizes, sizes)


def _tail_holdout(owner: np.ndarray, keep: np.ndarray, holdout: int) -> np.ndarray:
    """Mask of rows (sorted by owner, then position) that are the last ``holdout`` of the kept
    rows of owners with at least ``holdout + 5`` kept rows."""
    idx = np.flatnonzero(keep)
    rank, size = rank_within_owner(owner[idx])
    mask = np.zeros(len(owner), dtype=bool)
    mask[idx[(size >= holdout + 5) & (rank >= size - holdout)]] = True
    return mask


def split_playlists(ds: Dataset, *, holdout: int, max_val_owners: int | None,
                    seed: int) -> Split:
    inter = ds.interactions
    owner = inter.owner_id.to_numpy(np.int64)
    item = inter.track_id.to_numpy(np.int64)
    order = np.lexsort((inter["order"].to_numpy(), owner))
    owner, item = owner[order], item[order]

    test = _tail_holdout(owner, np.ones(len(owner), dtype=bool), holdout)
    val = _tail_holdout(owner, ~test, holdout)
    if max_val_owners is not None:
        val_owners = np.unique(owner[val])
        if len(val_owners) > max_val_owners:
            rng = np.random.default_rng(seed)
            chosen = rng.choice(val_owners, size=max_val_owners, replace=False)
            val &= np.isin(owner, chosen)
    return _assemble(ds, owner, item, val, test)


def split_sessions(ds: Dataset, *, val_ratio: float, test_ratio: float,
                   min_songs: int = 5) -> Split:
    inter = ds.interactions
    ev_owner = inter.owner_id.to_numpy(np.int64)
    ev_item = inter.track_id.to_numpy(np.int64)
    ev_time = inter["order"].to_numpy(np.int64)
    completion = (inter["completion"].to_numpy(np.float64) if "completion" in inter
                  else np.ones(len(inter)))

    # Aggregate events into one row per (user, song): first listen, play count, mean completion.
    pair = ev_owner * ds.num_tracks + ev_item
    uniq, inv = np.unique(pair, return_inverse=True)
    first = np.full(len(uniq), np.iinfo(np.int64).max)
    np.minimum.at(first, inv, ev_time)
    plays = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    mean_completion = np.bincount(inv, weights=completion, minlength=len(uniq)) / plays
    owner, item = uniq // ds.num_tracks, uniq % ds.num_tracks

    # Rank each user's songs by first listen (ties broken by song id for determinism).
    order = np.lexsort((item, first, owner))
    owner, item = owner[order], item[order]
    plays, mean_completion = plays[order], mean_completion[order]
    rank, size = rank_within_owner(owner)
    n_test = np.maximum(1, np.floor(size * test_ratio + 0.5)).astype(np.int64)
    n_val = np.maximum(1, np.floor(size * val_ratio + 0.5)).astype(np.int64)
    eligible = size >= min_songs
    test = eligible & (rank >= size - n_test)
    val = eligible & ~test & (rank >= size - n_test - n_val)
    weight = np.stack([np.log1p(plays), mean_completion], 1).astype(np.float32)
    return _assemble(ds, owner, item, val, test, weight)


def _assemble(ds: Dataset, owner: np.ndarray, item: np.ndarray, val: np.ndarray,
              test: np.ndarray, weight: np.ndarray | None = None) -> Split:
    """The Split of (owner, item) rows given the validation and test masks."""
    fit, train = ~test & ~val, ~test

    def edges(mask: np.ndarray) -> Tensor:
        return torch.from_numpy(np.stack([owner[mask], item[mask]]))

    def weights(mask: np.ndarray) -> Tensor | None:
        return None if weight is None else torch.from_numpy(weight[mask])

    return Split(
        kind=ds.kind, num_owners=ds.num_owners, num_items=ds.num_tracks,
        fit=edges(fit), train=edges(train),
        val=HeldOut.from_pairs(owner[val], item[val]),
        test=HeldOut.from_pairs(owner[test], item[test]),
        fit_weight=weights(fit), train_weight=weights(train),
        item_artist=item_artists(ds),
    )


def item_artists(ds: Dataset) -> Tensor:
    """int64 [num_tracks]: the artist id of each track (-1 where the table has none)."""
    out = np.full(ds.num_tracks, -1, dtype=np.int64)
    out[ds.tracks.track_id.to_numpy(np.int64)] = ds.tracks.artist_id.to_numpy(np.int64)
    return torch.from_numpy(out)


def make_split(ds: Dataset, *, holdout: int, val_ratio: float, test_ratio: float,
               max_val_owners: int | None, seed: int) -> Split:
    """The protocol split for either kind of dataset. Its settings are TrainConfig's fields of
    the same names and have no default here (their one default is the config's; this module
    cannot import it): every caller passes them. ``max_val_owners=None`` keeps every validation
    owner."""
    if ds.kind == "playlist":
        return split_playlists(ds, holdout=holdout, max_val_owners=max_val_owners, seed=seed)
    return split_sessions(ds, val_ratio=val_ratio, test_ratio=test_ratio)

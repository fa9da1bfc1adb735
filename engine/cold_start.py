"""Recommend for a playlist the model never saw, without retraining, and fit saved weights.

A new playlist is given as a list of tracks (:func:`read_track_list`). :func:`with_new_owner`
appends it to the dataset and to the split's message-passing (non-test) edges as one more owner,
so that :func:`engine.graph.build.build_graph` builds the inference graph exactly as for the test
run, with the new node and its track edges in it (and its title's genres, where the graph has
playlist-genre edges). The trained weights then fit a model built for that graph, except that
the owner ID table has one row more: :func:`fit_state` gives the new row zeros, so the playlist
starts with no vector of its own and is represented by what its tracks send it (PlaylistGAT's
layers and its exact artist-affinity term both read those edges). A trained model is inductive
on the owner side in that sense; nothing is re-fitted.
"""
from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from engine.data.canonical import Dataset
from engine.errors import BadInput
from engine.graph.build import genre_vocabulary
from engine.graph.genres import title_genres
from engine.graph.split import Split

# spotify:track:ID, or an open.spotify.com/track/ID link (query string ignored)
_URI = re.compile(r"^\s*(?:spotify:track:|https?://open\.spotify\.com/(?:intl-[\w-]+/)?track/)"
                  r"([A-Za-z0-9]+)")


def read_track_list(path: str | Path) -> list[tuple[str, str]]:
    """A tracks file as ``(artist, track)`` pairs; a Spotify URI or link becomes
    ``("", "spotify:track:ID")``. The file is CSV or plain text: one ``artist,track`` pair or one
    URI per line; a first line ``artist,track`` (any case) is a header; blank lines are skipped.
    A missing, unreadable or empty file, or a line that is neither, is BadInput naming the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read the tracks file ({exc})") from None
    out: list[tuple[str, str]] = []
    for lineno, row in enumerate(csv.reader(text.splitlines()), 1):  # user input, not data rows
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        uri = _URI.match(cells[0])
        if uri:
            out.append(("", f"spotify:track:{uri.group(1)}"))
        elif len(cells) >= 2 and cells[0] and cells[1]:
            if not out and [c.lower() for c in cells[:2]] == ["artist", "track"]:
                continue  # header
            out.append((cells[0], ",".join(cells[1:]).strip()))
        else:
            raise BadInput(f"{path}, line {lineno}: expected 'artist,track' or a Spotify track "
                           f"URI, got {','.join(row)!r}")
    if not out:
        raise BadInput(f"{path}: no tracks listed (empty file)")
    return out


def match_tracks(ds: Dataset, entries: list[tuple[str, str]]) -> tuple[np.ndarray, list[str]]:
    """Track ids of ``entries`` in the dataset, in file order without repeats, and the entries it
    does not know (as ``"artist - track"`` or the URI). Pairs match artist and track names
    case-insensitively after trimming; URIs match the track key (MPD's ``track_uri``)."""
    q = pd.DataFrame(entries, columns=["artist", "track"])
    norm = lambda s: s.astype(str).str.strip().str.casefold()
    tracks = ds.tracks
    catalogue = pd.DataFrame({
        "artist": norm(ds.artists.name.astype(str).reindex(tracks.artist_id.to_numpy())
                       .fillna("").reset_index(drop=True)),
        "track": norm(tracks.name.reset_index(drop=True)),
        "track_id": tracks.track_id.to_numpy(np.int64)}).drop_duplicates(["artist", "track"])
    by_key = pd.DataFrame({"key": tracks.key.astype(str).to_numpy(),
                           "track_id": tracks.track_id.to_numpy(np.int64)}
                          ).drop_duplicates("key")
    is_uri = q.artist == ""
    pairs = pd.DataFrame({"artist": norm(q.artist), "track": norm(q.track)}).merge(
        catalogue, how="left", on=["artist", "track"])
    keys = pd.DataFrame({"key": q.track}).merge(by_key, how="left", on="key")
    ids = np.where(is_uri, keys.track_id.to_numpy(float), pairs.track_id.to_numpy(float))
    known = ~np.isnan(ids)
    unknown = np.where(is_uri, q.track, q.artist + " - " + q.track)[~known].tolist()
    found = ids[known].astype(np.int64)
    _, first = np.unique(found, return_index=True)
    return found[np.sort(first)], unknown


def usable_title(ds: Dataset, name: str, artist_genres: pd.DataFrame | None
                 ) -> tuple[str, list[str], list[str]]:
    """The title to give the new playlist so that the graph's genre nodes stay as trained:
    ``(title, genres used, genres named but unknown to the graph)``. A title naming a genre no
    training title names would add a genre node the weights do not have, so such a title is
    replaced by the known genres it names."""
    found, _, _ = title_genres(pd.Series([name]))
    vocab = set(genre_vocabulary(ds, artist_genres))
    known = [g for g in found if g in vocab]
    unknown = [g for g in found if g not in vocab]
    if not unknown:
        return name, known, []
    title = " ".join(known)
    if title_genres(pd.Series([title]))[0] != known:  # joined names must name the same genres
        return "", [], found
    return title, known, unknown


def with_new_owner(ds: Dataset, split: Split, track_ids: np.ndarray, name: str
                   ) -> tuple[Dataset, Split, int]:
    """``(ds, split, owner)`` with one more owner, ``owner = ds.num_owners``, whose training
    (message-passing) edges are ``track_ids`` in list order; its test and validation sets are
    empty. Session data gets one play at full completion per track."""
    owner = ds.num_owners
    row = {c: None for c in ds.owners.columns}
    row.update(owner_id=owner, key=f"new:{name}" if name else "new", name=name)
    owners = pd.concat([ds.owners, pd.DataFrame([row]).astype(ds.owners.dtypes.to_dict(),
                                                                errors="ignore")],
                       ignore_index=True)
    items = torch.from_numpy(np.asarray(track_ids, dtype=np.int64))
    new = torch.stack([torch.full_like(items, owner), items])
    weight = split.train_weight
    if weight is not None:
        weight = torch.cat([weight, torch.tensor([[float(np.log1p(1.0)), 1.0]]).to(weight.dtype)
                            .expand(items.numel(), -1)])
    split2 = dataclasses.replace(split, num_owners=owner + 1,
                                 train=torch.cat([split.train, new.to(split.train.dtype)], 1),
                                 train_weight=weight)
    return dataclasses.replace(ds, owners=owners), split2, owner


def fit_state(state: dict, model: torch.nn.Module, where: str, grow: int = 0
              ) -> dict[str, Tensor]:
    """``state`` checked against ``model``'s tensors, as a state dict it loads strictly. A
    tensor whose first dimension is exactly ``grow`` shorter (the owner ID table of a graph with
    ``grow`` new playlists) gets that many zero rows. Anything else that differs is BadInput
    naming the tensors: missing, unexpected, and shapes (saved vs. this model)."""
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise BadInput(f"{where}: not a model state dict (a checkpoint of weights)")
    for name, module in model.named_modules():  # tables with a saved row map take its rows
        if hasattr(module, "match_rows"):
            module.match_rows(state, f"{name}." if name else "")
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    out, differ = {}, []
    for k, target in want.items():
        if k not in state:
            continue
        have = state[k]
        if have.shape == target.shape:
            out[k] = have
        elif (grow and have.dim() == target.dim() >= 1 and have.shape[1:] == target.shape[1:]
              and target.shape[0] - have.shape[0] == grow):
            pad = have.new_zeros((target.shape[0] - have.shape[0], *have.shape[1:]))
            out[k] = torch.cat([have, pad])
        else:
            differ.append(f"{k} saved {list(have.shape)} vs {list(target.shape)}")
    problems = []
    if differ:
        problems.append("shapes differ: " + _some(differ))
    if missing:
        problems.append(f"missing {len(missing)}: " + _some(missing))
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: " + _some(unexpected))
    if problems:
        raise BadInput(f"{where}: does not fit this run's {type(model).__name__} "
                       f"(another model or configuration?); " + "; ".join(problems))
    return out


def _some(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")

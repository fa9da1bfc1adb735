"""Top-K recommendations from a finished run: one playlist with reasons, a new playlist, or all.

    python -m jobs.recommend --run runs/mini --playlist 12 [--top 10] [--check] [--max-per-artist 2]
    python -m jobs.recommend --run runs/mini --tracks my_tracks.csv [--name "chill evening"]
    python -m jobs.recommend --run runs/mini --all --top 50 --output recs.parquet

``--playlist`` is an owner id (0-based row of the run's dataset) or its key (Kaggle user id is not
unique, so use the id; MPD: the pid). ``--tracks`` lists a playlist the model never saw, one
``artist,track`` pair or Spotify track URI a line (engine.cold_start): it joins the graph as a new
node with its track edges, without retraining; tracks the run does not know are reported and
skipped. ``--all`` writes every owner's top K (owner id, rank, track, artist, score) to a parquet
file. Loads ``best_model.pt`` (``weights_only=True``) into the run's model on the graph of every
non-test edge, and ranks as the evaluation does (engine.models.rank_scores and its Ranker: own
tracks and non-candidates out, the same tie-break).
"""
from __future__ import annotations

import json
import os
import pickle
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import BadInput
from engine.training.config import TrainConfig, make_model
from jobs.cli import ArgumentParser, run_cli

if TYPE_CHECKING:  # torch, numpy and the engine's torch modules load after parsing
    import torch

KEY_HEAD = "key: score = {parts}, in the model's score units (only differences between picks matter)"
KEY_LINES = {  # printed for the parts and marks a list has
    "GAT": "dot product of the playlist's and the track's vectors from the graph-attention layers",
    "genre": "dot product of the genre path's vectors (models with genre_weight > 0)",
    "artist": "the model's exact artist term: a learnt weight x log(1 + the playlist's tracks by "
              "the pick's artist), plus a recency part for those near the end of the playlist",
    "kNN": "the model's exact item-kNN term: a learnt weight x log(1 + the pick's cosine "
           "item-kNN score, how often it shares a playlist with each of this playlist's tracks)",
    "like": "the playlist's own tracks whose vectors are closest to the pick's (cosine; 1 = same)",
    "drew on": "the pick's neighbours in the last attention layer and their weights; weights sum "
               "to 1 over each neighbour type, \"of n\" = how many neighbours of that type it has",
    "[held out]": "the pick is one of the playlist's held-out test tracks (--check)",
}
OTHER_PART = "the model's sparse score term (affinity of the listed node types)"


def _key(parts: list[str], check: bool) -> str:
    names = [*parts, "like", "drew on"] + (["[held out]"] if check else [])
    return "\n".join([KEY_HEAD.format(parts=" + ".join(parts))]
                     + [textwrap.fill(KEY_LINES.get(n, OTHER_PART), 100,
                                      initial_indent=f"  {n:<11}", subsequent_indent=" " * 13)
                        for n in names])


def _owner_id(ds, text: str) -> int:
    if text.isdigit() and int(text) < ds.num_owners:
        return int(text)
    hits = ds.owners.index[ds.owners.key.astype(str) == text]
    if len(hits) != 1:
        raise BadInput(f"--playlist {text!r}: no such owner id or unique key in the run's dataset "
                       f"(ids are 0..{ds.num_owners - 1})")
    return int(hits[0])


def load_run(run: Path) -> TrainConfig:
    """The config of a finished run folder; BadInput when it is not one."""
    if not run.is_dir():
        raise BadInput(f"{run}: no such run folder")
    try:
        return TrainConfig.from_saved(json.loads((run / "metrics.json").read_text())["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{run / 'metrics.json'}: not a finished run ({exc})") from None


def _checkpoint_file(ckpt: Path) -> None:
    if not ckpt.is_file():
        raise BadInput(f"{ckpt}: no such file (the run did not finish?)")
    if ckpt.stat().st_size == 0:
        raise BadInput(f"{ckpt}: empty file (0 bytes), not a checkpoint")


def load_weights(ckpt: Path, model: torch.nn.Module, grow: int = 0) -> None:
    """``ckpt`` into ``model`` (see :func:`engine.cold_start.fit_state`); every way it can fail
    is one BadInput line."""
    import torch

    from engine.cold_start import fit_state

    _checkpoint_file(ckpt)
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile,
            pickle.UnpicklingError) as exc:  # torn, or not a torch file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"{ckpt}: cannot be read as a checkpoint ({first})") from None
    model.load_state_dict(fit_state(state, model, str(ckpt), grow=grow))


def _parse(argv):
    p = ArgumentParser(prog="python -m jobs.recommend", description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True,
                   help="a finished run folder (has metrics.json; required)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--playlist", help="owner id or key (one of --playlist, --tracks, --all "
                       "is required)")
    which.add_argument("--tracks", help="file of artist,track pairs or Spotify track URIs "
                       "(a new playlist; one of --playlist, --tracks, --all is required)")
    which.add_argument("--all", action="store_true", help="every owner's top K (--output)")
    p.add_argument("--name", default="", help="--tracks: the new playlist's title, read for "
                   "genres (default: untitled)")
    p.add_argument("--top", type=int, default=10, help="how many picks")
    p.add_argument("--check", action="store_true",
                   help="--playlist: mark picks that are its held-out test tracks")
    p.add_argument("--max-per-artist", type=int, default=None,
                   help="re-rank so that no artist has more than N picks (default: no limit)")
    p.add_argument("--output", help="--all: the parquet file to write (required with --all)")
    p.add_argument("--no-progress", action="store_true",
                   help="--all: no progress bar (default: a bar on stderr)")
    args = p.parse_args(argv)
    if args.top < 1:
        raise BadInput(f"--top must be at least 1 (got {args.top})")
    if args.max_per_artist is not None and args.max_per_artist < 1:
        raise BadInput(f"--max-per-artist must be at least 1 (got {args.max_per_artist})")
    if args.all and not args.output:
        raise BadInput("--all needs --output FILE.parquet")
    if args.output and not args.all:
        raise BadInput("--output is for --all (lists of one playlist are printed)")
    if args.all and args.max_per_artist:
        raise BadInput("--max-per-artist applies to one playlist's list, not to --all")
    if args.name and not args.tracks:
        raise BadInput("--name is the title of a --tracks playlist")
    if args.check and not args.playlist:
        raise BadInput("--check needs --playlist (a new playlist has no held-out tracks)")
    if args.output and Path(args.output).suffix != ".parquet":
        raise BadInput(f"{args.output}: --output must end in .parquet")
    if args.output and not Path(args.output).parent.is_dir():
        raise BadInput(f"{Path(args.output).parent}: no such folder for --output")
    return args


def main(argv=None) -> int:
    args = _parse(argv)
    from engine.cold_start import match_tracks, read_track_list, usable_title, with_new_owner
    from engine.eval.evaluate import candidate_mask
    from engine.training.run_data import RunData

    run = Path(args.run)
    cfg = load_run(run)
    entries = read_track_list(args.tracks) if args.tracks else None  # bad files fail early
    _checkpoint_file(run / "best_model.pt")  # before the data is loaded and the graph built
    data = RunData.load(cfg)
    ds, split = data.ds, data.split
    if args.all:
        return _export(args, run, cfg, data)
    owner, note = None, ""
    # candidates and tie-break of the run's own split, also for a new playlist
    candidates = candidate_mask(split.train, split.num_items)
    if entries is not None:
        ids, unknown = match_tracks(ds, entries)
        if not ids.size:
            raise BadInput(f"{args.tracks}: none of its {len(entries)} tracks is in the run's "
                           f"dataset (e.g. {unknown[0]!r})")
        title, used, dropped = usable_title(ds, args.name, data.artist_genres)
        ds, split, owner = with_new_owner(ds, split, ids, title)
        data = RunData(cfg, ds, split, data.artist_genres)
        note = (f"new playlist {args.name or '(untitled)'!r} from {args.tracks}: {ids.size} of "
                f"{len(entries)} tracks known" + (f", title genres {', '.join(used)}" if used else "")
                + (f" (not in this graph: {', '.join(dropped)})" if dropped else ""))
        if unknown:
            note += (f"\nnot in the run's dataset, skipped ({len(unknown)}): "
                     + "; ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else ""))
    if owner is None:
        owner = _owner_id(ds, args.playlist)
    graph = data.graph("train")
    model = make_model(cfg, graph)
    load_weights(run / "best_model.pt", model, grow=int(entries is not None))
    _show(args, run, cfg, data, graph, model, owner, note, candidates)
    return 0


def _show(args, run, cfg, data, graph, model, owner: int, note: str, candidates) -> None:
    import numpy as np
    import torch

    from engine.eval.evaluate import Ranker
    from engine.explain import (
        attention_into,
        explain,
        genre_split,
        limit_per_group,
        ranked_rows,
        score_parts,
        vectors_with_attention,
    )
    from engine.graph.build import genre_vocabulary
    from engine.models import rank_scores, score_bias

    ds, split = data.ds, data.split
    vecs, attention = vectors_with_attention(model, graph)
    with torch.no_grad():
        bias = score_bias(model, graph.full())
    scores = rank_scores(vecs, bias, graph.owner_type, graph.item_type)
    ranker = Ranker(candidates, split.train, split.num_owners)
    item_artist = torch.from_numpy(ds.tracks.artist_id.to_numpy(np.int64))
    depth = ranker.order.numel() if args.max_per_artist else args.top
    (_, ranked, _, valid), = ranked_rows(scores, ranker, torch.tensor([owner]), depth)
    ranked = ranked[0][valid[0]]
    items = ranked[:args.top]
    if args.max_per_artist:
        items = limit_per_group(ranked, item_artist, args.max_per_artist, args.top)
    csr = graph.csr[graph.interaction]
    owned = csr.indices[csr.indptr[owner]:csr.indptr[owner + 1]]
    held = torch.zeros(0, dtype=torch.long)
    at = torch.searchsorted(split.test.owners, torch.tensor(owner))
    if at < len(split.test) and int(split.test.owners[at]) == owner:
        held = split.test.items[split.test.indptr[at]:split.test.indptr[at + 1]]

    names = ds.tracks.name.astype(str).to_numpy()
    artists = ds.artists.name.astype(str).to_numpy()
    label = lambda i: f"{artists[item_artist[i]]} - {names[i]}"
    node_names = {graph.owner_type: ds.owners.name.astype(str).to_numpy(), "artist": artists,
                  "genre": genre_vocabulary(ds, data.artist_genres), graph.item_type: names}
    shown = lambda t, i: label(i) if t == graph.item_type else node_names[t][i]
    affinity = "+".join(getattr(model, "affinity_types", None) or ["affinity"])
    parts = score_parts(vecs, bias, graph.owner_type, graph.item_type, owner, items,
                        genre_split(model, vecs), bias_name=affinity)
    total = sum(parts.values())

    if note:
        print(note)
    title = ds.owners.name.iloc[owner]
    who = f"new {graph.owner_type}" if note else f"{graph.owner_type} {owner}"
    print(f"{who} ({title!s}): {owned.numel()} training tracks"
          + (f", {held.numel()} held out for test" if held.numel() else "")
          + f"; model {cfg.model} from {run}")
    own_att = attention_into(attention, graph.owner_type, owner, top=3)
    if own_att:
        print("its vector drew most on: " + "; ".join(
            ", ".join(f"{t} '{shown(t, i)}' {w:.2f}" for i, w in pairs) + f" (of {n})"
            for t, (pairs, n) in own_att.items()))
    print(_key(list(parts), args.check))
    held_set = set(held.tolist())
    for rank, item in enumerate(items.tolist(), 1):
        why = explain(graph, vecs, attention, owner, item, owned, bias=bias)
        split_txt = " + ".join(f"{k} {float(v[rank - 1]):.3f}" for k, v in parts.items())
        mark = "  [held out]" if args.check and item in held_set else ""
        print(f"{rank:>3}. {label(item)}  score {float(total[rank - 1]):.3f} = {split_txt}{mark}")
        if why.similar_items:
            print("       like: " + "; ".join(f"{label(i)} ({s:.2f})" for i, s in why.similar_items))
        if why.drew_on:
            print("       drew on: " + "; ".join(
                ", ".join(f"{t} '{shown(t, i)}' {w:.2f}" for i, w in pairs) + f" (of {n})"
                for t, (pairs, n) in why.drew_on.items()))
    if args.check:
        hits = sum(i in held_set for i in items.tolist())
        print(f"check: {hits} of {items.numel()} picks are held-out test tracks of this playlist "
              f"({held.numel()} held out)")
    if args.max_per_artist:
        _say_diversity(ranked, items, args, label, item_artist, artists)


def _say_diversity(ranked, items, args, label, item_artist, artists) -> None:
    before = ranked[:args.top].tolist()
    after = set(items.tolist())
    dropped = [i for i in before if i not in after]
    if not dropped:
        print(f"diversity (--max-per-artist {args.max_per_artist}): no change, no artist had more "
              f"than {args.max_per_artist} of the top {args.top}")
        return
    per_artist: dict[str, int] = {}
    for i in dropped:
        name = artists[item_artist[i]]
        per_artist[name] = per_artist.get(name, 0) + 1
    rank_of = {int(i): r for r, i in enumerate(ranked.tolist(), 1)}
    brought = [rank_of[i] for i in items.tolist() if i not in set(before)]
    print(f"diversity (--max-per-artist {args.max_per_artist}): dropped {len(dropped)} of the top "
          f"{args.top} (" + ", ".join(f"{a} x{n}" for a, n in per_artist.items())
          + f"), brought in the picks ranked {', '.join(map(str, brought))} without the limit")


def _export(args, run, cfg, data) -> int:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from tqdm import tqdm

    from engine.eval.evaluate import Ranker, candidate_mask
    from engine.explain import ranked_rows
    from engine.models import score_fn

    ds, split = data.ds, data.split
    out = Path(args.output)
    t0 = time.perf_counter()
    graph = data.graph("train")
    model = make_model(cfg, graph)
    load_weights(run / "best_model.pt", model)
    scores = score_fn(model, graph)
    ranker = Ranker(candidate_mask(split.train, split.num_items), split.train, split.num_owners)
    names = ds.tracks.name.astype(str).to_numpy(object)
    artist_of = ds.tracks.artist_id.to_numpy(np.int64)
    artists = ds.artists.name.astype(str).to_numpy(object)
    owners = torch.arange(ds.num_owners)
    tmp = out.with_name(f".{out.name}.tmp")
    writer, rows = None, 0
    bar = tqdm(total=ds.num_owners, unit=graph.owner_type, desc="recommend", file=sys.stderr,
               disable=args.no_progress)
    try:
        for ids, top, val, valid in ranked_rows(scores, ranker, owners, args.top):
            rank = torch.arange(1, top.size(1) + 1).expand_as(top)
            who = ids.unsqueeze(1).expand_as(top)
            item = top[valid].numpy()
            table = pa.table({f"{graph.owner_type}_id": who[valid].numpy().astype(np.int32),
                              "rank": rank[valid].numpy().astype(np.int16),
                              "track_id": item.astype(np.int32), "track": names[item],
                              "artist": artists[artist_of[item]],
                              "score": val[valid].numpy().astype(np.float32)})
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            rows += table.num_rows
            bar.update(ids.numel())
        writer.close()
        os.replace(tmp, out)
    finally:
        bar.close()
        if tmp.exists():  # nothing half-written is left behind
            tmp.unlink()
    print(f"wrote {rows} rows ({ds.num_owners} {graph.owner_type}s x top {args.top}) to {out} "
          f"in {time.perf_counter() - t0:.1f} s (graph, inference, ranking, writing)")
    return 0


if __name__ == "__main__":
    try:
        run_cli(main)
    except BrokenPipeError:  # `... | head` closed the pipe: stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)

"""Top-K recommendations for one playlist (or user) of a finished run, with their reasons.

    python -m jobs.recommend --run runs/mini --playlist 12 [--top 10]

``--playlist`` is an owner id (0-based row of the run's dataset) or its key (Kaggle user id is not
unique, so use the id; MPD: the pid). Loads ``best_model.pt`` (``weights_only=True``), rebuilds the
graph from every non-test edge, and lists the playlist's best unseen candidates with: the most
similar tracks already in the playlist, and the neighbours the model attended to most.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.errors import BadInput
from engine.eval.evaluate import candidate_mask
from engine.explain import explain, recommend, vectors_with_attention
from engine.graph.build import genre_vocabulary
from engine.models import rank_scores, score_bias
from engine.training.config import TrainConfig, make_model
from engine.training.run_data import RunData
from jobs._cli import ArgumentParser, run_cli


def _owner_id(ds, text: str) -> int:
    if text.isdigit() and int(text) < ds.num_owners:
        return int(text)
    hits = ds.owners.index[ds.owners.key.astype(str) == text]
    if len(hits) != 1:
        raise BadInput(f"--playlist {text!r}: no such owner id or unique key in the run's dataset")
    return int(hits[0])


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m jobs.recommend", description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a finished run folder (has metrics.json)")
    p.add_argument("--playlist", required=True, help="owner id or key")
    p.add_argument("--top", type=int, default=10)
    args = p.parse_args(argv)
    run = Path(args.run)
    try:
        cfg = TrainConfig.from_dict(json.loads((run / "metrics.json").read_text())["config"])
    except (OSError, ValueError, KeyError) as exc:
        raise BadInput(f"{run / 'metrics.json'}: not a finished run ({exc})") from None
    data = RunData.load(cfg)
    ds, split, artist_genres = data.ds, data.split, data.artist_genres
    graph = data.graph("train")
    model = make_model(cfg, graph)
    ckpt = run / "best_model.pt"
    try:
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    except (OSError, RuntimeError) as exc:  # missing, torn, or from another model version
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"{ckpt}: cannot load into this run's model ({first})") from None
    vecs, attention = vectors_with_attention(model, graph)
    with torch.no_grad():
        bias = score_bias(model, graph.full())
    scores = rank_scores(vecs, bias, graph.owner_type, graph.item_type)

    owner = _owner_id(ds, args.playlist)
    csr = graph.csr[graph.interaction]
    owned = csr.indices[csr.indptr[owner]:csr.indptr[owner + 1]]
    items, top_scores = recommend(scores(torch.tensor([owner]))[0], owned,
                                  candidate_mask(split.train, split.num_items), args.top)
    names = ds.tracks.name.astype(str).to_numpy()
    artists = ds.artists.name.astype(str).to_numpy()[ds.tracks.artist_id.to_numpy()]
    label = lambda i: f"{artists[i]} - {names[i]}"
    node_names = {graph.owner_type: ds.owners.name.astype(str).to_numpy(),
                  "artist": ds.artists.name.astype(str).to_numpy(),
                  "genre": genre_vocabulary(ds, artist_genres), graph.item_type: names}
    print(f"{graph.owner_type} {owner} ({ds.owners.name.iloc[owner]!s}): {owned.numel()} "
          f"training tracks; model {cfg.model} from {run}")
    for rank, (item, score) in enumerate(zip(items.tolist(), top_scores.tolist()), 1):
        why = explain(graph, vecs, attention, owner, item, owned, bias=bias)
        part = f", artist affinity {why.bias:+.3f}" if bias is not None else ""
        print(f"{rank:>3}. {label(item)}  (score {score:.3f}{part})")
        if why.similar_items:
            print("       like: " + "; ".join(f"{label(i)} ({s:.2f})" for i, s in why.similar_items))
        if why.attention:
            print("       attended: " + "; ".join(f"{t} '{node_names[t][i]}' ({w:.2f})"
                                                for t, i, w in why.attention))
    return 0


if __name__ == "__main__":
    run_cli(main)

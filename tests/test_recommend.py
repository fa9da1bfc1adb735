"""jobs.recommend on a finished tiny run: score parts, new playlists, batch export, bad input."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from engine.explain import limit_per_group
from jobs import recommend as job
from jobs.cli import run_cli

PICK = re.compile(r"^\s*(\d+)\. (.+?)  score (-?[\d.]+) = (.+?)(  \[held out\])?$")


def picks(text: str) -> list[tuple[str, float, str, bool]]:
    """(label, score, parts, held out) of each printed pick."""
    out = []
    for line in text.splitlines():
        m = PICK.match(line)
        if m:
            out.append((m.group(2), float(m.group(3)), m.group(4), bool(m.group(5))))
    return out


def run_job(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert job.main(list(argv)) == 0
    return capsys.readouterr().out


def bad(capsys, *argv: str) -> str:
    """Run the CLI as ``python -m`` would; assert exit 2 and one stderr line; return it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_cli(job.main, list(argv))
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def run_data(tiny_run):
    from engine.training.run_data import RunData

    return RunData.load(job.load_run(tiny_run))


def test_score_parts_add_up_to_the_ranking_score(tiny_run, run_data, one_thread):
    from engine.explain import score_parts, vectors_with_attention
    from engine.models import rank_scores, score_bias
    from engine.training.config import make_model

    graph = run_data.graph("train")
    model = make_model(run_data.cfg, graph)
    job.load_weights(tiny_run / "best_model.pt", model)
    vecs, _ = vectors_with_attention(model, graph)
    bias = score_bias(model, graph.full())
    row = rank_scores(vecs, bias, graph.owner_type, graph.item_type)(torch.tensor([3]))[0]
    owned = set(run_data.split.train[1][run_data.split.train[0] == 3].tolist())
    items = torch.tensor([i for i in range(200) if i not in owned][:50])
    parts = score_parts(vecs, bias, graph.owner_type, graph.item_type, 3, items,
                        bias_name="artist")
    assert set(parts) == {"GAT", "artist", "kNN"}  # the defaults: both sparse terms
    assert parts["artist"].abs().max() > 0 and parts["kNN"].abs().max() > 0  # really there
    torch.testing.assert_close(sum(parts.values()), row[items], rtol=1e-5, atol=1e-5)


def test_one_playlist_lists_parts_key_check_and_diversity(tiny_run, run_data, capsys, one_thread):
    out = run_job(capsys, "--run", str(tiny_run), "--playlist", "3", "--top", "10")
    got = picks(out)
    assert len(got) == 10 and "key: score = GAT + artist + kNN" in out
    for _, score, parts, _ in got:  # the printed parts add up to the printed score
        total = sum(float(v) for v in re.findall(r"[A-Za-z+]+ (-?[\d.]+)", parts))
        assert abs(total - score) < 2e-3
    assert "drew on:" in out and "(of " in out and "its vector drew most on" in out

    # --check with every candidate listed: each held-out candidate is marked, nothing else
    split = run_data.split
    at = int(torch.searchsorted(split.test.owners, torch.tensor(3)))
    assert int(split.test.owners[at]) == 3
    held = split.test.items[split.test.indptr[at]:split.test.indptr[at + 1]]
    cand = torch.bincount(split.train[1], minlength=split.num_items) > 0
    ds = run_data.ds
    names = ds.tracks.name.astype(str).to_numpy()
    artists = ds.artists.name.astype(str).to_numpy()[ds.tracks.artist_id.to_numpy()]
    expect = sorted(f"{artists[i]} - {names[i]}" for i in held.tolist() if cand[i])
    assert expect, "the fixture's playlist 3 should hold out a candidate"
    out = run_job(capsys, "--run", str(tiny_run), "--playlist", "3", "--top", "5000", "--check")
    assert sorted(p[0] for p in picks(out) if p[3]) == expect
    assert f"check: {len(expect)} of " in out

    out = run_job(capsys, "--run", str(tiny_run), "--playlist", "3", "--max-per-artist", "1")
    labels = [p[0] for p in picks(out)]
    by_artist = pd.Series([lab.split(" - ")[0] for lab in labels]).value_counts()
    assert len(labels) == 10 and by_artist.max() == 1
    assert "diversity (--max-per-artist 1): " in out


def test_limit_per_group_keeps_rank_order():
    items = torch.tensor([5, 4, 3, 2, 1, 0])
    group = torch.tensor([0, 0, 1, 1, 0, 0])  # items 0, 1, 4, 5 share group 0
    assert limit_per_group(items, group, 1, 3).tolist() == [5, 3]
    assert limit_per_group(items, group, 2, 3).tolist() == [5, 4, 3]


def _tracks_file(tmp_path, run_data, owner: int, extra: list[str] = ()):
    ds, tr = run_data.ds, run_data.split.train
    items = tr[1][tr[0] == owner].numpy()
    artists = ds.artists.name.astype(str).to_numpy()[ds.tracks.artist_id.to_numpy()]
    rows = pd.DataFrame({"artist": artists[items], "track": ds.tracks.name.to_numpy()[items]})
    path = tmp_path / "tracks.csv"
    rows.to_csv(path, index=False)
    if extra:
        with path.open("a") as f:
            f.write("\n".join(extra) + "\n")
    return path, items


def test_new_playlist_of_a_training_playlists_tracks(tiny_run, run_data, tmp_path, capsys,
                                                     one_thread):
    owner = 3
    path, items = _tracks_file(tmp_path, run_data, owner,
                               ["Nobody Known,No Such Song", "spotify:track:0000000000000000000000"])
    out = run_job(capsys, "--run", str(tiny_run), "--tracks", str(path), "--name", "rock",
                  "--top", "10")
    assert f"{len(items)} of {len(items) + 2} tracks known" in out
    assert "skipped (2): Nobody Known - No Such Song; spotify:track:" in out
    cold = [p[0] for p in picks(out)]
    warm = [p[0] for p in picks(run_job(capsys, "--run", str(tiny_run), "--playlist",
                                        str(owner), "--top", "10"))]
    overlap = len(set(cold) & set(warm)) / 10
    # 0.9-1.0 (mean 0.98) over 12 playlists of a run made as this fixture is (zero ID row for
    # the new playlist, its tracks' edges and artists as the trained one's); the floor leaves room
    assert overlap >= 0.5, (overlap, cold, warm)
    own = set(pd.read_csv(path).iloc[:len(items)].agg(" - ".join, axis=1))
    assert not own & set(cold)  # its own tracks are never recommended back


def test_batch_export_rows_equal_the_single_playlist_lists(tiny_run, run_data, tmp_path, capsys,
                                                           one_thread):
    out = tmp_path / "recs.parquet"
    printed = run_job(capsys, "--run", str(tiny_run), "--all", "--top", "7", "--output",
                      str(out), "--no-progress")
    recs = pd.read_parquet(out)
    n = run_data.ds.num_owners
    assert f"wrote {len(recs)} rows" in printed and recs.playlist_id.nunique() == n
    assert list(recs.columns) == ["playlist_id", "rank", "track_id", "track", "artist", "score"]
    for owner in (0, 3, n - 1):
        single = picks(run_job(capsys, "--run", str(tiny_run), "--playlist", str(owner),
                               "--top", "7"))
        rows = recs[recs.playlist_id == owner].sort_values("rank")
        assert rows["rank"].tolist() == list(range(1, 8))
        assert (rows.artist + " - " + rows.track).tolist() == [p[0] for p in single]
        np.testing.assert_allclose(rows.score.to_numpy(), [p[1] for p in single], atol=6e-4)
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_inputs_are_exit_2_with_one_line(tiny_run, run_data, tmp_path, capsys, one_thread):
    r = str(tiny_run)
    assert "--top must be at least 1 (got -3)" in bad(capsys, "--run", r, "--playlist", "0",
                                                      "--top", "-3")
    assert "--top must be at least 1 (got 0)" in bad(capsys, "--run", r, "--playlist", "0",
                                                     "--top", "0")
    assert "no such run folder" in bad(capsys, "--run", str(tmp_path / "nope"), "--playlist", "0")
    assert "not a finished run" in bad(capsys, "--run", str(tmp_path), "--playlist", "0")
    assert "no such owner id" in bad(capsys, "--run", r, "--playlist", "99999")
    empty = tmp_path / "empty.csv"
    empty.write_text("artist,track\n\n")
    assert "no tracks listed (empty file)" in bad(capsys, "--run", r, "--tracks", str(empty))
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("Nobody,Nothing\nspotify:track:xyz\n")
    assert "none of its 2 tracks is in the run's dataset" in bad(capsys, "--run", r, "--tracks",
                                                                  str(unknown))
    assert "--all needs --output" in bad(capsys, "--run", r, "--all")
    assert "must end in .parquet" in bad(capsys, "--run", r, "--all", "--output",
                                         str(tmp_path / "recs.csv"))

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    (copy / "best_model.pt").write_bytes(b"")
    assert "empty file (0 bytes)" in bad(capsys, "--run", str(copy), "--playlist", "0")
    (copy / "best_model.pt").write_bytes(b"not a checkpoint")
    assert "cannot be read as a checkpoint" in bad(capsys, "--run", str(copy), "--playlist", "0")
    state = torch.load(tiny_run / "best_model.pt", weights_only=True)
    state["emb.playlist.weight"] = torch.zeros(5, 3)
    del state[next(k for k in state if k.startswith("layers."))]
    torch.save(state, copy / "best_model.pt")
    err = bad(capsys, "--run", str(copy), "--playlist", "0")
    assert "shapes differ: emb.playlist.weight saved [5, 3] vs [" in err
    assert "missing 1: layers." in err


def test_new_owner_joins_the_graph_with_its_edges_only(tiny_sessions, tiny_playlists):
    from engine.cold_start import usable_title, with_new_owner
    from engine.data.canonical import load_dataset
    from engine.graph.build import build_graph, genre_vocabulary
    from engine.graph.split import make_split
    from tests.test_split import SPLIT

    ds = load_dataset(tiny_sessions)
    split = make_split(ds, holdout=5, **SPLIT)
    ds2, split2, owner = with_new_owner(ds, split, np.array([7, 3, 5]), "")
    g, g2 = build_graph(ds, split, "train"), build_graph(ds2, split2, "train")
    assert owner == ds.num_owners and g2.num_nodes[g.owner_type] == owner + 1
    csr = g2.csr[g2.interaction]
    assert sorted(csr.indices[csr.indptr[owner]:].tolist()) == [3, 5, 7]
    assert g2.edge_index[g2.interaction].size(1) == g.edge_index[g.interaction].size(1) + 3
    assert g2.edge_attr[g2.interaction].size(0) == g2.edge_index[g2.interaction].size(1)
    assert len(split2.test) == len(split.test)  # nothing held out for the new owner

    # a title genre the graph has no node for is dropped, so the genre nodes stay as trained
    pl = load_dataset(tiny_playlists)
    vocab = genre_vocabulary(pl)
    assert "rock" in vocab and "bluegrass" not in vocab
    title, used, dropped = usable_title(pl, "rock and bluegrass", None)
    assert (title, used, dropped) == ("rock", ["rock"], ["bluegrass"])
    ds3, _, _ = with_new_owner(pl, make_split(pl, holdout=5, **SPLIT), np.array([0]), title)
    assert genre_vocabulary(ds3) == vocab

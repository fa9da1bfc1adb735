"""Synthetic data: determinism, canonical format, and the statistical shape of the model."""
from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.data.canonical import load_dataset
from engine.data.catalogue import GENRES, GroupedSampler
from engine.data.kaggle_writer import KAGGLE_HEADER, write_kaggle_csv
from engine.data.sessions import USER_TYPES, generate_sessions
from jobs.cli import run_cli
from jobs.generate import main as generate_main

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# Sessions
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sessions():
    return generate_sessions(num_users=2000, days=14, seed=7)


@pytest.fixture(scope="module")
def events(sessions):
    """Interactions joined with artist, genre, user type and in-session flags."""
    ev = sessions.interactions.copy()
    tracks = sessions.tracks
    ev["artist"] = tracks.artist_id.to_numpy()[ev.track_id]
    ev["genre"] = tracks.genre_id.to_numpy()[ev.track_id]
    ev["duration_ms"] = tracks.duration_ms.to_numpy()[ev.track_id]
    ev["user_type"] = sessions.owners.user_type.to_numpy()[ev.owner_id]
    same_user = ev.owner_id.to_numpy()[1:] == ev.owner_id.to_numpy()[:-1]
    gap = np.diff(ev.order.to_numpy()) - ev.ms_played.to_numpy()[:-1] // 1000
    # Tracks of one session follow 1-3 s apart; sessions are at least 5 minutes apart.
    ev["continues"] = np.concatenate(([False], same_user & (gap <= 3)))
    return ev


def test_canonical_format(sessions):
    sessions.validate()
    ev = sessions.interactions
    assert sessions.kind == "session"
    assert {c: str(t) for c, t in ev.dtypes.items()} == {
        "owner_id": "int32", "track_id": "int32", "order": "int64", "ms_played": "int32",
        "completion": "float32"}
    assert ev.completion.between(0, 1).all()
    assert sessions.owners.key.iloc[123] == "user_000123"
    assert sessions.tracks.key.iloc[42] == "song_00042"
    assert len(sessions.genres) == 35 and sessions.genres.name.is_unique
    per_artist = sessions.artist_genres.groupby("artist_id").size()
    assert per_artist.between(1, 3).all() and len(per_artist) == sessions.num_artists
    # Sorted by (owner, order), strictly increasing in time within a user.
    owner, order = ev.owner_id.to_numpy(), ev.order.to_numpy()
    assert (np.diff(owner) >= 0).all()
    assert (np.diff(order)[np.diff(owner) == 0] > 0).all()
    start = int(np.datetime64("2024-01-01", "s").astype(np.int64))
    assert order.min() >= start
    src = sessions.manifest["source"]
    assert src["generator"] == "synthetic_sessions" and src["seed"] == 7
    assert src["num_users"] == 2000 and src["days"] == 14


def test_genre_popularity_is_zipf_like(events):
    counts = np.sort(np.bincount(events.genre, minlength=len(GENRES)))[::-1]
    ranks = np.arange(1, len(counts) + 1)
    keep = counts > 0
    slope = np.polyfit(np.log(ranks[keep]), np.log(counts[keep]), 1)[0]
    assert -2.0 < slope < -0.6
    assert counts[0] > 5 * np.median(counts)


def test_user_type_shares(sessions):
    shares = sessions.owners.user_type.value_counts(normalize=True)
    for t in USER_TYPES:
        assert abs(shares[t.name] - t.share) < 0.04, (t.name, shares[t.name])


def test_power_users_listen_more(sessions, events):
    per_user = np.bincount(events.owner_id, minlength=sessions.num_owners)
    kind = sessions.owners.user_type.to_numpy()
    casual, regular, power = (per_user[kind == k].mean() for k in ("casual", "regular", "power"))
    assert power > 2 * regular > 2 * casual


def test_evening_peak_and_night_trough(events):
    hours = np.bincount((events.order.to_numpy() % 86400) // 3600, minlength=24)
    assert hours[19:23].mean() > 4 * hours[3:6].mean()


def test_skips_have_low_completion(events):
    # Spotify counts a stream from 30 s; shorter plays are skips.
    skip = events.ms_played < 30_000
    assert 0.1 < skip.mean() < 0.5
    assert events.completion[skip].mean() < 0.2
    assert events.completion[~skip].mean() > 0.8
    expected = np.round(events.duration_ms * events.completion.astype(np.float64))
    assert (np.abs(expected - events.ms_played) <= 1).all()
    by_type = events.assign(skip=skip).groupby("user_type").skip.mean()
    assert by_type["power"] > by_type["casual"]


def test_same_artist_continuation_above_base_rate(events):
    cont = events.continues.to_numpy()
    artist = events.artist.to_numpy()
    same = artist[1:][cont[1:]] == artist[:-1][cont[1:]]
    # Base rate: chance that two independent plays of one user share an artist, weighted like
    # the consecutive pairs.
    share = events.groupby(["owner_id", "artist"]).size() / events.groupby("owner_id").size()
    base_per_user = (share**2).groupby(level="owner_id").sum()
    pairs_per_user = events.loc[cont].groupby("owner_id").size()
    base = float(np.average(base_per_user[pairs_per_user.index], weights=pairs_per_user))
    assert same.mean() > base + 0.15, (same.mean(), base)


def test_plays_of_a_user_never_overlap(events):
    owner, order = events.owner_id.to_numpy(), events.order.to_numpy()
    ends = order[:-1] + events.ms_played.to_numpy()[:-1] // 1000
    assert (order[1:] > ends)[owner[1:] == owner[:-1]].all()
    assert (~events.continues).mean() < 0.3   # sessions of several tracks, not isolated plays


def test_grouped_sampler_matches_weights():
    rng = np.random.default_rng(0)
    groups = np.array([0, 0, 0, 2, 2])
    items = np.array([10, 11, 12, 20, 21])
    weights = np.array([1.0, 0.0, 3.0, 2.0, 2.0])
    sampler = GroupedSampler.build(groups, items, weights, num_groups=3)
    draws = sampler.sample(np.zeros(40_000, dtype=np.int64), rng)
    assert set(np.unique(draws)) == {10, 12}
    assert abs((draws == 12).mean() - 0.75) < 0.01
    assert set(np.unique(sampler.sample(np.full(1000, 2), rng))) == {20, 21}
    with pytest.raises(ValueError):
        sampler.sample(np.array([1]), rng)


def test_ten_thousand_users_for_thirty_days():
    ds = generate_sessions(num_users=10_000, days=30, seed=1)
    assert ds.num_owners == 10_000
    assert 1_000_000 < len(ds.interactions) < 20_000_000


def test_tiny_and_unbalanced_sizes():
    ds = generate_sessions(num_users=3, days=1, num_songs=5, num_artists=20, seed=3)
    ds.validate()
    ds = generate_sessions(num_users=1, days=2, num_songs=50, num_artists=1, seed=3)
    ds.validate()
    with pytest.raises(ValueError):
        generate_sessions(num_users=0)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_cli_sessions_are_byte_identical(tmp_path, capsys):
    args = ["sessions", "--users", "300", "--days", "7", "--songs", "800", "--artists", "90"]
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert generate_main([*args, "--seed", seed, "--output", str(tmp_path / name)]) == 0
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert "interactions.parquet" in a and "manifest.json" in a
    assert a == b
    assert a["interactions.parquet"] != c["interactions.parquet"]
    ds = load_dataset(tmp_path / "a")
    assert ds.num_owners == 300 and ds.manifest["source"]["seed"] == 5
    assert '"events"' in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["sessions", "--users", "0", "--output", "x"],
    ["sessions", "--start", "2024-13-01", "--output", "x"],
    ["kaggle", "--rows", "ten", "--output", "x.csv"],
    ["kaggle", "--output", "x.csv"],
    ["nonsense"],
])
def test_cli_bad_options_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(generate_main, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_refuses_to_clobber_unrelated_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exc:
        run_cli(generate_main, ["sessions", "--users", "5", "--output", str(tmp_path)])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_cli_entry_point_reports_bad_input_in_one_line(tmp_path):
    """The real ``python -m`` entry point: a folder given as the CSV output is refused."""
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.generate", "kaggle", "--rows", "10", "--output",
         str(tmp_path)], check=False, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and str(tmp_path) in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------
# Kaggle CSV
# ------------------------------------------------------------------------------------------------

ROWS = 100_000


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory):
    path = tmp_path_factory.mktemp("kaggle") / "spotify_dataset.csv"
    figures = write_kaggle_csv(path, ROWS, seed=11)
    return path, figures


@pytest.fixture(scope="module")
def kaggle_rows(kaggle):
    with open(kaggle[0], newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    frame = pd.DataFrame(rows, columns=["user_id", "artistname", "trackname", "playlistname"])
    return header, frame


def test_kaggle_exact_format(kaggle, kaggle_rows):
    path, figures = kaggle
    raw = path.read_bytes()
    lines = raw.decode("utf-8").split("\n")
    assert lines[0] + "\n" == KAGGLE_HEADER == (
        '"user_id", "artistname", "trackname", "playlistname"\n')
    assert lines[-1] == "" and len(lines) - 2 == ROWS == figures["rows"]
    # Every field quoted, comma separated, no space after the comma in data lines.
    field = r'"(?:[^"]|"")*"'
    pattern = re.compile(rf"^{field},{field},{field},{field}$")
    assert all(pattern.match(line) for line in lines[1:-1])
    header, frame = kaggle_rows
    assert len(frame) == ROWS and len(header) == 4
    assert frame.trackname.str.contains('"').any()        # doubled quotes parse back
    assert frame.trackname.str.contains(",").any()
    assert frame.user_id.str.fullmatch(r"[0-9a-f]{32}").all()
    assert not frame.map(lambda s: s != s.strip()).any().any()


def test_kaggle_figures_match_file(kaggle, kaggle_rows):
    _, figures = kaggle
    _, frame = kaggle_rows
    assert figures["users"] == frame.user_id.nunique()
    assert figures["playlists"] == len(frame.groupby(["user_id", "playlistname"]))
    assert figures["tracks"] == len(frame.groupby(["artistname", "trackname"]))


def test_kaggle_playlists_contiguous_and_sorted_by_track(kaggle_rows):
    _, frame = kaggle_rows
    key = frame.user_id + "\x00" + frame.playlistname
    changes = (key != key.shift()).sum()
    assert changes == key.nunique()                          # each playlist is one block
    assert (frame.user_id != frame.user_id.shift()).sum() == frame.user_id.nunique()
    same = (key == key.shift()).to_numpy()[1:]
    names = frame.trackname.to_numpy()
    assert all(a <= b for a, b in zip(names[:-1][same], names[1:][same]))


def test_kaggle_heavy_tailed_shape(kaggle_rows):
    _, frame = kaggle_rows
    lengths = frame.groupby(["user_id", "playlistname"], sort=False).size()
    assert 15 <= lengths.median() <= 60
    assert lengths.mean() > 1.5 * lengths.median()
    assert lengths.max() > 10 * lengths.median()
    assert frame.groupby("user_id").playlistname.nunique().mean() > 3
    plays = frame.groupby(["artistname", "trackname"]).size().sort_values(ascending=False)
    assert plays.iloc[0] > 50 * plays.median()                # Zipf-like track popularity
    assert frame.groupby("artistname").trackname.nunique().max() > 20
    dup = frame.duplicated(["user_id", "playlistname", "artistname", "trackname"]).mean()
    assert dup < 0.02


def test_kaggle_titles_carry_genre_signal(kaggle_rows):
    """Playlists titled with the same genre word share clearly more artists than playlists with
    different genre words, so title words are informative about content."""
    _, frame = kaggle_rows
    words = ("rock", "pop", "jazz", "country", "metal", "indie", "hip hop", "reggae", "folk",
             "punk", "blues", "house", "techno", "soul", "funk", "chill", "classical")
    playlists = frame.groupby(["user_id", "playlistname"]).artistname.agg(frozenset)
    titles = playlists.index.get_level_values(1).str.lower()
    label = pd.Series(pd.NA, index=range(len(titles)), dtype=object)
    for w in words:
        label[np.asarray(titles.str.contains(rf"\b{re.escape(w)}\b", regex=True))] = w
    tagged = label.notna().to_numpy()
    assert tagged.mean() > 0.3
    sets, lab = playlists.to_numpy()[tagged], label.to_numpy()[tagged]
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(sets), size=(2, 20_000))
    keep = i != j
    overlap = np.array([len(sets[a] & sets[b]) / min(len(sets[a]), len(sets[b]))
                        for a, b in zip(i[keep], j[keep])])
    same = lab[i[keep]] == lab[j[keep]]
    assert overlap[same].mean() > 1.8 * overlap[~same].mean()


def test_kaggle_is_deterministic_and_chunking_is_safe(tmp_path, kaggle):
    path, _ = kaggle
    again = tmp_path / "again.csv"
    written = []
    figures = write_kaggle_csv(again, ROWS, seed=11, progress=written.append)
    assert again.read_bytes() == path.read_bytes()
    assert sum(written) == ROWS == figures["rows"]
    other = tmp_path / "other.csv"
    write_kaggle_csv(other, ROWS, seed=12)
    assert other.read_bytes() != path.read_bytes()
    small = tmp_path / "small.csv"
    written.clear()
    write_kaggle_csv(small, 5_000, seed=3, chunk_rows=700, progress=written.append)
    assert len(written) > 3 and sum(written) == 5_000
    assert small.read_text().count("\n") == 5_001
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.csv", "other.csv", "small.csv"]


def test_kaggle_failure_leaves_nothing(tmp_path):
    def boom(_: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        write_kaggle_csv(tmp_path / "x.csv", 2_000, progress=boom)
    assert list(tmp_path.iterdir()) == []


def test_kaggle_cli_writes_atomically(tmp_path, capsys):
    out = tmp_path / "sub" / "spotify_dataset.csv"
    assert generate_main(["kaggle", "--rows", "777", "--seed", "2", "--output", str(out)]) == 0
    assert out.read_text().count("\n") == 778
    assert [p.name for p in out.parent.iterdir()] == ["spotify_dataset.csv"]
    assert '"playlists"' in capsys.readouterr().out

"""Readers against the real sample files in ../shared/data, checked with independent code.

Expected figures are recomputed here with the csv/json modules (slow, obvious Python) rather than
copied from the readers, so a bug in the vectorised code cannot agree with itself.
"""

from __future__ import annotations

import ast
import csv
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.data.canonical import Dataset
from engine.data.features import FEATURES, join_track_features, read_track_features
from engine.data.kaggle import read_kaggle_csv
from engine.data.load import detect_format, load_any
from engine.data.mpd import read_mpd, read_mpd_csv
from engine.errors import BadInput

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KAGGLE = DATA / "kaggle"
MPD = DATA / "mpd"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is missing")
FAST = settings(
    max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def dict_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def expected_playlists(rows: list[list[str]]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(user, playlist) -> distinct (artist, track) in first-seen order, the slow obvious way."""
    out: dict[tuple[str, str], dict[tuple[str, str], None]] = {}
    for user, artist, track, title in rows:
        if track.strip():
            out.setdefault((user, title), {}).setdefault((artist.strip(), track.strip()), None)
    return {k: list(v) for k, v in out.items()}


def actual_playlists(ds: Dataset) -> dict[tuple[str, str], list[tuple[str, str]]]:
    inter = ds.interactions.sort_values(["owner_id", "order"])
    artist = ds.artists.name.to_numpy()[ds.tracks.artist_id.to_numpy()].tolist()
    owners = list(zip(ds.owners.key.tolist(), ds.owners.name.tolist()))
    names = ds.tracks.name.tolist()
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for o, t in zip(inter.owner_id.tolist(), inter.track_id.tolist()):
        out.setdefault(owners[o], []).append((artist[t], names[t]))
    return out


# --- Kaggle playlists -------------------------------------------------------------------------


@needs_data
def test_kaggle_head10k_exact():
    path = KAGGLE / "spotify_dataset.head10k.csv"
    rows = csv_rows(path)[1:]
    ds = read_kaggle_csv(path)
    expected = expected_playlists(rows)
    assert len({r[0] for r in rows}) == 6 and ds.manifest["notes"]["users"] == 6
    assert ds.num_owners == len(expected) == 41
    assert ds.num_tracks == len({(r[1].strip(), r[2].strip()) for r in rows}) == 8639
    assert ds.num_artists == len({r[1].strip() for r in rows}) == 2941
    assert len(ds.interactions) == sum(map(len, expected.values())) == 9999
    assert ds.manifest["notes"]["rows_read"] == len(rows) == 9999
    assert (
        ds.manifest["notes"]["empty_artist_name_rows"] == sum(not r[1].strip() for r in rows) == 8
    )
    assert ds.manifest["dropped"] == {
        "wrong_field_count": 0,
        "empty_track_name": 0,
        "duplicate_in_playlist": 0,
    }
    assert actual_playlists(ds) == expected
    assert list(actual_playlists(ds)) == list(expected)  # owners in first-seen order
    assert "" in set(ds.artists.name)
    assert ds.tracks.key[0] == "Elvis Costello\x1f(The Angels Wanna Wear My) Red Shoes"


@needs_data
def test_kaggle_sample500_parses():
    path = KAGGLE / "spotify_dataset.sample500.csv"
    rows = csv_rows(path)[1:]
    ds = read_kaggle_csv(path)
    assert (ds.num_owners, ds.num_tracks, len(ds.interactions)) == (492, 498, 500)
    assert actual_playlists(ds) == expected_playlists(rows)


def test_kaggle_quirks(tmp_path):
    """Original quoted header, CRLF, bad field counts, trimming, duplicates, non-contiguous rows."""
    text = (
        '"user_id", "artistname", "trackname", "playlistname"\r\n'
        '"u1","A","t1","P"\r\n'
        '"u1"," A ","t1 ","P"\r\n'  # same track after trimming: duplicate
        '"u1","B, the","say ""hi""","P"\r\n'
        '"u2","","t2","P"\r\n'  # empty artist is its own artist
        '"u1","A","t3","Q"\r\n'
        '"u1","A","  ","P"\r\n'  # empty track name: dropped
        '"u1","A","t4","P","extra"\r\n'  # wrong field count: skipped
        '"u1","A"\r\n'
        '"u1","C","t5","P"\r\n'  # back to playlist (u1, P)
        '"u1","C","two\r\nlines","P"\r\n'  # a quoted value may span lines
    )
    path = tmp_path / "k.csv"
    path.write_bytes(text.encode())
    ds = read_kaggle_csv(path)
    assert ds.manifest["dropped"] == {
        "wrong_field_count": 2,
        "empty_track_name": 1,
        "duplicate_in_playlist": 1,
    }
    assert ds.manifest["notes"]["rows_read"] == 10
    assert actual_playlists(ds) == {
        ("u1", "P"): [("A", "t1"), ("B, the", 'say "hi"'), ("C", "t5"), ("C", "two\r\nlines")],
        ("u2", "P"): [("", "t2")],
        ("u1", "Q"): [("A", "t3")],
    }
    assert ds.interactions.order.tolist() == [0, 1, 2, 3, 0, 0]


# --- audio features ---------------------------------------------------------------------------


def norm(s: str) -> str:
    return " ".join(s.lower().split())


@needs_data
def test_track_features_sample1k():
    path = KAGGLE / "tracks_features.sample1k.csv"
    rows = dict_rows(path)
    df = read_track_features(path)
    assert len(df) == len(rows) == 1000
    assert df.artist.tolist() == [ast.literal_eval(r["artists"])[0] for r in rows]
    for f in FEATURES:
        assert df[f].dtype == np.float32
        np.testing.assert_array_equal(df[f].to_numpy(), np.array([r[f] for r in rows], np.float32))
    assert df.attrs["source"]["path"] == path.name


def dataset_of_tracks(names: list[str], artists: list[str]) -> Dataset:
    art, art_id = np.unique(np.array(artists, dtype=object), return_inverse=True)
    n = len(names)
    return Dataset(
        "playlist",
        owners=pd.DataFrame({"owner_id": np.zeros(1, np.int32), "key": ["o"], "name": ["o"]}),
        tracks=pd.DataFrame(
            {
                "track_id": np.arange(n, dtype=np.int32),
                "key": [str(i) for i in range(n)],
                "name": names,
                "artist_id": art_id.astype(np.int32),
            }
        ),
        artists=pd.DataFrame({"artist_id": np.arange(len(art), dtype=np.int32), "name": list(art)}),
        interactions=pd.DataFrame(
            {
                "owner_id": np.zeros(n, np.int32),
                "track_id": np.arange(n, dtype=np.int32),
                "order": np.arange(n, dtype=np.int64),
            }
        ),
    )


@needs_data
def test_join_features_match_rate():
    path = KAGGLE / "tracks_features.sample1k.csv"
    rows = dict_rows(path)
    feats = read_track_features(path)
    # 600 real tracks (respelled: case and whitespace must not matter) + 150 that match nothing
    names = ["  " + r["name"].upper() for r in rows[:600]] + [
        f"no such song {i}" for i in range(150)
    ]
    artists = [ast.literal_eval(r["artists"])[0] + " " for r in rows[:600]] + ["nobody"] * 150
    ds = join_track_features(dataset_of_tracks(names, artists), feats)
    first_row: dict[tuple[str, str], dict] = {}
    for r in rows:
        first_row.setdefault((norm(r["name"]), norm(ast.literal_eval(r["artists"])[0])), r)
    hits = [i for i, (n, a) in enumerate(zip(names, artists)) if (norm(n), norm(a)) in first_row]
    assert len(hits) == 600
    assert ds.manifest["notes"]["feature_match_rate"] == round(600 / 750, 6) == 0.8
    assert ds.track_features.track_id.tolist() == hits
    assert ds.track_features.dtypes.track_id == np.int32
    r = first_row[(norm(names[5]), norm(artists[5]))]
    assert ds.track_features.loc[5, "tempo"] == np.float32(r["tempo"])
    assert ds.manifest["source"]["features"]["path"] == path.name


@needs_data
def test_join_features_on_kaggle_head():
    rows = dict_rows(KAGGLE / "tracks_features.sample1k.csv")
    keys = {(norm(r["name"]), norm(ast.literal_eval(r["artists"])[0])) for r in rows}
    kag = csv_rows(KAGGLE / "spotify_dataset.head10k.csv")[1:]
    tracks = {(r[2].strip(), r[1].strip()) for r in kag}
    expected = sum((norm(t), norm(a)) in keys for t, a in tracks)
    ds = load_any(
        KAGGLE / "spotify_dataset.head10k.csv", features=KAGGLE / "tracks_features.sample1k.csv"
    )
    assert len(ds.track_features) == expected == 2
    assert ds.manifest["notes"]["feature_match_rate"] == round(expected / len(tracks), 6)


# --- MPD --------------------------------------------------------------------------------------


@needs_data
def test_mpd_slices_exact():
    files = sorted((MPD / "slices").glob("mpd.slice.*.json"))
    playlists = [p for f in files for p in json.loads(f.read_text("utf-8"))["playlists"]]
    entries = sum(len(p["tracks"]) for p in playlists)
    distinct = sum(len({t["track_uri"] for t in p["tracks"]}) for p in playlists)
    ds = read_mpd(MPD / "slices", progress=False)
    assert ds.num_owners == len(playlists) == 2697
    assert ds.manifest["notes"]["entries_read"] == entries == 260310
    assert len(ds.interactions) == distinct == 256475
    assert ds.manifest["dropped"]["duplicate_in_playlist"] == entries - distinct == 3835
    assert ds.num_tracks == len({t["track_uri"] for p in playlists for t in p["tracks"]}) == 105622
    assert sorted(ds.owners.key.astype(int)) == sorted(p["pid"] for p in playlists)
    assert ds.manifest["source"]["data"]["files"] == 466
    assert ds.owners.key[0] == "0" or ds.owners.key[0] == str(
        json.loads(files[0].read_text("utf-8"))["playlists"][0]["pid"]
    )


@needs_data
def test_mpd_head29_with_all_fields():
    raw = json.loads((MPD / "mpd.slice.0-999.head29.json").read_text("utf-8"))["playlists"]
    ds = read_mpd(MPD / "mpd.slice.0-999.head29.json")
    assert ds.num_owners == 29
    assert ds.manifest["notes"]["entries_read"] == sum(len(p["tracks"]) for p in raw) == 1448
    assert ds.manifest["notes"]["num_tracks_mismatch"] == 1
    assert ds.manifest["dropped"]["duplicate_in_playlist"] == 17
    first = ds.interactions[ds.interactions.owner_id == 0].sort_values("order")
    uris = list(
        dict.fromkeys(t["track_uri"] for t in sorted(raw[0]["tracks"], key=lambda t: t["pos"]))
    )
    assert ds.tracks.key.to_numpy()[first.track_id].tolist() == uris
    assert ds.num_artists == len({t["artist_uri"] for p in raw for t in p["tracks"]})


def test_mpd_optional_fields(tmp_path):
    tracks = [
        {"pos": 2, "track_uri": "t:c", "track_name": "C", "artist_name": "X"},
        {"pos": 0, "track_uri": "t:a", "track_name": "A", "artist_name": "X", "artist_uri": "a:x"},
        {"pos": 1, "track_uri": "t:b", "track_name": "B", "artist_name": "Y"},
        {"pos": 3, "track_uri": "t:a", "track_name": "A", "artist_name": "X", "artist_uri": "a:x"},
    ]
    other = [{"track_uri": "t:b"}, {"track_uri": "t:d", "artist_name": "Y"}]  # no pos: list order
    doc = {"playlists": [{"pid": 7, "name": "mix", "tracks": tracks}, {"pid": 8, "tracks": other}]}
    (tmp_path / "mpd.slice.0-1.json").write_text(json.dumps(doc))
    ds = read_mpd(tmp_path)
    assert ds.owners[["key", "name"]].values.tolist() == [["7", "mix"], ["8", ""]]
    assert ds.tracks.key.tolist() == ["t:c", "t:a", "t:b", "t:d"]
    inter = ds.interactions
    assert ds.tracks.key.to_numpy()[inter.track_id].tolist() == ["t:a", "t:b", "t:c", "t:b", "t:d"]
    assert inter.order.tolist() == [0, 1, 2, 0, 1]
    assert ds.manifest["dropped"]["duplicate_in_playlist"] == 1
    # artist by uri when present, else by name: X (name, first seen on t:c), a:x, Y
    assert ds.artists.name.tolist() == ["X", "X", "Y"]
    assert ds.tracks.artist_id.tolist() == [0, 1, 2, 2]


@needs_data
def test_mpd_csv_sample50():
    rows = dict_rows(MPD / "mpd_sample50.csv")
    pairs = [(r["pid"], r["track_uri"]) for r in rows]
    ds = read_mpd_csv(MPD / "mpd_sample50.csv")
    assert ds.num_owners == len({r["pid"] for r in rows}) == 50
    assert ds.num_tracks == len({r["track_uri"] for r in rows}) == 1891
    assert ds.manifest["dropped"]["duplicate_in_playlist"] == len(pairs) - len(set(pairs)) == 97
    assert ds.manifest["notes"]["duplicated_pairs"] == 93  # the README's "93 duplicated" pairs
    assert len(ds.interactions) == len(set(pairs)) == 4902
    assert ds.owners.key.tolist() == list(dict.fromkeys(r["pid"] for r in rows))


# --- detection and bad input ------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize(
    "path, fmt",
    [
        ("kaggle/spotify_dataset.head10k.csv", "kaggle"),
        ("kaggle/spotify_dataset.sample500.csv", "kaggle"),
        ("mpd/slices", "mpd"),
        ("mpd/mpd.slice.0-999.head29.json", "mpd"),
        ("mpd/mpd_sample50.csv", "mpd_csv"),
    ],
)
def test_detect_format(path, fmt):
    assert detect_format(DATA / path) == fmt


@needs_data
def test_features_file_is_not_a_dataset():
    with pytest.raises(BadInput, match="audio-features file"):
        detect_format(KAGGLE / "tracks_features.sample1k.csv")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("k.csv", b"", "empty file"),
        ("k.csv", b"a,b,c\n1,2,3\n", "unknown format"),
        ("k.csv", b'user_id,"artistname","trackname","playlistname"\n', "no data rows"),
        (
            "k.csv",
            b"user_id,artistname,trackname,playlistname\nu,a,\xe9t,p\n",
            r"not UTF-8 \(byte 0xe9 at offset 46\)",
        ),
        (
            "k.csv",
            b"user_id,artistname,trackname,playlistname\nu,a,,p\n",
            "no usable playlist rows",
        ),
        ("s.json", b'{"playlists": [{"pid": 1, "tracks": [', "line 1 column 38"),
        ("s.json", b'{"info": {}}', 'no "playlists" list'),
        (
            "s.json",
            b'{"playlists": [{"pid": 1, "tracks": [{"track_uri": 5}]}]}',
            r"playlists\[0\]\.tracks\[0\]",
        ),
        (
            "s.json",
            b'{"playlists": [{"pid": 1, "tracks": []}, {"tracks": []}]}',
            r"playlists\[1\]: pid",
        ),
        (
            "s.json",
            b'{"playlists": [{"pid": 1, "tracks": [{"track_uri": "t"}]}, {"pid": 1, "tracks": []}]}',
            "pid 1 appears twice",
        ),
        ("s.json", b'\xff{"playlists": []}', "not UTF-8"),
    ],
)
def test_bad_input(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadInput, match=message) as exc:
        load_any(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_bad_input_missing_and_unknown(tmp_path):
    with pytest.raises(BadInput, match="no such file"):
        load_any(tmp_path / "nope.csv")
    with pytest.raises(BadInput, match="neither a prepared dataset"):
        load_any(tmp_path)
    with pytest.raises(BadInput, match="unknown format 'xml'"):
        load_any(tmp_path, fmt="xml")
    with pytest.raises(BadInput, match="header lacks column"):
        read_kaggle_csv(_write(tmp_path / "x.csv", b"user_id,trackname\nu,t\n"))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- property tests: broken input gives a Dataset or BadInput, nothing else -------------------


def _outcome(data: bytes, suffix: str, reader) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"input{suffix}"
        path.write_bytes(data)
        try:
            ds = reader(path)
        except BadInput as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
        else:
            assert isinstance(ds, Dataset)
            ds.validate()


@FAST
@given(st.binary(max_size=400))
def test_random_bytes(data):
    _outcome(b"user_id,artistname,trackname,playlistname\n" + data, ".csv", read_kaggle_csv)
    _outcome(data, ".csv", load_any)
    _outcome(data, ".json", read_mpd)


@needs_data
@FAST
@given(st.data())
def test_truncated_files(data):
    kaggle = (KAGGLE / "spotify_dataset.sample500.csv").read_bytes()
    mpd = (MPD / "mpd.slice.0-999.head29.json").read_bytes()
    _outcome(kaggle[: data.draw(st.integers(0, len(kaggle)))], ".csv", load_any)
    _outcome(mpd[: data.draw(st.integers(0, len(mpd)))], ".json", load_any)


@FAST
@given(st.lists(st.text(max_size=12), max_size=6), st.lists(st.text(max_size=8), max_size=6))
def test_random_header(names, row):
    header = ",".join(names).encode("utf-8", "surrogatepass")
    body = ",".join(row).encode("utf-8", "surrogatepass")
    _outcome(header + b"\n" + body + b"\n", ".csv", load_any)
    _outcome(
        b"user_id,artistname,trackname,playlistname," + header + b"\n" + body, ".csv", load_any
    )

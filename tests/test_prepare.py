"""``python -m jobs.prepare``: round trips to equal tables, determinism, and the bad-input contract
(exit 2, one stderr line naming the file, no traceback, no output folder)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from engine.data.canonical import load_dataset
from engine.data.load import load_any
from jobs.prepare import main

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is missing")


def prepare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.prepare", *args],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_same_tables(a, b) -> None:
    assert a.tables().keys() == b.tables().keys()
    for name, table in a.tables().items():
        pd.testing.assert_frame_equal(table, b.tables()[name], check_dtype=True, obj=name)


@needs_data
@pytest.mark.parametrize(
    "raw",
    [
        "kaggle/spotify_dataset.head10k.csv",
        "kaggle/spotify_dataset.sample500.csv",
        "mpd/mpd.slice.0-999.head29.json",
        "mpd/mpd_sample50.csv",
    ],
)
def test_round_trip_equal_tables(tmp_path, capsys, raw):
    out = tmp_path / "prepared"
    assert main(["--data", str(DATA / raw), "--output", str(out)]) == 0
    assert f"prepared {out}" in capsys.readouterr().out
    direct, loaded = load_any(DATA / raw), load_dataset(out)
    assert_same_tables(direct, loaded)
    for key in ("kind", "source", "dropped", "notes"):
        assert loaded.manifest[key] == direct.manifest.get(key, direct.kind)
    assert loaded.manifest["rows"] == {n: len(t) for n, t in direct.tables().items()}
    assert_same_tables(load_any(out), loaded)  # a prepared folder is itself a valid --data


@needs_data
def test_cli_with_features_is_deterministic(tmp_path):
    args = [
        "--data",
        str(DATA / "mpd/slices"),
        "--features",
        str(DATA / "kaggle/tracks_features.sample1k.csv"),
    ]
    first = prepare(*args, "--output", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    assert "audio features: 21 of 105,622 tracks matched (0.02%)" in first.stdout
    assert "duplicate_in_playlist 3,835" in first.stdout
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["notes"]["entries_read"] == 260310
    assert manifest["rows"]["track_features"] == 21
    assert main([*args, "--output", str(tmp_path / "b")]) == 0
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    "missing": (lambda d: d / "nope.csv", "no such file"),
    "empty": (lambda d: write(d / "empty.csv", b""), "empty file"),
    "header": (lambda d: write(d / "h.csv", b"user_id,trackname\nu,t\n"), "unknown format"),
    "utf8": (
        lambda d: write(d / "u.csv", b"user_id,artistname,trackname,playlistname\nu,\xff,t,p\n"),
        r"not UTF-8 (byte 0xff at offset 44)",
    ),
    "truncated json": (
        lambda d: write(d / "mpd.slice.0-9.json", b'{"playlists": [{"pid": 0, "tr'),
        "line 1 column 27",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2(tmp_path, case):
    make, message = BAD_INPUTS[case]
    data = make(tmp_path)
    out = tmp_path / "out"
    r = prepare("--data", str(data), "--output", str(out))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and str(data) in r.stderr and message in r.stderr
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


@needs_data
@pytest.mark.parametrize("case", ["under a file", "not a dataset"])
def test_unwritable_output_exits_2_before_reading(tmp_path, case):
    blocker = write(tmp_path / "file", b"x")
    out = blocker / "sub" if case == "under a file" else tmp_path
    r = prepare("--data", str(DATA / "kaggle/spotify_dataset.sample500.csv"), "--output", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and str(out) in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_bad_option_exits_2(tmp_path):
    r = prepare("--data", "x", "--output", str(tmp_path / "o"), "--format", "xml")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr

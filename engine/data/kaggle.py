"""Reader for the Kaggle "Spotify Playlists" file (``spotify_dataset.csv``, 12.9M rows).

One row is one (user, artist, track, playlist) entry. A playlist is (user_id, playlistname) and a
track is (artistname, trackname) after trimming whitespace (see ``PROTOCOL.md``). The file is
parsed by pyarrow's multithreaded CSV reader and every later step works on integer codes, so the
full file is read in seconds and well under 6 GB: there is no per-row Python.

Quirks handled: header spelled several ways (original ``"user_id", "artistname", ...`` or
re-quoted by pandas, each name wrapped in doubled quotes), CRLF line ends, commas and quotes inside
quoted fields, rows with a wrong field count (skipped, counted), empty artist names (kept as the
artist ``""``), empty track names (dropped, counted), a playlist's rows not being contiguous.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.data._codes import dict_codes, pair_codes, recode
from engine.data._files import (
    DICT,
    check_file,
    read_csv_columns,
    read_header,
    require_columns,
    source_entry,
)
from engine.data._ingest import playlist_dataset, require_rows
from engine.data.canonical import Dataset

COLUMNS = ("user_id", "artistname", "trackname", "playlistname")
TRACK_KEY_SEP = "\x1f"


def read_kaggle_csv(path: str | Path) -> Dataset:
    """Read a Kaggle ``spotify_dataset.csv`` into a kind="playlist" Dataset.

    ``manifest["dropped"]`` counts ``wrong_field_count``, ``empty_track_name`` and
    ``duplicate_in_playlist`` rows; ``manifest["notes"]`` holds the raw figures (``rows_read``,
    ``users``, ``empty_artist_name_rows``). Bad input raises BadInput naming the file.
    """
    p = check_file(path)
    header = read_header(p)
    require_columns(p, header, COLUMNS)
    table, wrong = read_csv_columns(p, header, {c: DICT for c in COLUMNS})
    rows_parsed = table.num_rows
    # The sha256 of the source overlaps everything below (after the parse, which uses every core).
    source = source_entry(p)

    # Unifying the per-block dictionaries and hashing pairs release the GIL, so the track side
    # and the playlist side run on parallel threads (the owner job is queued last: it never waits
    # for a job that has not started).
    with ThreadPoolExecutor(min(3, os.cpu_count() or 1)) as pool:
        artist_job = pool.submit(_trimmed_codes, table["artistname"])
        name_job = pool.submit(_trimmed_codes, table["trackname"])
        owner_job = pool.submit(_owner_codes, table["user_id"], table["playlistname"])
        artists, artist_dict = artist_job.result()
        names, name_dict = name_job.result()
        keep = _not_code_of(names, name_dict, "")
        empty_tracks = int(len(keep) - keep.sum())
        if empty_tracks:
            artists, names = artists[keep], names[keep]
        track_codes, track_first = pair_codes(artists, names, len(name_dict))
        users, user_dict, titles, title_dict, owner_codes, owner_first = owner_job.result()
    del table
    if empty_tracks:  # rare: playlists are defined by the rows that are kept
        users, titles = users[keep], titles[keep]
        owner_codes, owner_first = pair_codes(users, titles, len(title_dict))
    empty_artist_rows = int((~_not_code_of(artists, artist_dict, "")).sum())
    track_artist = artist_dict.take(pa.array(artists[track_first]))
    track_name = name_dict.take(pa.array(names[track_first]))

    manifest = {
        "source": {"data": source.result()},
        "dropped": {"wrong_field_count": wrong, "empty_track_name": empty_tracks},
        "notes": {
            "format": "kaggle",
            "rows_read": rows_parsed + wrong,
            "rows_parsed": rows_parsed,
            "users": int(np.count_nonzero(np.bincount(users, minlength=1))),
            "empty_artist_name_rows": empty_artist_rows,
        },
    }
    ds = playlist_dataset(
        owner_codes=owner_codes,
        owner_keys=user_dict.take(pa.array(users[owner_first])),
        owner_names=title_dict.take(pa.array(titles[owner_first])),
        track_codes=track_codes,
        track_keys=pc.binary_join_element_wise(track_artist, track_name, TRACK_KEY_SEP),
        track_names=track_name,
        artist_keys=track_artist,
        artist_names=track_artist,
        rank=None,
        manifest=manifest,
    )
    return require_rows(p, ds)


def _trimmed_codes(values: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    return recode(*dict_codes(values), pc.utf8_trim_whitespace)


def _owner_codes(user: pa.ChunkedArray, title: pa.ChunkedArray) -> tuple:
    """Codes of users and titles, and of their pairs (the playlists), all in first-seen order."""
    users, user_dict = dict_codes(user)
    titles, title_dict = dict_codes(title)
    return users, user_dict, titles, title_dict, *pair_codes(users, titles, len(title_dict))


def _not_code_of(codes: np.ndarray, dictionary: pa.Array, value: str) -> np.ndarray:
    """Boolean mask of entries whose value differs from ``value``."""
    hit = pc.index(dictionary, value).as_py()
    return np.ones(len(codes), bool) if hit < 0 else codes != hit

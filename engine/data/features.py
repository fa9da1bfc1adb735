"""Audio features from the Kaggle "Spotify 1.2M+ songs" file (``tracks_features.csv``).

Neither the Kaggle playlists nor the thinned MPD slices carry Spotify ids that this file shares
reliably, so tracks are matched on normalised (track name, first artist): lowercase, trimmed,
inner whitespace collapsed. The ``artists`` column is a Python list literal (``['A', 'B']``,
``["O'Neil"]`` when a name holds an apostrophe); its first element is pulled out with one regular
expression over the whole column, not ``ast.literal_eval`` per row, because the file has 1.2M rows.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from engine.data._files import (
    check_file,
    read_csv_columns,
    read_header,
    require_columns,
    source_entry,
)
from engine.data._ingest import to_str_series
from engine.data.canonical import Dataset

FEATURES = (
    "danceability",
    "energy",
    "key",
    "loudness",
    "mode",
    "speechiness",
    "acousticness",
    "instrumentalness",
    "liveness",
    "valence",
    "tempo",
    "duration_ms",
    "time_signature",
    "year",
)
KEY_SEP = "\x1f"
# First element of a Python list repr: '...' (with \' escapes) or "..." (used when it holds a ').
_FIRST_ARTIST = r"""^\s*\[\s*(?:'(?P<sq>(?:[^'\\]|\\.)*)'|"(?P<dq>(?:[^"\\]|\\.)*)")"""


def read_track_features(path: str | Path) -> pd.DataFrame:
    """Read ``tracks_features.csv``: columns ``id, name, artist`` (first artist) + float32 FEATURES.

    The source fingerprint is kept in ``df.attrs["source"]`` for the dataset manifest. Rows with a
    wrong field count are skipped and counted in ``df.attrs["wrong_field_count"]``; a value that
    is not a number makes the file BadInput.
    """
    p = check_file(path)
    source = source_entry(p)
    header = read_header(p)
    needed = ("id", "name", "artists") + FEATURES
    require_columns(p, header, needed)
    types = {"id": pa.string(), "name": pa.string(), "artists": pa.string()}
    types.update({f: pa.float64() for f in FEATURES})
    table, wrong = read_csv_columns(p, header, types)
    df = pd.DataFrame(
        {
            "id": to_str_series(table["id"]),
            "name": to_str_series(table["name"]),
            "artist": to_str_series(first_artist(table["artists"])),
        }
    )
    for f in FEATURES:
        df[f] = table[f].to_numpy().astype(np.float32)
    df.attrs["source"] = source.result()
    df.attrs["wrong_field_count"] = wrong
    return df


def first_artist(artists: pa.Array | pa.ChunkedArray) -> pa.Array:
    """First name of each Python-list string; a value that is not a list literal is kept as is.

    The regex handles the plain quoting of almost every row; the few names that Python escaped
    (``\\xa0``, ``\\'``) are decoded exactly with ``ast.literal_eval``, on those rows only.
    """
    if isinstance(artists, pa.ChunkedArray):
        artists = artists.combine_chunks()
    found = pc.extract_regex(artists, _FIRST_ARTIST)
    single, double = pc.struct_field(found, "sq"), pc.struct_field(found, "dq")
    name = pc.coalesce(pc.if_else(pc.greater(pc.utf8_length(double), 0), double, single), artists)
    escaped = np.flatnonzero(pc.fill_null(pc.match_substring(name, "\\"), False).to_numpy(False))
    if len(escaped):
        fixed = [_literal_first(s) for s in artists.take(pa.array(escaped)).to_pylist()]
        mask = np.zeros(len(name), bool)
        mask[escaped] = True
        name = pc.replace_with_mask(name, pa.array(mask), pa.array(fixed, name.type))
    return name


def _literal_first(text: str) -> str:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    if isinstance(value, (list, tuple)) and value:
        return str(value[0])
    return text


def normalise(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Lowercase, trim and collapse whitespace: the matching key for names."""
    values = pc.utf8_lower(values)
    values = pc.replace_substring_regex(values, r"\s+", " ")
    return pc.utf8_trim_whitespace(values)


def _match_keys(names: pd.Series, artists: pa.Array | pd.Series) -> pd.Index:
    """Normalised ``name + KEY_SEP + artist`` keys (large_string: pandas hands Arrow those)."""
    big = pa.large_string()
    names = pa.array(names).cast(big)
    artists = (artists if isinstance(artists, pa.Array) else pa.array(artists)).cast(big)
    keys = pc.binary_join_element_wise(
        normalise(names), normalise(artists), pa.scalar(KEY_SEP, big)
    )
    return pd.Index(keys.to_pandas())


def join_track_features(ds: Dataset, features: pd.DataFrame) -> Dataset:
    """Return ``ds`` with ``track_features`` for the tracks whose (name, first artist) match.

    When several feature rows share a key (the same song on several albums) the first in file
    order wins, so the result is deterministic. ``manifest["notes"]["feature_match_rate"]`` is
    matched tracks / all tracks; ``feature_nan_values`` ({feature: count}) and
    ``feature_nan_tracks`` count the missing values among the matched rows (imputed when the
    graph is built); the feature file goes into ``manifest["source"]["features"]``.
    """
    feat_keys = _match_keys(features["name"], features["artist"])
    first = ~feat_keys.duplicated(keep="first")
    feat_keys, rows = feat_keys[first], np.flatnonzero(first)

    artist_names = pa.array(ds.artists["name"]).take(pa.array(ds.tracks["artist_id"].to_numpy()))
    track_keys = _match_keys(ds.tracks["name"], artist_names)
    hit = feat_keys.get_indexer(track_keys)
    matched = np.flatnonzero(hit >= 0)

    table = pd.DataFrame({"track_id": ds.tracks["track_id"].to_numpy()[matched].astype(np.int32)})
    source_rows = rows[hit[matched]]
    for f in FEATURES:
        table[f] = features[f].to_numpy()[source_rows].astype(np.float32)

    manifest = {k: (dict(v) if isinstance(v, dict) else v) for k, v in ds.manifest.items()}
    notes = manifest.setdefault("notes", {})
    notes["feature_match_rate"] = round(len(matched) / ds.num_tracks, 6) if ds.num_tracks else 0.0
    notes["feature_matched_tracks"] = len(matched)
    notes["feature_rows_read"] = len(features)
    # NaN values are imputed later (the graph's feature standardisation): count them here,
    # per feature and in tracks, so a poor feature file shows in the manifest
    nan = np.isnan(table[list(FEATURES)].to_numpy(np.float32))
    notes["feature_nan_values"] = {f: int(n) for f, n in zip(FEATURES, nan.sum(0)) if n}
    notes["feature_nan_tracks"] = int(nan.any(1).sum())
    if "source" in features.attrs:
        manifest.setdefault("source", {})["features"] = features.attrs["source"]
    return dataclasses.replace(ds, track_features=table, manifest=manifest)

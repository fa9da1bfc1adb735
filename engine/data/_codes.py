"""Vectorised codes for the readers: strings dictionary-encoded in Arrow and integer keys renumbered
0..n-1 in first-seen order, without ever making Python objects of 12.9M-row columns
(normalisation runs on the dictionary of distinct values only).

Part of the readers' shared plumbing (with :mod:`engine.data._files` and
:mod:`engine.data._ingest`); private to :mod:`engine.data`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def encode(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Dictionary-encode strings: (int32 codes, distinct values), both in first-seen order."""
    if isinstance(values, pa.ChunkedArray) and values.num_chunks == 0:
        return np.zeros(0, np.int32), pa.array([], values.type)
    enc = pc.dictionary_encode(values)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()  # unifies the per-chunk dictionaries, keeping first-seen order
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return codes, enc.dictionary


def dict_codes(values: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(int32 codes, distinct values) of a :data:`DICT` column, both in first-seen order.

    Each parsed block carries its own first-seen dictionary; concatenating unifies them chunk by
    chunk, appending new values in order, so the result is first-seen over the whole file.
    """
    if values.num_chunks == 0:
        return np.zeros(0, np.int32), pa.array([], pa.string())
    combined = values.combine_chunks()
    return combined.indices.to_numpy(zero_copy_only=False).astype(
        np.int32, copy=False
    ), combined.dictionary


def recode(
    codes: np.ndarray, dictionary: pa.Array, fn: Callable[[pa.Array], pa.Array]
) -> tuple[np.ndarray, pa.Array]:
    """Apply a string function to the distinct values only and merge values that became equal.

    Trimming 12.9M strings costs a copy of the column; trimming the ~2M distinct ones does not.
    The per-row codes are only remapped when two values actually merged.
    """
    new_codes, new_dict = encode(fn(dictionary))
    if len(new_dict) == len(dictionary):  # no merge: first-seen order, so codes are unchanged
        return codes, new_dict
    return new_codes[codes], new_dict


def first_positions(codes: np.ndarray) -> np.ndarray:
    """Index of the first occurrence of each code, for codes numbered in first-seen order."""
    if len(codes) == 0:
        return np.zeros(0, np.int64)
    running = np.maximum.accumulate(codes)
    new = np.empty(len(codes), bool)
    new[0] = True
    np.greater(running[1:], running[:-1], out=new[1:])
    return np.flatnonzero(new)


def run_starts(*columns: np.ndarray) -> np.ndarray:
    """Positions where any of the equal-length integer columns changes value (0 included)."""
    n = len(columns[0])
    change = np.zeros(max(n - 1, 0), bool)
    for c in columns:
        change |= c[1:] != c[:-1]
    return np.flatnonzero(np.r_[True, change]) if n else np.zeros(0, np.int64)


def factorize(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber integer keys 0..n-1 in first-seen order: (int32 codes, first positions).

    Arrow's hash kernel is used rather than ``pd.factorize`` (40 % less CPU on 12.9M int64 keys).
    When equal keys come in runs (playlist ids in file order) only each run's first key is hashed.
    """
    starts = run_starts(codes)
    if len(starts) > len(codes) // 4:
        out = _int_codes(codes)
        return out, first_positions(out)
    heads = _int_codes(codes[starts])
    out = np.repeat(heads, np.diff(np.r_[starts, len(codes)]))
    return out, starts[first_positions(heads)]


def _int_codes(values: np.ndarray) -> np.ndarray:
    if len(values) == 0:
        return np.zeros(0, np.int32)
    enc = pc.dictionary_encode(pa.array(values))
    return enc.indices.to_numpy().astype(np.int32, copy=False)


def pair_codes(a: np.ndarray, b: np.ndarray, nb: int) -> tuple[np.ndarray, np.ndarray]:
    """Factorize the pairs (a, b) of two code columns without building joined strings."""
    return factorize(a.astype(np.int64) * max(nb, 1) + b)

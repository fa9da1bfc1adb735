"""Shared, vectorised plumbing for the raw-data readers (Kaggle CSV, MPD JSON/CSV, audio features).

Every reader ends the same way: entries (owner, track) in file order become the canonical playlist
tables. Doing that once here keeps the readers short and makes sure they agree on what "first-seen
order", "duplicate in playlist" and "order" mean (see docs of :mod:`engine.data.canonical`).

Strings stay in Arrow (dictionary-encoded) so that 12.9M-row inputs never become Python objects:
whitespace trimming and normalisation run on the dictionary of distinct values only.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from engine.data.canonical import Dataset, file_fingerprint
from engine.errors import BadInput

HEADER_PROBE = 1 << 16  # a CSV header longer than 64 KiB is not a header
CSV_BLOCK = 4 << 20  # parse blocks: enough for 2-16 cores, few enough that dictionaries unify fast
DICT = pa.dictionary(pa.int32(), pa.string())  # a column type: parse straight to codes


def check_file(path: str | Path) -> Path:
    """Return ``path`` as a Path if it is a readable, non-empty file; BadInput otherwise."""
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{p}: no such file or folder")
    if not p.is_file():
        raise BadInput(f"{p}: not a regular file")
    try:
        size = p.stat().st_size
        with open(p, "rb"):
            pass
    except OSError as exc:
        raise BadInput(f"{p}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise BadInput(f"{p}: empty file")
    return p


def utf8_problem(data: bytes, base: int = 0) -> str | None:
    """Describe the first invalid UTF-8 byte of ``data`` ("not UTF-8 (byte 0x.. at offset N)")."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {base + exc.start})"
    return None


def file_utf8_problem(path: Path) -> str | None:
    """Like :func:`utf8_problem` for a whole file, streamed (only run once a parser complained)."""
    dec = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            try:
                dec.decode(chunk)
            except UnicodeDecodeError as exc:
                # exc.start is relative to the decoder's buffered bytes + this chunk
                buffered = len(exc.object) - len(chunk)
                pos = offset - buffered + exc.start
                return f"not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {pos})"
            offset += len(chunk)
        try:
            dec.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            buffered = len(exc.object)
            pos = offset - buffered + exc.start
            return f"not UTF-8 (truncated character, byte 0x{exc.object[exc.start]:02x} at offset {pos})"
    return None


def normalise_header_name(name: str) -> str:
    """Strip spaces and quotes, lowercase: every spelling of a Kaggle header name becomes one."""
    return name.strip().strip('"').strip().lower()


def read_header(path: Path) -> list[str]:
    """Normalised column names from the first line of a CSV file.

    Read by hand (not by the bulk parser) because real copies of the Kaggle file spell the header
    in several ways: quoted with leading spaces, or re-quoted by pandas with doubled quotes around each name.
    """
    with open(path, "rb") as f:
        head = f.read(HEADER_PROBE)
    end = head.find(b"\n")
    if end < 0 and len(head) == HEADER_PROBE:
        raise BadInput(
            f"{path}: line 1: no CSV header (first line longer than {HEADER_PROBE} bytes)"
        )
    line = head if end < 0 else head[:end]
    base = len(codecs.BOM_UTF8) if line.startswith(codecs.BOM_UTF8) else 0
    line = line[base:]
    problem = utf8_problem(line, base=base)
    if problem:
        raise BadInput(f"{path}: line 1: {problem}")
    text = line.decode("utf-8").rstrip("\r")
    try:
        fields = next(csv.reader(io.StringIO(text)), [])
    except csv.Error as exc:
        raise BadInput(f"{path}: line 1: unreadable CSV header ({exc})") from None
    return [normalise_header_name(f) for f in fields]


def require_columns(path: Path, header: list[str], needed: tuple[str, ...]) -> None:
    missing = [c for c in needed if c not in header]
    if missing:
        shown = ", ".join(header[:12]) or "(nothing)"
        raise BadInput(
            f"{path}: line 1: header lacks column(s) {', '.join(missing)}; found: {shown}"
        )


def read_csv_columns(
    path: Path, header: list[str], types: dict[str, pa.DataType]
) -> tuple[pa.Table, int]:
    """Parse the columns named in ``types`` (header names as given by :func:`read_header`).

    Multithreaded pyarrow parse; rows with the wrong number of fields are skipped and counted
    (returned second) rather than failing a 12.9M-row file for one bad line. Any other parse or
    conversion failure becomes BadInput naming the file. A column typed :data:`DICT` is
    dictionary-encoded block by block by the parser threads, which is cheaper than materialising
    the strings and hashing them afterwards (see :func:`dict_codes`).
    """
    names = [f"c{i}" for i in range(len(header))]
    index = {}
    for i, name in enumerate(header):
        index.setdefault(name, i)
    include = [names[index[c]] for c in types]
    bad = 0

    def on_invalid(row: pacsv.InvalidRow) -> str:
        nonlocal bad
        bad += 1
        return "skip"

    previous_hook = sys.unraisablehook

    def hook(unraisable) -> None:
        # pyarrow decodes a bad row's text before calling on_invalid; on non-UTF-8 bytes that
        # fails inside a C callback and would print a traceback. The parse then fails and the
        # file is reported as not UTF-8 below, so swallow only that one source.
        if unraisable.object is not on_invalid:
            previous_hook(unraisable)

    sys.unraisablehook = hook
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(
                column_names=names, skip_rows=1, use_threads=True, block_size=CSV_BLOCK
            ),
            # quoted values may span lines (costs nothing measurable at 12.9M rows)
            parse_options=pacsv.ParseOptions(
                invalid_row_handler=on_invalid, newlines_in_values=True
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={names[index[c]]: t for c, t in types.items()},
                include_columns=include,
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "skip initial" in message:
            message = "no data rows after the header"
        raise BadInput(f"{path}: {file_utf8_problem(path) or message}") from None
    except (pa.ArrowException, OSError) as exc:
        raise BadInput(f"{path}: unreadable CSV ({exc})") from None
    finally:
        sys.unraisablehook = previous_hook
    return table.rename_columns(list(types)), bad


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


def group_by_owner(owner: np.ndarray, rank: np.ndarray | None) -> np.ndarray | None:
    """Gather index that groups entries by owner (stable), then by ``rank``; None if already so.

    Owners are numbered in first-seen order, so grouping keeps each playlist's rows in file
    order. Rows mostly come in contiguous runs, so the runs are sorted, not the rows.
    """
    n = len(owner)
    starts = run_starts(owner)
    grouped = bool(np.all(np.diff(owner[starts]) > 0))
    if rank is not None:
        same = owner[1:] == owner[:-1]
        if grouped and not np.any(same & (rank[1:] < rank[:-1])):
            return None
        return np.lexsort((rank, owner))
    if grouped:
        return None
    perm = np.argsort(owner[starts], kind="stable")
    lens = np.diff(np.r_[starts, n])[perm]
    offsets = np.cumsum(lens) - lens
    return np.arange(n, dtype=np.int64) + np.repeat(starts[perm] - offsets, lens)


DEDUP_CHUNK = 1 << 16  # rows per hash table: small tables stay in cache (7x faster at 12.9M rows)


def first_in_owner(owner: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Mask of rows whose ``key`` has not appeared earlier for the same owner.

    ``owner`` must be grouped and ascending. A key can only repeat inside one owner, so the rows
    are de-duplicated in owner-aligned chunks (a loop over ~200 chunks, not over rows).
    """
    n = len(key)
    cuts = np.unique(np.r_[np.searchsorted(owner, owner[::DEDUP_CHUNK], "left"), n])
    keep = np.empty(n, bool)
    for s, e in itertools.pairwise(cuts):
        keep[s:e] = ~pd.Series(key[s:e], copy=False).duplicated(keep="first").to_numpy()
    return keep


def interactions(
    owner: np.ndarray, track: np.ndarray, n_tracks: int, rank: np.ndarray | None = None
) -> tuple[pd.DataFrame, int]:
    """Playlist interactions from entries in file order: (table, number of duplicates dropped).

    Entries are grouped by owner, ordered by ``rank`` when given (MPD ``pos``), a repeated track
    keeps its first position, and ``order`` is the 0-based position among the playlist's
    distinct tracks.
    """
    idx = group_by_owner(owner, rank)
    if idx is not None:
        owner, track = owner[idx], track[idx]
    keep = first_in_owner(owner, owner.astype(np.int64) * max(n_tracks, 1) + track)
    owner, track = owner[keep], track[keep]
    start = run_starts(owner)
    order = np.arange(len(owner), dtype=np.int64) - np.repeat(
        start, np.diff(np.r_[start, len(owner)])
    )
    return frame(
        owner_id=owner.astype(np.int32), track_id=track.astype(np.int32), order=order
    ), int(len(keep) - keep.sum())


def frame(**columns) -> pd.DataFrame:
    """A DataFrame built column by column: the dict constructor would copy all same-dtype columns
    into one 2-D block (0.5 s at 12.9M rows), which nothing downstream needs."""
    items = iter(columns.items())
    name, values = next(items)
    df = pd.DataFrame({name: values})
    for name, values in items:
        df[name] = values
    return df


def to_str_series(values: pa.Array | pa.ChunkedArray) -> pd.Series:
    """Arrow strings -> pandas ``str`` Series (pandas keeps them Arrow-backed, no Python objects)."""
    return pd.Series(values.to_pandas(), copy=False).reset_index(drop=True).astype(str)


def playlist_dataset(
    *,
    owner_codes: np.ndarray,
    owner_keys: pa.Array,
    owner_names: pa.Array,
    track_codes: np.ndarray,
    track_keys: pa.Array,
    track_names: pa.Array,
    artist_keys: pa.Array,
    artist_names: pa.Array,
    rank: np.ndarray | None,
    manifest: dict,
) -> Dataset:
    """Assemble a kind="playlist" Dataset.

    ``owner_codes``/``track_codes`` number every entry's playlist/track 0..n-1 in first-seen
    order; the per-owner and per-track arrays are indexed by those numbers. A track's artist is
    the artist of its first entry. The duplicate count is added to ``manifest["dropped"]``.
    """
    with ThreadPoolExecutor(1) as pool:  # the 12.9M-row part overlaps the per-track tables
        inter_job = pool.submit(interactions, owner_codes, track_codes, len(track_keys), rank)
        artist_codes, artist_first = factorize(encode(artist_keys)[0])
        owners = frame(
            owner_id=np.arange(len(owner_keys), dtype=np.int32),
            key=to_str_series(owner_keys),
            name=to_str_series(owner_names),
        )
        tracks = frame(
            track_id=np.arange(len(track_keys), dtype=np.int32),
            key=to_str_series(track_keys),
            name=to_str_series(track_names),
            artist_id=artist_codes,
        )
        artists = frame(
            artist_id=np.arange(len(artist_first), dtype=np.int32),
            name=to_str_series(artist_names.take(pa.array(artist_first))),
        )
        inter, dups = inter_job.result()
    manifest.setdefault("dropped", {})["duplicate_in_playlist"] = dups
    ds = Dataset("playlist", owners, tracks, artists, inter, manifest=manifest)
    ds.validate()
    return ds


def require_rows(path: Path, ds: Dataset) -> Dataset:
    """A dataset without a single interaction is unusable downstream: say so at ingest."""
    if len(ds.interactions):
        return ds
    notes = ds.manifest.get("notes", {})
    if notes.get("rows_read") == 0:
        raise BadInput(f"{path}: no data rows after the header")
    if notes.get("entries_read") == 0:
        raise BadInput(f"{path}: no playlist entries (every tracks list is empty)")
    dropped = ", ".join(f"{k}={v}" for k, v in ds.manifest.get("dropped", {}).items() if v)
    raise BadInput(
        f"{path}: no usable playlist rows" + (f" (dropped: {dropped})" if dropped else "")
    )


def source_entry(path: Path) -> Future:
    """Fingerprint of the source file for ``manifest["source"]``, hashed in a background thread.

    sha256 of a 1.2 GB file takes seconds; hashlib releases the GIL, so it overlaps the parse.
    Call ``.result()`` when the manifest is built.
    """
    pool = ThreadPoolExecutor(1, thread_name_prefix="sha256")
    future = pool.submit(file_fingerprint, path)
    pool.shutdown(wait=False)
    return future

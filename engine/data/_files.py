"""Raw input files for the readers (Kaggle CSV, MPD CSV, audio features): the file checks that
come before any parse, the UTF-8 diagnosis, the hand-read CSV header, the bulk pyarrow CSV parse
and the source fingerprint hashed beside it.

Part of the readers' shared plumbing (with :mod:`engine.data._codes` and
:mod:`engine.data._ingest`); private to :mod:`engine.data`.
"""

from __future__ import annotations

import codecs
import csv
import io
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from engine.data.canonical import file_fingerprint
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


def source_entry(path: Path) -> Future:
    """Fingerprint of the source file for ``manifest["source"]``, hashed in a background thread.

    sha256 of a 1.2 GB file takes seconds; hashlib releases the GIL, so it overlaps the parse.
    Call ``.result()`` when the manifest is built.
    """
    pool = ThreadPoolExecutor(1, thread_name_prefix="sha256")
    future = pool.submit(file_fingerprint, path)
    pool.shutdown(wait=False)
    return future

"""Give a worker's freed heap back to the operating system before it waits.

glibc's ``malloc`` keeps the pages of freed blocks for reuse: after a training step a worker still
holds its activations' and gradients' pages (at full size a sizeable share of its resident
memory: ``benchmarks/bench_full.py --parts step``, docs/benchmarks.md). While rank 0 validates
or tests, the other workers of the node only wait, and those pages would sit in the node's peak
next to rank 0's evaluation. ``malloc_trim(0)`` returns every whole free page; the next step
takes fresh ones (a page fault each, once per epoch). Where libc has no ``malloc_trim``
(macOS, musl) only the garbage collector runs.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_heap() -> bool:
    """Collect garbage and return free heap pages to the OS; whether libc could."""
    gc.collect()
    if _TRIM is None:
        return False
    _TRIM(0)
    return True

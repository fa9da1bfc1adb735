"""Give a process's freed heap back to the operating system before it waits.

glibc's ``malloc`` keeps the pages of freed blocks for reuse: after a training step a worker still
holds its activations' and gradients' pages (at full size a sizeable share of its resident
memory: ``benchmarks/bench_full.py --parts step``, docs/benchmarks.md). While rank 0 validates
or tests, the other workers of the node only wait, and those pages would sit in the node's peak
next to rank 0's evaluation. ``malloc_trim(0)`` returns every whole free page; the next step
takes fresh ones (a page fault each, once per epoch). Where libc has no ``malloc_trim``
(macOS, musl) only the garbage collector runs.

During an epoch a worker trims every :data:`engine.training.steps.TRIM_EVERY` steps
(:func:`trim_heap`): batches differ in size, and over hundreds of steps the freed blocks that
glibc keeps grow, a few hundred MB a node over a full-size epoch (docs/benchmarks.md, round 8).

The job's driver calls it too, once the run's dataset is prepared (``jobs.common.run_dataset``):
parsing the Kaggle file leaves Arrow's allocator and glibc holding pages that the driver, which
then only waits for Ray, would keep through the whole run (``benchmarks/bench_full_pss.py``
counts the driver in the run's peak).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def trim_heap() -> bool:
    """Return free heap pages to the OS without collecting garbage (cheap enough to call
    during an epoch); whether libc could."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


def release_heap() -> bool:
    """Collect garbage and return free heap pages to the OS (Arrow's memory pool's too, when
    pyarrow is loaded); whether libc could."""
    gc.collect()
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:  # Arrow's own allocator (mimalloc or jemalloc) keeps freed pages too
        arrow.default_memory_pool().release_unused()
    return trim_heap()

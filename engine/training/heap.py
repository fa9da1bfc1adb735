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
from collections.abc import Iterator
from contextlib import contextmanager


def _libc(name: str):
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


_TRIM = _libc("malloc_trim")
_MALLOPT = _libc("mallopt")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameters
# where glibc's own tuning of them ends once a mapped block of its largest map threshold (32 MiB
# on 64-bit) has been freed: blocks above it mapped, the top trimmed above twice it; 65,536
# maps at most (its default)
AFTER = ((M_MMAP_MAX, 65536), (M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 64 << 20))


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


@contextmanager
def reused_pages() -> Iterator[None]:
    """Inside: glibc maps no block on its own and never trims the heap's top, so the full
    ranking's score blocks ([28 x 1.18 M] floats, 128 MB, above glibc's largest map threshold)
    reuse the pages of the batch before instead of faulting in fresh ones: at the Kaggle file's
    full size the test evaluation of all 41,304 test playlists took 18 minutes instead of 32
    (system time 4 s instead of 813), its peak 1.53 GB instead of 1.64 (docs/benchmarks.md,
    round 8). Setting these ends glibc's own tuning of them for the process's lifetime, so on
    exit they are set where that tuning ends once large blocks have been freed (:data:`AFTER`),
    and the heap is given back. Rank 0's final test uses it; nothing trains after it in a job."""
    if _MALLOPT is not None:
        _MALLOPT(M_MMAP_MAX, 0)
        _MALLOPT(M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        if _MALLOPT is not None:
            for param, value in AFTER:
                _MALLOPT(param, value)
        release_heap()

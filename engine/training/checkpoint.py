"""Checkpoint files: everything needed to continue a run exactly, loadable with
``torch.load(..., weights_only=True)`` (tensors, numbers, strings, lists and dicts only).

What a checkpoint restores, so that a run interrupted after epoch ``k`` and resumed gives the
same losses and metrics as one that was never interrupted (same worker count; tested on one
worker in tests/test_failures.py):

* model weights, both optimisers (Adam and SparseAdam moments and step counts), the LR
  schedulers, the best epoch's weights, early-stopping counters and the history;
* every random stream the loop draws from, for every rank (ranks draw different amounts, so one
  rank's state would not resume another's): torch's CPU generator (dropout, model
  initialisation), CUDA's where present, numpy's global generator and Python's ``random``;
* the sampler's position: a checkpoint is taken only between epochs, and each epoch's batches
  come from a generator seeded by (seed, epoch, rank) (``engine.graph.batches.epoch_generator``),
  so the resumed epoch draws exactly the batches the uninterrupted one would have.

Not restored: the state of an epoch in progress (a resume restarts that epoch from its
beginning; the epochs so lost are recorded in ``metrics.json["resumes"]``), and bitwise equality
across different worker or thread counts (float sums are reduced in another order).

Which checkpoint a resume starts from: :func:`newest_complete` finds the newest checkpoint file
under a run folder that loads, so a checkpoint written just before a worker died, but never
registered by Ray, is not lost (see ``engine.training.state.find_checkpoint``).
"""
from __future__ import annotations

import os
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "state.pt"


def save_state(state: dict, path: str | Path) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves a torn checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_state(path: str | Path) -> dict:
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def rng_state() -> dict:
    """Every global random stream, as weights-only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "python": {"version": version, "internal": list(internal), "gauss": py_gauss}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`; a checkpoint from before numpy/python were saved restores
    torch only."""
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                             n["has_gauss"], n["gauss"]))
    if "python" in state:
        p = state["python"]
        random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_files(root: str | Path) -> list[Path]:
    """Every checkpoint file under a run folder (Ray Train's ``checkpoint_*`` folders and the
    local context's ``epoch_*`` ones), newest written first. The prepared dataset is skipped."""
    root = Path(root)
    if not root.is_dir():
        return []
    files = [f for f in root.rglob(STATE_FILE) if "dataset" not in f.relative_to(root).parts[:1]]
    return sorted(files, key=lambda f: f.stat().st_mtime_ns, reverse=True)


def newest_complete(root: str | Path) -> tuple[dict | None, Path | None, list[Path]]:
    """The newest checkpoint under ``root`` that loads: ``(state, file, torn)``, where ``torn``
    lists newer files that do not load (a copy cut short by a kill). ``(None, None, torn)``
    when there is none."""
    torn = []
    for f in checkpoint_files(root):
        try:
            return load_state(f), f, torn
        except (OSError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile):
            torn.append(f)
    return None, None, torn


def unregistered(root: str | Path, registered_epoch: int) -> tuple[dict | None, list[Path]]:
    """Checkpoints under ``root`` newer than the one the context handed back (``registered_epoch``,
    -1 for none): ``(newest that loads, every such file)``. Ray Train registers a reported
    checkpoint only at the controller's next poll; a worker killed in between leaves a complete
    folder Ray never heard of (an orphan), or one cut short mid-copy. Files are read newest
    first and the scan stops at the first one at or before ``registered_epoch``, so a resume
    with no orphans reads one file."""
    newest, found = None, []
    for f in checkpoint_files(root):
        try:
            state = load_state(f)
        except (OSError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile):
            found.append(f)  # torn: never registered either
            continue
        if state.get("epoch", -1) <= registered_epoch:
            break
        found.append(f)
        newest = newest or state
    return newest, found

"""Checkpoint files: everything needed to continue a run exactly, loadable with
``torch.load(..., weights_only=True)`` (tensors, numbers, strings, lists and dicts only)."""
from __future__ import annotations

import os
from pathlib import Path

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
    return {"torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])

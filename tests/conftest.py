"""Shared fixtures: the real sample data folder, a tiny prepared dataset, and one Ray session."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_playlists(tmp_path_factory) -> Path:
    """A prepared playlist dataset of ~120 generated playlists (Kaggle format, seeded)."""
    from engine.data.canonical import save_dataset
    from engine.data.kaggle import read_kaggle_csv
    from engine.data.kaggle_writer import write_kaggle_csv
    from engine.data.subset import subset_owners

    root = tmp_path_factory.mktemp("tiny")
    csv = root / "spotify_dataset.csv"
    write_kaggle_csv(csv, 6000, seed=3)
    ds = subset_owners(read_kaggle_csv(csv), 120, seed=0)
    return save_dataset(ds, root / "prepared")


@pytest.fixture(scope="session")
def tiny_sessions(tmp_path_factory) -> Path:
    from engine.data.canonical import save_dataset
    from engine.data.sessions import generate_sessions

    root = tmp_path_factory.mktemp("sessions")
    ds = generate_sessions(num_users=80, days=5, num_songs=400, num_artists=60, seed=1)
    return save_dataset(ds, root / "prepared")


@pytest.fixture(scope="session")
def tiny_run(tiny_playlists, tmp_path_factory) -> Path:
    """A finished 2-epoch playlist run on ``tiny_playlists``, trained without Ray (for
    jobs.recommend and jobs.report). Treat it as read-only: copy it before changing files."""
    from engine.training.loop import train_loop_per_worker

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    train_loop_per_worker({"dataset": str(tiny_playlists), "output": str(out), "epochs": 2,
                           "steps_per_epoch": 8, "batch_size": 32, "embedding_dim": 16,
                           "heads": 2, "patience": 0, "progress": False})
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only contend (on a busy 2-core machine 8x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray session for every test that needs Ray (ray.init costs 5-9 s here). Ray's
    own driver log lines go to a ray.log in a temporary folder; shutdown_ray also unsets the
    RAY_ADDRESS that init_ray pinned, so later tests and subprocesses do not inherit it."""
    pytest.importorskip("ray")
    from engine.training.ray_train import init_ray, shutdown_ray

    ray = init_ray(num_cpus=2, log_dir=tmp_path_factory.mktemp("ray_session"))
    yield ray
    shutdown_ray()

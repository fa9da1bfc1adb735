"""One copy per node: the graph store (engine.graph.store, RunData.save_store) and the node-shared
ID tables (engine.training.shared)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from engine.graph.store import load_tree, read_meta, save_tree
from engine.training.config import TrainConfig
from engine.training.run_data import RunData
from tests.probes import rss_mb

pytestmark = pytest.mark.timeout(180)


def _same(a, b) -> None:
    """Recursive equality of dataclasses, dicts, lists and tensors (dtype and values)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif hasattr(a, "__dataclass_fields__"):
        assert type(a) is type(b)
        _same(vars(a), vars(b))
    else:
        assert a == b


def _mapped(tensor: torch.Tensor) -> str | None:
    """The file a tensor's memory is mapped from (``/proc/self/maps``), or None."""
    ptr = tensor.untyped_storage().data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if lo <= ptr < hi:
            return parts[5] if len(parts) == 6 else None
    return None


def test_graph_store_maps_the_same_split_and_graphs(tiny_playlists, tmp_path):
    cfg = TrainConfig(dataset=str(tiny_playlists), recency=True)
    built = RunData.load(cfg)
    store = RunData.save_store(cfg, tmp_path / "store")
    mapped = RunData.load(TrainConfig.from_dict({**cfg.to_dict(), "graph_store": str(store)}))
    assert mapped.ds is None and mapped.kind == built.kind == "playlist"
    _same(mapped.split, built.split)
    for stage in ("fit", "train"):
        _same(mapped.graph(stage), built.graph(stage))
    # the tensors are the store's files, read in place, not private copies
    csr = mapped.graph("fit").csr[mapped.graph("fit").interaction]
    assert _mapped(csr.indices).startswith(str(store))
    # a second save with the same settings keeps the store; other settings are refused on open
    before = (store / "tree.json").stat().st_mtime_ns
    RunData.save_store(cfg, store)
    assert (store / "tree.json").stat().st_mtime_ns == before
    other = TrainConfig.from_dict({**cfg.to_dict(), "holdout": 3, "graph_store": str(store)})
    with pytest.raises(ValueError, match="other data settings"):
        RunData.load(other)


def test_store_round_trip_and_refusals(tmp_path):
    tree = {("a", "to", "b"): torch.arange(6).view(2, 3), "empty": torch.zeros(0, 4),
            "flags": torch.tensor([True, False]), "nested": [1, 2.5, "x", None, (3, 4)]}
    save_tree(tree, tmp_path / "s", meta={"k": 1})
    assert read_meta(tmp_path / "s") == {"k": 1}
    _same(load_tree(tmp_path / "s"), tree)
    with pytest.raises(TypeError, match="cannot hold"):
        save_tree({"bad": object()}, tmp_path / "t")
    assert not (tmp_path / "t").exists()  # nothing half-written
    assert [p.name for p in tmp_path.iterdir()] == ["s"]
    assert read_meta(tmp_path / "missing") is None


def _shared_worker(rank: int, world_size: int, port: int, out: str, hosts: list[str]) -> None:
    import socket

    import torch.distributed as dist
    from torch import nn

    from engine.training.row_adam import RowAdam
    from engine.training.shared import NodeShared
    from engine.training.sync import sync_gradients

    socket.gethostname = lambda: hosts[rank]  # nodes are told apart by host name
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size)
    results, owned = {}, []
    for shared in (False, True):
        torch.manual_seed(0)
        # two tables of one width (one exchange for both), the second never touched by rank 0
        a, b = nn.Embedding(50, 8, sparse=True), nn.Embedding(7, 8, sparse=True)
        params = [a.weight, b.weight]
        # shared: the loop's RowAdam (torch's SparseAdam bit for bit), each rank stepping its
        # own rows (Optimisers.sync); private: torch's own, on every rank
        opt = (RowAdam if shared else torch.optim.SparseAdam)(params, lr=0.05)
        node = NodeShared(params, opt, Path(out)) if shared else None
        g = torch.Generator().manual_seed(100 + rank)  # each rank its own rows
        for _ in range(5):
            rows = torch.randint(0, 50, (12,), generator=g)
            loss = (a(rows) ** 2).sum()
            if rank:
                loss = loss + (b(rows % 7) ** 2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sync_gradients([], params, None if node is None else node.shards)
            if node is not None:
                owned.append([p.grad.coalesce().indices()[0].tolist() for p in params])
            node.step() if node is not None else opt.step()
        results[shared] = [p.detach().clone() for p in params]
        if shared:
            assert "gatrec-" in (_mapped(a.weight) or "")
            assert opt.state[a.weight]["step"] == opt.state[b.weight]["step"] == 5
    torch.save({"results": results, "owned": owned}, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("hosts", [["n0", "n0"], ["n0", "n0", "n1"]], ids=["1node", "2nodes"])
def test_node_shared_tables_match_private_updates(tmp_path, hosts):
    """Ranks on one node, and on two nodes of 2 and 1 ranks (host names faked): SparseAdam
    (RowAdam) on node-shared tables, each rank stepping the rows it owns, gives, bit for bit,
    what every rank applying torch's SparseAdam to its own copy gives; every rank sees the same
    tables; within a node the ranks' rows are disjoint and every node steps every touched row;
    the files are gone once mapped."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    n = len(hosts)
    mp.spawn(_shared_worker, args=(n, port, str(tmp_path), hosts), nprocs=n, join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(n)]
    private = res[0]["results"][False]
    for r in res:
        for got, want in zip(r["results"][False] + r["results"][True], private + private):
            assert torch.equal(got, want)
    for node in set(hosts):
        ranks = [r for r, h in enumerate(hosts) if h == node]
        for step in range(5):
            for t in range(2):
                rows = [res[r]["owned"][step][t] for r in ranks]
                together = sorted(x for part in rows for x in part)
                assert len(together) == len(set(together))  # disjoint within the node
                every = sorted({x for r in res for x in r["owned"][step][t]})
                assert together == every  # the node steps every row any rank steps
    assert any(res[0]["owned"][s][0] != res[1]["owned"][s][0] for s in range(5))
    assert not [f for f in os.listdir("/dev/shm") if f.startswith("gatrec-")]
    assert not [f for f in os.listdir(tmp_path) if f.startswith("gatrec-")]


def test_row_shards_give_each_key_to_one_rank_per_node():
    """Ranks 0, 1, 2 on node A and 3 on node B: a key goes to exactly one of A's ranks (by key
    mod 3) and to rank 3."""
    from engine.training.sync import RowShards

    shards = RowShards(index=(0, 1, 2, 0), size=(3, 3, 3, 1))
    keys = torch.arange(20)
    dest = shards.owners(keys)
    assert dest[:3].sum(0).eq(1).all() and dest[3].all()
    assert torch.equal(dest[1], keys % 3 == 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_release_heap_gives_freed_step_memory_back():
    """A waiting worker returns its freed heap pages (engine.training.heap): many blocks below
    glibc's mmap threshold, freed, stay resident until released."""
    from engine.training.heap import release_heap

    blocks = [torch.ones(8192) for _ in range(12000)]  # 32 KB each, ~380 MB, from the heap
    held = rss_mb()
    del blocks
    freed_only = rss_mb()
    if not release_heap():
        pytest.skip("this libc has no malloc_trim")
    after = rss_mb()
    # free() alone gave back 43 MB of these 380 (measured); the release gives back most of them
    assert held - after > 200, (held, freed_only, after)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_release_heap_gives_arrows_freed_pages_back():
    """The driver after parsing (jobs.common.run_dataset): Arrow's own allocator keeps freed
    buffers' pages resident (glibc's malloc_trim does not reach them) until its pool releases
    them."""
    import numpy as np
    import pyarrow as pa

    from engine.training.heap import release_heap

    buffers = [pa.allocate_buffer(16384) for _ in range(20000)]  # ~330 MB
    for b in buffers:
        np.frombuffer(b, dtype=np.uint8)[:] = 1  # touched, so resident
    held = rss_mb()
    del buffers, b
    release_heap()
    after = rss_mb()
    assert held - after > 200, (held, after)


def test_run_dataset_releases_the_drivers_heap(tmp_path, monkeypatch):
    """The job's run_dataset gives the parse's pages back before Ray starts, also when the data
    is refused."""
    from engine.errors import BadInput
    from engine.training import heap
    from jobs.common import run_dataset

    calls = []
    monkeypatch.setattr(heap, "release_heap", lambda: calls.append(1) or True)

    def refuse():
        raise BadInput("bad.csv: no rows")

    (tmp_path / "bad.csv").write_text("pid,track_uri\n")
    with pytest.raises(BadInput):
        run_dataset(refuse, tmp_path / "bad.csv", tmp_path / "run", None, 0)
    assert calls == [1]
    assert not (tmp_path / "run" / "dataset").exists()


def test_node_id_tells_machines_with_one_host_name_apart(monkeypatch, tmp_path):
    """Two machines (containers) may share a host name; their boot ids tell them apart, and
    one machine's ranks agree."""
    import socket

    from engine.training import shared

    monkeypatch.setattr(socket, "gethostname", lambda: "worker")
    ids = []
    for boot in ("a1b2", "c3d4", "a1b2"):
        (tmp_path / boot).write_text(boot + "\n")
        monkeypatch.setattr(shared, "BOOT_ID", tmp_path / boot)
        ids.append(shared.node_id())
    assert ids[0] != ids[1] and ids[0] == ids[2]
    monkeypatch.setattr(shared, "BOOT_ID", tmp_path / "absent")  # no /proc: the host name
    assert shared.node_id() == shared.node_id() != ids[0]

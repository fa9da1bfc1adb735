"""Time the sampler on a synthetic graph sized like a few MPD slices.

2.7k playlists, 100k tracks, 240k playlist-track edges (track popularity Zipf-like, as in MPD),
60k artists (one per track), 2k genres (1-2 per artist). Prints milliseconds per batch.

    .venv/bin/python -m benchmarks.bench_sampler [--reps 30]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from engine.graph.sampler import BPRBatches, sample_negatives, sample_subgraph
from engine.graph.types import CSR, GraphData, rev


def synthetic_graph(n_p: int = 2_700, n_t: int = 100_000, n_e: int = 240_000,
                    n_a: int = 60_000, n_g: int = 2_000, seed: int = 0) -> GraphData:
    gen = torch.Generator().manual_seed(seed)
    pop = 1.0 / (torch.arange(n_t, dtype=torch.float64) + 10.0) ** 0.8  # skewed popularity
    track = torch.multinomial(pop, int(n_e * 1.05), replacement=True, generator=gen)
    owner = torch.randint(n_p, (track.numel(),), generator=gen)
    key = torch.unique(owner * n_t + track)[:n_e]
    forward = {
        ("playlist", "to", "track"): torch.stack([key // n_t, key % n_t]),
        ("track", "to", "artist"): torch.stack([torch.arange(n_t),
                                                torch.randint(n_a, (n_t,), generator=gen)]),
        ("artist", "to", "genre"): torch.unique(torch.stack([
            torch.arange(n_a).repeat(2), torch.randint(n_g, (2 * n_a,), generator=gen)]), dim=1),
    }
    num = {"playlist": n_p, "track": n_t, "artist": n_a, "genre": n_g}
    edge_index = {}
    for et, ei in forward.items():
        edge_index[et], edge_index[rev(et)] = ei, ei.flip(0)
    csr = {et: CSR.from_edge_index(ei, num[et[0]]) for et, ei in edge_index.items()}
    x = {"playlist": torch.randn(n_p, 16, generator=gen),
         "track": torch.randn(n_t, 16, generator=gen)}
    return GraphData("playlist", "track", num, edge_index, csr, x)


def timed(fn, reps: int) -> str:
    """Median and minimum ms per call (the minimum is the least disturbed by other load)."""
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return f"median {statistics.median(ts):.2f} ms, min {min(ts):.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    g = synthetic_graph()
    print(f"graph built in {time.perf_counter() - t0:.1f} s: {g.num_nodes}, "
          f"{g.edge_index[g.interaction].size(1)} playlist-track edges, "
          f"torch threads {torch.get_num_threads()}")
    gen = torch.Generator().manual_seed(0)
    pt = g.csr[g.interaction]
    owners = torch.randperm(2_700, generator=gen)[:128]
    fan = [10, 5]

    sub = sample_subgraph(g, {"playlist": owners}, fan, gen, backend="torch")
    sizes = {t: sub.num_nodes(t) for t in g.node_types}
    ms = timed(lambda: sample_subgraph(g, {"playlist": owners}, fan, gen, backend="torch"),
               args.reps)
    print(f"sample_subgraph 128 owners, fanouts {fan}: {ms}  nodes {sizes}  "
          f"edges {sum(e.size(1) for e in sub.edge_index.values())}")

    trip = owners.repeat_interleave(4)
    ms = timed(lambda: sample_negatives(pt.indptr, pt.indices, trip, 100_000, 4, gen), args.reps)
    print(f"sample_negatives 512 triples x 4 negatives: {ms}")

    items = torch.randint(100_000, (512 * 5,), generator=gen)
    seeds = {"playlist": owners, "track": items}
    sub = sample_subgraph(g, seeds, fan, gen, backend="torch")
    ms = timed(lambda: sample_subgraph(g, seeds, fan, gen, backend="torch"), args.reps)
    print(f"sample_subgraph 128 owners + 2560 item seeds, fanouts {fan}: {ms}  "
          f"nodes {({t: sub.num_nodes(t) for t in g.node_types})}")

    batches = BPRBatches(g, torch.arange(2_700), batch_size=128, num_neg=4, fanouts=fan,
                         seed=0, steps=args.reps, pos_per_owner=4, neg_pool=0,
                         neg_popularity=0.0, owner_rows=None, backend="torch")
    it, ts = iter(batches), []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        b = next(it)
        ts.append((time.perf_counter() - t0) * 1e3)
    print(f"BPRBatches 128 owners x 4 positives x 4 negatives, fanouts {fan}: median "
          f"{statistics.median(ts):.2f} ms, min {min(ts):.2f} ms per batch "
          f"({b.num_triples} triples, {sum(b.sub.num_nodes(t) for t in g.node_types)} nodes)")

if __name__ == "__main__":
    main()

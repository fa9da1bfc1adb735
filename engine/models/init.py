r"""Spectral start for ID embeddings: a truncated SVD of the training owner×item matrix.

With :math:`\mathbf{X} \in \{0,1\}^{P \times N}` the graph's interaction edges (training edges
only, so nothing held out leaks in) and its rank-:math:`D` truncated SVD
:math:`\mathbf{X} \approx \mathbf{U}\boldsymbol{\Sigma}\mathbf{V}^\top`
(randomised, :func:`torch.svd_lowrank`, seeded),

.. math::
    \mathbf{E}_{\text{owner}} \leftarrow c_o\,\mathbf{U}\boldsymbol{\Sigma}^{1/2}, \qquad
    \mathbf{E}_{\text{item}} \leftarrow c_i\,\mathbf{V}\boldsymbol{\Sigma}^{1/2},

with :math:`c_o, c_i` scaling each table to the standard deviation of its random start (the
model's own init scale), so :math:`\langle \mathbf{E}_p, \mathbf{E}_t \rangle \propto (\mathbf{U}\boldsymbol{\Sigma}
\mathbf{V}^\top)_{pt}`: the co-occurrence structure of the whole matrix (PureSVD) is there at
step 0, and BPR fine-tunes it. An item without training edges gets a zero row (its vector comes
from its features and neighbours); an item without a row (``id_min_edges``, :mod:`.id_rows`) keeps
none, and the others get the rows they would get with a row for every item. The cost is a few
sparse products with the edges, linear in the number of edges.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from engine.graph.types import GraphData


def interaction_matrix(graph: GraphData) -> Tensor:
    """Sparse COO [P, N] with a 1 per owner -> item edge of ``graph``."""
    csr = graph.csr[graph.interaction]
    p = graph.num_nodes[graph.owner_type]
    n = graph.num_nodes[graph.item_type]
    rows = torch.repeat_interleave(torch.arange(p), csr.indptr[1:] - csr.indptr[:-1])
    idx = torch.stack([rows, csr.indices.long()])
    return torch.sparse_coo_tensor(idx, torch.ones(idx.size(1)), (p, n),
                                   check_invariants=False).coalesce()


def svd_factors(graph: GraphData, dim: int, seed: int) -> tuple[Tensor, Tensor]:
    r"""(:math:`\mathbf{U}\boldsymbol{\Sigma}^{1/2}` [P, D], :math:`\mathbf{V}
    \boldsymbol{\Sigma}^{1/2}` [N, D]) of the interaction matrix; the same for the same graph
    and seed (the randomised range finder draws from its own seeded stream)."""
    x = interaction_matrix(graph)
    q = min(dim, *x.shape)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        u, s, v = torch.svd_lowrank(x, q=q, niter=4)
    root = s.clamp(min=0).sqrt()
    pad = dim - q  # tiny graphs: fewer singular vectors than dimensions
    u, v = u * root, v * root
    if pad:
        u = torch.cat([u, u.new_zeros(u.size(0), pad)], 1)
        v = torch.cat([v, v.new_zeros(v.size(0), pad)], 1)
    return u, v


def svd_types(model: nn.Module, graph: GraphData) -> list[str]:
    """The node types :func:`svd_init_` sets: the owner and item types with ID embeddings."""
    emb = getattr(model, "emb", None)
    return [t for t in (graph.owner_type, graph.item_type) if emb is not None and t in emb]


@torch.no_grad()
def svd_init_(model: nn.Module, graph: GraphData, seed: int) -> list[str]:
    """Set the owner and item ID embeddings of ``model`` (those it has, in ``model.emb``) from
    :func:`svd_factors`, each at the scale of its random start. Returns the node types it set."""
    types = svd_types(model, graph)
    if not types:
        return []
    emb = model.emb
    u, v = svd_factors(graph, emb[types[0]].embedding_dim, seed)
    factors = {graph.owner_type: u, graph.item_type: v}
    for t in types:
        f, w = factors[t], emb[t].weight
        f = f * (w.std() / f.std().clamp(min=1e-12))  # the scale its random start had
        row = getattr(emb[t], "row", None)  # engine.models.id_rows: only some nodes have rows
        if row is None:
            w.copy_(f)
        else:  # a node with a row starts where it would with a row for every node
            has = torch.nonzero(row >= 0).flatten()
            w.index_copy_(0, row[has].long(), f[has])
    return types

r"""Ranking losses over one sampled batch: BPR, and a sampled softmax with in-batch negatives.

A batch holds :math:`T` triples :math:`(o_i, t_i^+, t_{i,1..N}^-)` (local indices into the
subgraph's owner and item states, :class:`~engine.graph.batches.Batch`), and the model's score
:math:`s(o, t) = \langle \mathbf{c}_o, \mathbf{c}_t \rangle + b(o, t; \rho)`, the dot product
plus its sparse bias (the artist affinity, scored at the positive's slot :math:`\rho_i`).

**BPR** (``"bpr"``, Rendle et al. 2009), averaged over triples and negatives:

.. math::
    \mathcal{L}_\mathrm{BPR} = -\frac{1}{TN}\sum_{i,k} \log\sigma\big(s(o_i, t_i^+)
    - s(o_i, t_{i,k}^-)\big).

**Sampled softmax** (``"softmax"``): each positive competes with its own :math:`N` negatives
*and with every other positive of the batch* (in-batch negatives, as in two-tower retrieval),

.. math::
    \mathcal{L}_\mathrm{SM} = -\frac{1}{T}\sum_i \log \frac{e^{s(o_i, t_i^+)}}
    {e^{s(o_i, t_i^+)} + \sum_k e^{s(o_i, t_{i,k}^-)} + \sum_{j \in B(i)} e^{s(o_i, t_j^+)}},

where :math:`B(i)` leaves out the positives of :math:`o_i` itself and copies of :math:`t_i^+`.
That is :math:`N + T - 1` negatives per positive for one extra :math:`[T, T]` product, against
BPR's :math:`N`; the in-batch ones are drawn in proportion to how often items are positives, so
they are the hard, popular negatives a top-10 list must beat. Both losses add the usual L2
penalty on the score vectors involved.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from engine.graph.ops import ROW
from engine.models.affinity import ScoreBias

LOSSES = ("bpr", "softmax")


def _scores(vecs: dict, owner_type: str, item_type: str, batch,
            bias: ScoreBias | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The positives' scores [T, 1], the negatives' [T, N], and the score vectors read."""
    u = vecs[owner_type][batch.owner_idx]  # [T, D]
    pos = vecs[item_type][batch.pos_idx]  # [T, D]
    neg = vecs[item_type][batch.neg_idx]  # [T, N, D]
    s_pos = (u * pos).sum(-1, keepdim=True)
    s_neg = (u.unsqueeze(1) * neg).sum(-1)
    if bias is not None:  # each triple scored at its positive's slot in the owner's row
        slot = getattr(batch, "pos_rank", None)
        s_pos = s_pos + bias.pairs(batch.owner_idx, batch.pos_idx, slot).unsqueeze(-1)
        s_neg = s_neg + bias.pairs(
            batch.owner_idx.unsqueeze(1).expand_as(batch.neg_idx), batch.neg_idx,
            None if slot is None else slot.unsqueeze(1).expand_as(batch.neg_idx))
    return s_pos, s_neg, u, pos, neg


def _l2(u: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    return u.pow(2).sum(-1).mean() + pos.pow(2).sum(-1).mean() + neg.pow(2).sum(-1).mean()


def bpr_loss(vecs: dict, owner_type: str, item_type: str, batch, l2: float,
             bias: ScoreBias | None = None) -> Tensor:
    """BPR: -log sigmoid(s(u, i+) - s(u, i-)) averaged over triples and negatives, plus an L2
    penalty on the score vectors involved (the usual BPR regulariser). ``s`` is the dot product
    of the score vectors, plus the model's sparse ``bias`` term when it has one."""
    s_pos, s_neg, u, pos, neg = _scores(vecs, owner_type, item_type, batch, bias)
    loss = -F.logsigmoid(s_pos - s_neg).mean()
    return loss + l2 * _l2(u, pos, neg) if l2 > 0 else loss


def softmax_loss(vecs: dict, owner_type: str, item_type: str, batch, l2: float,
                 bias: ScoreBias | None = None, log_q: Tensor | None = None) -> Tensor:
    """Sampled softmax over each positive, its own negatives and the batch's other positives
    (module docstring); the same score and L2 penalty as :func:`bpr_loss`. ``log_q`` (per
    global item) is subtracted from the in-batch negatives' logits (logQ correction)."""
    s_pos, s_neg, u, pos, neg = _scores(vecs, owner_type, item_type, batch, bias)
    o, p = batch.owner_idx, batch.pos_idx
    s_in = u @ pos.T  # [T, T]: owner of triple i against the positive of triple j
    if log_q is not None:
        s_in = s_in - log_q[batch.sub.n_id[item_type][p]].unsqueeze(0)
    if bias is not None:
        slot = getattr(batch, "pos_rank", None)
        grid = (o.unsqueeze(1).expand_as(s_in), p.unsqueeze(0).expand_as(s_in))
        s_in = s_in + bias.pairs(*grid, None if slot is None else
                                 slot.unsqueeze(1).expand_as(s_in))
    own = _known_pairs(batch, (item_type, ROW, owner_type), vecs[item_type].shape[0],
                       o.unsqueeze(1), p.unsqueeze(0))
    logits = torch.cat([s_pos, s_neg, s_in.masked_fill(own, float("-inf"))], 1)
    loss = (torch.logsumexp(logits, 1) - s_pos.squeeze(1)).mean()
    return loss + l2 * _l2(u, pos, neg) if l2 > 0 else loss


def _known_pairs(batch, row_type: tuple, num_items: int, owners: Tensor, items: Tensor
                 ) -> Tensor:
    """Whether each (owner, item) pair (broadcast shapes) is known to be an edge: one of the
    batch's triples, or of its owners' whole rows when the sampler added them (``row_type``
    edges, item -> owner). Such an item is not a negative for that owner."""
    keys = [batch.owner_idx * num_items + batch.pos_idx]
    rows = getattr(getattr(batch, "sub", None), "edge_index", {}).get(row_type)
    if rows is not None:
        keys.append(rows[1] * num_items + rows[0])
    return torch.isin(owners * num_items + items, torch.cat(keys))


def loss_fn(name: str, log_q: Tensor | None = None, dot_weight: float = 0.0
            ) -> Callable[..., Tensor]:
    """The loss called ``name`` (one of :data:`LOSSES`); ``log_q``: see :func:`softmax_loss`;
    ``dot_weight``: see :func:`with_dot_loss`."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    if name == "softmax" and log_q is not None:
        criterion = functools.partial(softmax_loss, log_q=log_q)
    else:
        criterion = {"bpr": bpr_loss, "softmax": softmax_loss}[name]
    return with_dot_loss(criterion, dot_weight) if dot_weight > 0 else criterion


def with_dot_loss(criterion: Callable[..., Tensor], weight: float) -> Callable[..., Tensor]:
    r"""``criterion`` on the full score plus ``weight`` times the same loss on the dot product
    alone (no bias, no second L2 term):
    :math:`\mathcal{L}(s) + w\,\mathcal{L}(\langle \mathbf{c}_o, \mathbf{c}_t\rangle)`.

    Trained only through the sum, the dot product learns what the sparse bias (the artist
    affinity) does not explain, and on its own it ranks below its own SVD start; the second term
    makes the learned part rank by itself too (deep supervision of one summand). A model without
    a bias gets the criterion unchanged."""
    def loss(vecs: dict, owner_type: str, item_type: str, batch, l2: float,
             bias: ScoreBias | None = None) -> Tensor:
        full = criterion(vecs, owner_type, item_type, batch, l2, bias)
        if bias is None:
            return full
        return full + weight * criterion(vecs, owner_type, item_type, batch, 0.0, None)
    return loss


def positive_log_q(graph) -> Tensor:
    """log of each item's share of the training edges: how often the sampler draws it as a
    positive, up to a constant (owners are drawn evenly, positives evenly within a row)."""
    deg = torch.bincount(graph.csr[graph.interaction].indices,
                         minlength=graph.num_nodes[graph.item_type]).float()
    return torch.log(deg.clamp(min=1) / deg.sum().clamp(min=1))

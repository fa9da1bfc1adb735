"""TensorBoard event files, written by rank 0 only (Ray Train V2 writes none of its own).

Tags (one point per epoch): ``train/loss``, ``train/triples_per_s``, ``train/epoch_seconds``,
``train/lr``, ``val/recall@10``, ``val/ndcg@10``; at the end the HParams plugin gets the run's
hyper-parameters with ``hparam/test_recall@10``, ``hparam/test_ndcg@10`` and
``hparam/best_val_recall@10``.
"""
from __future__ import annotations

from pathlib import Path

SCALARS = {
    "train_loss": "train/loss",
    "triples_per_s": "train/triples_per_s",
    "epoch_seconds": "train/epoch_seconds",
    "lr": "train/lr",
    "val_recall@10": "val/recall@10",
    "val_ndcg@10": "val/ndcg@10",
}


class EpochWriter:
    """Thin wrapper over ``SummaryWriter``; a no-op on ranks other than 0."""

    def __init__(self, logdir: str | Path, enabled: bool, purge_step: int | None = None):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events past the resumed epoch, so a resumed run has no duplicates.
            self.writer = SummaryWriter(str(logdir), purge_step=purge_step)

    def epoch(self, step: int, metrics: dict) -> None:
        if self.writer is None:
            return
        for key, tag in SCALARS.items():
            if key in metrics:
                self.writer.add_scalar(tag, float(metrics[key]), step)
        self.writer.flush()

    def hparams(self, hparams: dict, final: dict) -> None:
        if self.writer is None:
            return
        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
        self.writer.add_hparams(clean, {f"hparam/{k}": float(v) for k, v in final.items()},
                                run_name=".")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

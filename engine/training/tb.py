"""TensorBoard event files, written by rank 0 only (Ray Train V2 writes none of its own).

Tags (one point per epoch): ``train/loss``, ``train/triples_per_s``, ``train/epoch_seconds``,
``train/lr``, ``val/recall@10``, ``val/ndcg@10``, ``hparam/best_val_recall@10``. The run's hyper-parameters go to the HParams
plugin when the writer opens (so a run that is stopped early, e.g. by ASHA, still appears there
with its last ``val/*`` values); at the end of a run that reaches its test evaluation,
``hparam/test_recall@10`` and ``hparam/test_ndcg@10`` are added.
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
    # every epoch too, so a trial that ASHA stops still shows it in the HParams dashboard
    "best_val_recall@10": "hparam/best_val_recall@10",
}
# Metrics the HParams dashboard shows beside each run's hyper-parameters.
HPARAM_METRICS = ("val/recall@10", "val/ndcg@10", "hparam/best_val_recall@10",
                  "hparam/test_recall@10", "hparam/test_ndcg@10")


class EpochWriter:
    """Thin wrapper over ``SummaryWriter``; a no-op on ranks other than 0."""

    def __init__(self, logdir: str | Path, enabled: bool, purge_step: int | None = None,
                 hparams: dict | None = None):
        self.writer = None
        self._session_end = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        # purge_step drops events past the resumed epoch, so a resumed run has no duplicates.
        self.writer = SummaryWriter(str(logdir), purge_step=purge_step)
        if hparams is not None:
            clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                     for k, v in hparams.items()}
            experiment, start, self._session_end = hparams_summary(
                clean, dict.fromkeys(HPARAM_METRICS, 0.0))
            file_writer = self.writer._get_file_writer()
            file_writer.add_summary(experiment)
            file_writer.add_summary(start)

    def epoch(self, step: int, metrics: dict) -> None:
        if self.writer is None:
            return
        for key, tag in SCALARS.items():
            if key in metrics:
                self.writer.add_scalar(tag, float(metrics[key]), step)
        self.writer.flush()

    def final(self, step: int, metrics: dict) -> None:
        """End-of-run figures as ``hparam/<name>`` scalars, and the HParams session end."""
        if self.writer is None:
            return
        for key, value in metrics.items():
            self.writer.add_scalar(f"hparam/{key}", float(value), step)
        if self._session_end is not None:
            self.writer._get_file_writer().add_summary(self._session_end)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

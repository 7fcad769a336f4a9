"""Callbacks beyond Lightning's own."""

from __future__ import annotations

import pytorch_lightning as pl


class StopAfterEpochs(pl.Callback):
    """Stop cleanly after ``epochs`` epochs *of this run* (checkpoints written as usual).

    For job schedulers with time limits: run a long schedule in chunks, each chunk resuming
    from the previous ``last.ckpt`` with ``ckpt_path=``; the learning-rate schedule and the
    data order follow the full ``max_epochs`` as if the run had never stopped.
    """

    def __init__(self, epochs: int):
        self.epochs = int(epochs)
        self._start: int | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is None:
            self._start = trainer.current_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is not None and trainer.current_epoch + 1 - self._start >= self.epochs:
            trainer.should_stop = True

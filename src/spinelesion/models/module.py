"""LightningModule: two-task training with masked losses, validation AUCs, exact resume."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from spinelesion.config_schema import LossConfig, OptimizerConfig, SchedulerConfig, validated
from spinelesion.labels import IGNORE_INDEX, TASKS
from spinelesion.models.batch import channels_last_3d, channels_last_helps
from spinelesion.models.networks import build_network

log = logging.getLogger(__name__)


def masked_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, int]:
    """Weighted mean cross-entropy over rows whose label is known; 0 (still in the graph)
    when the batch has none, so one task's unknown labels never turn the loss into NaN."""
    valid = target != IGNORE_INDEX
    n = int(valid.sum())
    if n == 0:
        return logits.sum() * 0.0, 0
    per_row = F.cross_entropy(
        logits[valid].float(), target[valid], weight=weight, reduction="none", label_smoothing=label_smoothing
    )
    denom = (
        weight[target[valid]].sum() if weight is not None else torch.tensor(float(n), device=logits.device)
    )
    return per_row.sum() / denom, n


def class_weights_from_counts(counts: np.ndarray, mode: str) -> torch.Tensor | None:
    """``none``, ``inverse`` or ``sqrt_inverse`` class frequency, normalised to mean 1 over present classes."""
    if mode == "none":
        return None
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    power = {"inverse": 1.0, "sqrt_inverse": 0.5}[mode]
    w[present] = counts[present] ** -power
    w[present] /= w[present].mean()
    return torch.tensor(w, dtype=torch.float32)


class SpineLesionModule(pl.LightningModule):
    """Trains :class:`~spinelesion.models.networks.MultiTaskNet` on both tasks at once.

    Args:
        net: network config for :func:`build_network` (backbone name and its options).
        optimizer: ``lr``, ``weight_decay``, ``betas``.
        scheduler: ``name`` (``onecycle`` | ``cosine`` | ``none``), ``warmup_fraction``.
        loss: ``task_weights`` {task: float}, ``class_weights`` (none | inverse | sqrt_inverse),
            ``label_smoothing``.
        seed: reseeds torch's RNG at every epoch start from (seed, epoch), so that a run
            resumed from an epoch-end checkpoint continues exactly as an uninterrupted one.
        channels_last: channels-last 3D memory format (faster convolutions on recent GPUs and,
            through oneDNN, on the CPU); ``auto`` turns it on where it helps
            (:func:`~spinelesion.models.batch.channels_last_helps`).
        roi, reference: the input the network was trained on (ROI shape/spacing/margin and
            reference-sequence rule); unused here, saved in the checkpoint so that a
            checkpoint alone is enough to evaluate or predict.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        loss: Mapping[str, Any] | None = None,
        seed: int = 0,
        channels_last: bool | str = "auto",
        roi: Mapping[str, Any] | None = None,
        reference: str = "auto",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = build_network(dict(net))
        # Typed and checked here, where they are read: a misspelt key is an error naming it.
        self.opt_cfg = validated(OptimizerConfig, optimizer, "model.optimizer")
        self.sched_cfg = validated(SchedulerConfig, scheduler, "model.scheduler")
        self.loss_cfg = validated(LossConfig, loss, "model.loss")
        self.seed = seed
        self.channels_last_cfg = channels_last
        self.channels_last = channels_last is True
        for task, classes in TASKS.items():
            self.register_buffer(f"class_weight_{task}", torch.ones(len(classes)))
        self._val_outputs: dict[str, list[torch.Tensor]] = {}

    def on_train_start(self) -> None:
        import time

        self._fit_t0 = time.perf_counter() - float(getattr(self, "_elapsed_before", 0.0))

    def on_fit_start(self) -> None:
        if self.channels_last_cfg == "auto":
            self.channels_last = channels_last_helps(self.device)
        if self.channels_last:
            self.net = channels_last_3d(self.net)

    # -- setup -----------------------------------------------------------------------------
    def set_class_weights(self, counts: Mapping[str, np.ndarray]) -> None:
        mode = self.loss_cfg.class_weights
        for task in TASKS:
            w = class_weights_from_counts(counts[task], mode)
            if w is not None:
                getattr(self, f"class_weight_{task}").copy_(w)
        log.info(
            "class weights (%s): %s", mode, {t: getattr(self, f"class_weight_{t}").tolist() for t in TASKS}
        )

    # -- forward and loss --------------------------------------------------------------------
    def _prep(self, image: torch.Tensor) -> torch.Tensor:
        return image.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else image

    def forward(self, image: torch.Tensor, available: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.net(self._prep(image), available)

    def _losses(
        self, logits: tuple[torch.Tensor, ...], batch: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        weights = self.loss_cfg.task_weights or {}
        smoothing = float(self.loss_cfg.label_smoothing)
        out: dict[str, torch.Tensor] = {}
        total: torch.Tensor | float = 0.0
        for i, task in enumerate(TASKS):
            cw = getattr(self, f"class_weight_{task}")
            loss, _n = masked_cross_entropy(logits[i], batch[task], cw, smoothing)
            out[task] = loss
            total = total + float(weights.get(task, 1.0)) * loss
        out["total"] = torch.as_tensor(total)
        return out

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"], batch["available"])
        losses = self._losses(logits, batch)
        bs = batch["image"].shape[0]
        self.log("train/loss", losses["total"], prog_bar=True, batch_size=bs)
        for task in TASKS:
            self.log(f"train/loss_{task}", losses[task], batch_size=bs)
        return losses["total"]

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(batch["image"], batch["available"])
        losses = self._losses(logits, batch)
        self.log(
            "val/loss", losses["total"], prog_bar=True, batch_size=batch["image"].shape[0], sync_dist=True
        )
        for i, task in enumerate(TASKS):
            self._val_outputs.setdefault(f"logits_{task}", []).append(logits[i].detach().float().cpu())
            self._val_outputs.setdefault(f"target_{task}", []).append(batch[task].detach().cpu())

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = {}

    def on_validation_epoch_end(self) -> None:
        from spinelesion.scoring.metrics import auc_benign_vs_pathologic, auc_macro

        if not self._val_outputs:
            return
        gathered = {k: torch.cat(v) for k, v in self._val_outputs.items()}
        if self.trainer.world_size > 1:  # every rank scores the whole validation set
            gathered = {
                k: torch.as_tensor(self.all_gather(v)).flatten(0, 1).cpu() for k, v in gathered.items()
            }
        scores = {}
        for task in TASKS:
            probs = torch.softmax(gathered[f"logits_{task}"], 1).numpy()
            y = gathered[f"target_{task}"].numpy()
            scores[f"auc_{task}"] = auc_macro(y, probs)
        scores["auc_benign_vs_pathologic"] = auc_benign_vs_pathologic(
            gathered["target_fracture"].numpy(), torch.softmax(gathered["logits_fracture"], 1).numpy()
        )
        defined = [
            v
            for k, v in scores.items()
            if k in ("auc_compartment", "auc_benign_vs_pathologic") and v is not None
        ]
        scores["score"] = float(np.mean(defined)) if defined else 0.0
        for k, v in scores.items():
            self.log(
                f"val/{k}", float("nan") if v is None else float(v), prog_bar=k == "score", sync_dist=False
            )
        if hasattr(self, "_fit_t0"):  # training seconds so far: learning curves against time
            import time

            self.log("time/train_seconds", time.perf_counter() - self._fit_t0, sync_dist=False)

    # -- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        lr = float(self.opt_cfg.lr)
        beta1, beta2 = (float(b) for b in self.opt_cfg.betas)
        opt = torch.optim.AdamW(
            self.parameters(), lr=lr, weight_decay=float(self.opt_cfg.weight_decay), betas=(beta1, beta2)
        )
        name = self.sched_cfg.name
        if name == "none":
            return opt
        total = int(self.trainer.estimated_stepping_batches)
        sched: torch.optim.lr_scheduler.LRScheduler
        if name == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(
                opt, max_lr=lr, total_steps=max(total, 1), pct_start=float(self.sched_cfg.warmup_fraction)
            )
        elif name == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
        else:
            raise ValueError(f"unknown scheduler '{name}'; use onecycle, cosine or none")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout draws from torch's global RNG, which data loading also touches at moments
        # that differ between a fresh and a resumed run; seeding it from (seed, step) right
        # before every step makes a resumed run continue exactly as an uninterrupted one.
        torch.manual_seed(int(np.random.SeedSequence([self.seed, self.global_step]).generate_state(1)[0]))

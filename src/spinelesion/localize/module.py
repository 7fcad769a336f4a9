"""The spine locator's training step: a Lightning module around its U-Net, Dice + cross-entropy."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from spinelesion.localize.model import LocatorSettings, build_locator_net


class LocatorModule(pl.LightningModule):
    def __init__(self, settings: LocatorSettings, lr: float = 5e-3, steps: int = 800) -> None:
        super().__init__()
        from monai.losses import DiceCELoss

        self.settings = settings
        self.net = build_locator_net(settings)
        self.loss = DiceCELoss(
            sigmoid=True, batch=True
        )  # Dice over the batch: a crop without body is no 1.0 loss
        self.lr, self.steps = float(lr), int(steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.net(batch["image"]), batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=int(batch["image"].shape[0]))
        return loss

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=max(self.steps, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

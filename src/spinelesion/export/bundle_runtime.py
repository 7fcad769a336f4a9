"""What a MONAI bundle's ``inference.json`` builds: the network as MONAI's bundle tools call it
(:class:`BundleNet`), and what runs after the transforms: classify the ROIs of one study item
and write its predictions.

The numbers are those of ``spinelesion-predict``: logits (averaged over the model's test-time
mirrors), divided by the per-task temperature stored with the weights, softmax, labels from
the model's decision rule.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spinelesion.labels import SEQUENCES, TASKS
from spinelesion.models.networks import build_network, tempered_softmax
from spinelesion.models.tta import forward_tta, mirrors_of

log = logging.getLogger(__name__)

DISCLAIMER = (
    "demonstration model trained on synthetic lesions (spinelesion's phantom, and lesions painted "
    "into real normal spines); NOT a clinical tool: never use it for diagnosis or treatment decisions"
)
TASK_SIZES: list[int] = [len(classes) for classes in TASKS.values()]
"""Columns of each task in :class:`BundleNet`'s output, in :data:`TASKS` order."""


class BundleNet(nn.Module):
    """The network as MONAI's bundle tools call it: one tensor in, one tensor out.

    ``forward(image)``, ``image`` (B, 4, *roi) in :data:`SEQUENCES` order, returns the logits of
    all tasks side by side, (B, 4 + 3): compartment, then fracture (:data:`TASK_SIZES`). The
    availability flags the network also reads are derived from the image, a channel counting as
    present when any of its voxels is non-zero (a missing sequence is a zero channel), unless
    ``available`` (B, 4) is given: the bundle's ``run`` passes the reader's flags, so that an
    available sequence whose crop happens to be all zero is flagged as ``spinelesion-predict``
    flags it.

    Submodule and buffer names are those of :class:`~spinelesion.models.networks.MultiTaskNet`
    (the constructor takes its config), so ``models/model.pt`` loads into either; the forward is
    MultiTaskNet's, written so that ``torch.jit.script`` compiles it (``monai.bundle ckpt_export``).
    """

    # No class-level attribute annotations: under ``from __future__ import annotations`` they are
    # strings, which TorchScript cannot resolve (MultiTaskNet's ``temperature: torch.Tensor`` is
    # why it does not script).

    def __init__(self, **network: Any):
        super().__init__()
        net = build_network(dict(network))
        self.backbone = net.backbone
        self.heads = net.heads
        self.register_buffer("temperature", net.get_buffer("temperature").detach().clone())

    def forward(self, image: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
        if available is None:
            available = image.flatten(2).abs().amax(dim=2) > 0
        feats = torch.cat([self.backbone(image), available.to(image.dtype)], dim=1)
        return torch.cat([head(feats) for head in self.heads], dim=1)


class RoiClassifier:
    """``image`` (R, C, *roi) and ``available`` (R, C) -> ``probabilities`` {task: (R, K)}.

    ``network`` is a :class:`BundleNet` (logits side by side) or, in bundles exported before it,
    a ``MultiTaskNet`` (a tuple of logits per task).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        tta: Sequence[str] | None = None,
    ):
        self.network = network.eval()
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        self.tta = mirrors_of(tta, "inference.json tta")

    def __call__(self, item: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(item)
        images = torch.as_tensor(d["image"]).float()
        flags = torch.as_tensor(d["available"]).float()
        temps = self.network.get_buffer("temperature").detach().float().to(self.device)
        out: dict[str, list[np.ndarray]] = {t: [] for t in TASKS}
        with torch.inference_mode():
            for s in range(0, images.shape[0], self.batch_size):
                logits = forward_tta(
                    self._logits,
                    images[s : s + self.batch_size].to(self.device),
                    flags[s : s + self.batch_size].to(self.device),
                    self.tta,
                )
                for task, p in zip(TASKS, tempered_softmax(logits, temps), strict=True):
                    out[task].append(p.cpu().numpy())
        d["probabilities"] = {t: np.concatenate(v) for t, v in out.items()}
        return d

    def _logits(self, image: torch.Tensor, available: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-task logits; the reader's flags are passed, never derived from the crops."""
        out = self.network(image, available)
        if isinstance(out, torch.Tensor):  # BundleNet; forward_tta would index its rows as tasks
            return tuple(out.split(TASK_SIZES, dim=1))
        return tuple(out)


class PredictionWriter:
    """One ``predictions.json`` per study under ``output_dir/<study_id>/``, in the layout of
    ``spinelesion-predict`` (without saliency: the bundle does not compute it)."""

    def __init__(
        self,
        output_dir: str | Path,
        model_info: Mapping[str, Any] | None = None,
        decision: Mapping[str, Any] | None = None,
    ):
        from spinelesion.models.decision import DecisionRule

        self.output_dir = Path(output_dir)
        self.model_info = dict(model_info or {})
        self.decision = DecisionRule.from_meta({"decision": dict(decision)} if decision else None)

    def __call__(self, item: Mapping[Hashable, Any]) -> Path:
        from spinelesion.atomic import write_json
        from spinelesion.inference.writers import safe_name

        probs = item["probabilities"]
        rois = []
        for i, center in enumerate(item["rois"]):
            rec: dict[str, Any] = {
                "roi_id": f"roi{i + 1:02d}",
                "center_lps_mm": [float(v) for v in center],
                "source": "given",
            }
            for task, classes in TASKS.items():
                p = np.asarray(probs[task][i], dtype=np.float64)
                rec[task] = {
                    "label": classes[self.decision.label(task, p)],
                    "probabilities": {c: float(v) for c, v in zip(classes, p, strict=True)},
                }
            rois.append(rec)
        study_id = str(item.get("study_id") or "study")
        path = self.output_dir / safe_name(study_id) / "predictions.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(
            path,
            {
                "study_id": study_id,
                "model": self.model_info,
                "inputs": {s: (item.get("sources") or {}).get(s) for s in SEQUENCES},
                "reference": item.get("reference"),
                "rois": rois,
                "disclaimer": DISCLAIMER,
            },
        )
        log.info("%d ROI(s) of %s -> %s", len(rois), study_id, path)
        return path

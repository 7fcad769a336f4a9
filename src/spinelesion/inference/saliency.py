"""Saliency maps with MONAI's CAMs and occlusion, computed in batches and pasted back by geometry.

MONAI's default CAM post-processing maps (min, max) to (1, 0), i.e. it *inverts* the map
(meant for some colour maps). Here the raw ReLU'd CAM is kept and each map is divided by
its own maximum, so 1 is the most salient voxel of that ROI and 0 means no evidence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from spinelesion.data.roi import sample_grid
from spinelesion.labels import TASKS
from spinelesion.models.batch import autocast_for

METHODS = ("gradcam", "gradcampp", "occlusion")


class TaskLogits(nn.Module):
    """One task's logits from a single tensor, the call signature MONAI's CAMs expect."""

    def __init__(self, net: nn.Module, task_index: int, available: torch.Tensor):
        super().__init__()
        self.net = net
        self.task_index = task_index
        self.available = available
        # A new module is in training mode; MONAI's CAM restores the wrapper's mode after its
        # pass, which would leave the network in training mode (BatchNorm statistics then drift
        # study after study, and predictions with them).
        self.train(net.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.available[: x.shape[0]].to(x.device))[self.task_index]


def unit_max(maps: torch.Tensor) -> torch.Tensor:
    """Per-map scaling to [0, 1] by the map's own maximum; all-zero maps stay zero."""
    maps = maps.clamp(min=0)
    peak = maps.flatten(1).amax(1).clamp(min=1e-12)
    return maps / peak.view(-1, *([1] * (maps.ndim - 1)))


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@contextlib.contextmanager
def hooks_removed_after(module: nn.Module) -> Iterator[None]:
    """Remove every hook registered on ``module`` inside the block.

    MONAI's CAMs register forward and backward hooks on the target layer and never remove
    them: a predictor would pile up hooks study after study (slower, more memory) and a
    network with hooks cannot be exported to TorchScript.
    """
    before_f, before_b = set(module._forward_hooks), set(module._backward_hooks)
    try:
        yield
    finally:
        for key in set(module._forward_hooks) - before_f:
            del module._forward_hooks[key]
        for key in set(module._backward_hooks) - before_b:
            del module._backward_hooks[key]
        if not module._backward_hooks:
            module._is_full_backward_hook = None


def cam_maps(
    net: nn.Module,
    images: torch.Tensor,
    available: torch.Tensor,
    class_idx: Sequence[int],
    task_index: int,
    target_layer: str,
    method: str = "gradcam",
    amp: bool | str = "auto",
) -> torch.Tensor:
    """Grad-CAM or Grad-CAM++ for a batch of ROIs and one task: (R, X, Y, Z) in [0, 1]."""
    from monai.visualize import GradCAM, GradCAMpp

    cls = {"gradcam": GradCAM, "gradcampp": GradCAMpp}[method]
    wrapper = TaskLogits(net, task_index, available)
    idx = torch.as_tensor(list(class_idx), device=images.device)
    with (
        hooks_removed_after(net.get_submodule(target_layer)),
        torch.enable_grad(),
        autocast_for(images.device, amp),
    ):
        cam = cls(nn_module=wrapper, target_layers=f"net.{target_layer}", postprocessing=_identity)
        if method == "gradcampp":
            # MONAI's Grad-CAM++ multiplies a (B,) score into (B, C, ...) gradients, which only
            # broadcasts for one sample at a time: run it per ROI.
            maps = torch.cat(
                [cam(images[i : i + 1], class_idx=idx[i : i + 1]) for i in range(images.shape[0])]
            )
        else:
            maps = cam(images, class_idx=idx)
    return unit_max(maps[:, 0].float().detach())


def gradcam_all_tasks(
    net: nn.Module,
    images: torch.Tensor,
    available: torch.Tensor,
    class_idx: dict[str, Sequence[int]],
    target_layer: str,
    amp: bool | str = "auto",
) -> dict[str, torch.Tensor]:
    """Grad-CAM of every task from one forward pass: (R, X, Y, Z) in [0, 1] per task.

    The same map as MONAI's GradCAM run one ROI at a time (ReLU of the activations at
    ``target_layer`` weighted by their spatially averaged gradients, trilinear upsampling),
    for a fifth of its time: one forward for both tasks instead of one each, and the
    gradients flow back only from the logits to the target layer (no weight gradients, no
    pass through the layers before it). Batched, each ROI's map is its own class's: MONAI's
    ``logits[:, class_idx]`` sums every ROI's class into every ROI's score.
    """
    layer = net.get_submodule(target_layer)
    acts: list[torch.Tensor] = []

    def leaf(_module: nn.Module, _inp: object, output: torch.Tensor) -> torch.Tensor:
        acts.append(output.detach().requires_grad_(True))  # the graph starts here
        return acts[-1]

    frozen = [p for p in net.parameters() if p.requires_grad]
    training = net.training
    handle = layer.register_forward_hook(leaf)
    try:
        net.eval()
        for p in frozen:
            p.requires_grad_(False)
        with torch.enable_grad(), autocast_for(images.device, amp):
            logits = net(images, available.to(images.device))
        acti = acts[-1]
        out = {}
        for t, task in enumerate(TASKS):
            idx = torch.as_tensor(list(class_idx[task]), device=images.device, dtype=torch.long)
            score = logits[t].gather(1, idx[:, None]).sum()
            (grad,) = torch.autograd.grad(score, acti, retain_graph=t < len(TASKS) - 1)
            weights = grad.flatten(2).mean(2).view(*grad.shape[:2], *[1] * (grad.ndim - 2))
            cam = torch.relu((weights * acti.detach()).sum(1, keepdim=True))
            cam = F.interpolate(cam, size=tuple(images.shape[2:]), mode="trilinear", align_corners=False)
            out[task] = unit_max(cam[:, 0].float().detach())
    finally:
        handle.remove()
        for p in frozen:
            p.requires_grad_(True)
        net.train(training)
    return out


class AllTaskLogits(nn.Module):
    """Every task's logits side by side, (B, sum of class counts): one occlusion pass serves all."""

    def __init__(self, net: nn.Module, available: torch.Tensor):
        super().__init__()
        self.net = net
        self.available = available
        self.train(net.training)  # as TaskLogits: MONAI restores the wrapper's mode after its pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(list(self.net(x, self.available[: x.shape[0]].to(x.device))), dim=1)


def occlusion_maps(
    net: nn.Module,
    images: torch.Tensor,
    available: torch.Tensor,
    class_idx: dict[str, Sequence[int]],
    mask_size: Sequence[int] = (8, 12, 12),
    overlap: float = 0.5,
    n_batch: int = 64,
) -> dict[str, torch.Tensor]:
    """Occlusion sensitivity of every task: the drop of each ROI's class logit when a Gaussian
    patch is masked, (R, X, Y, Z) in [0, 1] per task.

    One MONAI ``OcclusionSensitivity`` pass per ROI for all tasks: the network answers every
    task in the same forward, so occluding once and reading each task's class is the map of a
    pass per task at half the forwards.
    """
    from monai.visualize import OcclusionSensitivity

    drops: dict[str, list[torch.Tensor]] = {task: [] for task in TASKS}
    for r in range(images.shape[0]):
        wrapper = AllTaskLogits(net, available[r : r + 1].expand(n_batch, -1))
        occ = OcclusionSensitivity(
            wrapper,
            mask_size=tuple(mask_size),
            n_batch=n_batch,
            overlap=overlap,
            mode="gaussian",
            activate=False,
        )
        with torch.no_grad():
            logits = list(net(images[r : r + 1], available[r : r + 1].to(images.device)))
            sizes, base = [int(o.shape[1]) for o in logits], torch.cat(logits, dim=1)[0]
            occ_map, _ = occ(images[r : r + 1])
        start = 0
        for task, size in zip(TASKS, sizes, strict=True):
            c = start + int(class_idx[task][r])
            drops[task].append((base[c] - occ_map[0, c]).clamp(min=0)[None])
            start += size
    return {task: unit_max(torch.cat(maps).float()) for task, maps in drops.items()}


def saliency(
    net: nn.Module,
    images: torch.Tensor,
    available: torch.Tensor,
    class_idx: dict[str, Sequence[int]],
    method: str = "gradcam",
    target_layer: str | None = None,
    **kwargs: object,
) -> dict[str, torch.Tensor]:
    """Maps for every task, for the class given per ROI (usually the predicted one); CAMs at
    ``target_layer``, by default the network's registry-declared ``saliency_layer``."""
    target_layer = target_layer or str(getattr(net, "saliency_layer", ""))
    if method not in METHODS:
        raise ValueError(f"unknown saliency method '{method}'; choose from {', '.join(METHODS)}")
    out = {}
    training = net.training
    try:
        if method == "occlusion":
            return occlusion_maps(net, images, available, class_idx, **kwargs)  # type: ignore[arg-type]  # kwargs: the occlusion settings a caller passes through
        for t, task in enumerate(TASKS):
            if method == "gradcam" and t == 0:
                out.update(gradcam_all_tasks(net, images, available, class_idx, target_layer))
            elif method != "gradcam":
                out[task] = cam_maps(net, images, available, class_idx[task], t, target_layer, method)
    finally:
        net.train(training)  # whatever the CAM did: the caller's mode (eval for prediction) is kept
    return out


def paste_to_grid(
    maps: torch.Tensor | np.ndarray,
    roi_affines: Sequence[np.ndarray],
    dst_affine: np.ndarray,
    dst_shape: Sequence[int],
) -> np.ndarray:
    """Resample ROI-grid maps (R, X, Y, Z) onto a study grid: (R, *dst_shape), 0 outside each ROI."""
    out = np.zeros((len(roi_affines), *[int(n) for n in dst_shape]), np.float32)
    for r in range(len(roi_affines)):
        box = paste_box(maps, roi_affines[r], dst_affine, dst_shape, r)
        if box is not None:
            out[(r, *box[0])] = box[1]
    return out


def paste_box(
    maps: torch.Tensor | np.ndarray,
    roi_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: Sequence[int],
    index: int = 0,
) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """ROI map ``index`` sampled on the part of the study grid its ROI covers: (slices, values in [0, 1]).

    Only the ROI's bounding box (plus a voxel for interpolation) is sampled: the rest of the
    study grid is 0 by definition, and sampling it all made writing the slowest step.
    ``maps[index]`` may also hold several maps of the ROI (C, X, Y, Z), one per task: they
    share one sampling grid (values (C, ...), each equal to its map pasted alone, ~40% faster
    than one call per map).
    """
    m = torch.as_tensor(maps[index]).float()
    channels = m.ndim == 4
    m = m if channels else m[None]
    roi_shape = np.asarray(m.shape[1:], dtype=np.float64)
    corners = np.array(
        [[i, j, k, 1.0] for i in (-1, roi_shape[0]) for j in (-1, roi_shape[1]) for k in (-1, roi_shape[2])]
    ).T
    ijk = (np.linalg.inv(dst_affine) @ np.asarray(roi_affine, np.float64) @ corners)[:3]
    lo = np.maximum(np.floor(ijk.min(axis=1)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(ijk.max(axis=1)).astype(int) + 2, np.asarray(dst_shape, int))
    if np.any(hi <= lo):
        return None
    sub = np.array(dst_affine, np.float64)
    sub[:3, 3] = dst_affine[:3, :3] @ lo + dst_affine[:3, 3]
    values = sample_grid(m, roi_affine, sub, tuple(int(n) for n in hi - lo))[0].clamp(0.0, 1.0).numpy()
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True)), values if channels else values[
        0
    ]

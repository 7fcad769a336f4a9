"""Export the network to TorchScript and ONNX, and check that the exports agree with eager.

Both exports take ``(image, available)`` and return raw logits per task in
:data:`~spinelesion.labels.TASKS` order; temperature scaling stays outside (it is in
``metadata.json``), so every runtime is calibrated the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from spinelesion.atomic import atomic_path
from spinelesion.labels import SEQUENCES, TASKS

log = logging.getLogger(__name__)


def example_inputs(
    roi_shape: tuple[int, int, int], batch: int = 2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand((batch, len(SEQUENCES), *roi_shape), generator=g)
    available = torch.ones(batch, len(SEQUENCES))
    available[-1, -1] = 0.0  # one missing sequence, so the flag path is traced with real values
    return image, available


def export_torchscript(net: torch.nn.Module, path: str | Path, roi_shape: tuple[int, int, int]) -> Path:
    net = net.eval().cpu()
    with torch.no_grad():
        traced = torch.jit.trace(net, example_inputs(roi_shape), check_trace=True)
    with atomic_path(path) as tmp:
        traced.save(str(tmp))
    return Path(path)


def export_onnx(
    net: torch.nn.Module, path: str | Path, roi_shape: tuple[int, int, int], opset: int = 17
) -> Path:
    """ONNX with a dynamic batch axis (TorchScript-based exporter: no onnxscript needed)."""
    net = net.eval().cpu()
    names = list(TASKS)
    axes = {n: {0: "batch"} for n in ["image", "available", *names]}
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(
            net,
            example_inputs(roi_shape),
            str(tmp),
            input_names=["image", "available"],
            output_names=names,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return Path(path)


def onnx_session(path: str | Path, threads: int | None = None) -> object:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def parity(
    net: torch.nn.Module,
    torchscript_path: str | Path | None,
    onnx_path: str | Path | None,
    roi_shape: tuple[int, int, int],
    batch: int = 3,
) -> dict[str, float]:
    """Largest absolute logit difference of each export against eager, on fresh inputs."""
    image, available = example_inputs(roi_shape, batch=batch, seed=1)
    with torch.no_grad():
        ref = [t.numpy() for t in net.eval().cpu()(image, available)]
    out: dict[str, float] = {}
    if torchscript_path:
        ts = torch.jit.load(str(torchscript_path))
        with torch.no_grad():
            got = [t.numpy() for t in ts(image, available)]
        out["torchscript"] = max(float(np.abs(a - b).max()) for a, b in zip(ref, got, strict=True))
    if onnx_path:
        sess = onnx_session(onnx_path)
        got = sess.run(None, {"image": image.numpy(), "available": available.numpy()})  # type: ignore[attr-defined]  # onnxruntime's stubs omit InferenceSession.run
        out["onnx"] = max(float(np.abs(a - b).max()) for a, b in zip(ref, got, strict=True))
    return out

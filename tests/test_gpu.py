"""GPU paths: mixed precision, channels-last, compile. Skipped where CUDA is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spinelesion.models.networks import build_network

pytestmark = pytest.mark.gpu
NET = {"backbone": "spinecnn", "widths": [16, 32, 64, 128], "hidden": 64}


def test_bf16_channels_last_forward_matches_fp32():
    torch.manual_seed(0)
    net = build_network(NET).eval()
    x = torch.randn(4, 4, 32, 48, 48)
    a = torch.ones(4, 4)
    with torch.no_grad():
        ref = [t.softmax(1) for t in net(x, a)]
    gpu = net.cuda().to(memory_format=torch.channels_last_3d)
    xg = x.cuda().contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        got = [t.float().softmax(1).cpu() for t in gpu(xg, a.cuda())]
    for r, g in zip(ref, got, strict=True):
        assert torch.allclose(r, g, atol=0.03)


def test_compiled_forward_matches_eager():
    torch.manual_seed(0)
    net = build_network(NET).eval().cuda()
    x = torch.randn(4, 4, 32, 48, 48, device="cuda")
    a = torch.ones(4, 4, device="cuda")
    compiled = torch.compile(net)
    with torch.no_grad():
        for r, c in zip(net(x, a), compiled(x, a), strict=True):
            assert torch.allclose(r, c, atol=1e-3, rtol=1e-3)


def test_gpu_training_loop_with_bf16_mixed(tiny_dataset: Path, tmp_path: Path):
    from test_training import train_cfg

    from spinelesion.train import train

    cfg = train_cfg(
        tiny_dataset,
        tmp_path / "run",
        ["trainer=gpu", "trainer.max_epochs=2", "evaluate_splits=[val]", "callbacks.progress_bar=null"],
    )
    summary = train(cfg)
    assert summary["epochs"] == 2 and Path(summary["model_dir"], "weights.safetensors").is_file()
    assert summary["metrics"]["val"]["compartment_auc_macro"] is not None


def test_predictor_on_cuda_agrees_with_cpu(tiny_dataset: Path, tmp_path: Path):
    from spinelesion.inference.inputs import from_manifest
    from spinelesion.inference.predictor import Predictor, PredictorConfig

    torch.manual_seed(0)
    net = build_network(NET)
    meta = {"name": "t", "version": "0", "roi": {"shape": [32, 48, 48], "spacing": [1.5] * 3}, "network": NET}
    items, _ = from_manifest(tiny_dataset)
    item = items[0]
    cpu = Predictor(build_network(NET), meta, PredictorConfig(device="cpu", png=False))
    cpu.net.load_state_dict(net.state_dict())
    gpu = Predictor(net, meta, PredictorConfig(device="cuda", png=False, compile=True))
    a = cpu.predict_study(item, tmp_path / "cpu")
    b = gpu.predict_study(item, tmp_path / "gpu")
    for ra, rb in zip(a.rois, b.rois, strict=True):
        for task in ("compartment", "fracture"):
            pa = np.array(list(ra[task]["probabilities"].values()))
            pb = np.array(list(rb[task]["probabilities"].values()))
            assert np.abs(pa - pb).max() < 0.05


def test_batched_augmentation_runs_on_the_gpu_and_is_reproducible():
    from spinelesion.data.augment import AugmentConfig, BatchAugment
    from spinelesion.data.roi import RoiSpec

    spec = RoiSpec()
    aug = BatchAugment(AugmentConfig(), spec)
    image = torch.rand(8, 4, *spec.context_shape, device="cuda")
    avail = torch.ones(8, 4, device="cuda")
    a, fa = aug(image, avail, aug.generator(image.device, 3, 10, 0))
    b, fb = aug(image, avail, aug.generator(image.device, 3, 10, 0))
    assert a.device.type == "cuda" and tuple(a.shape) == (8, 4, *spec.shape)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)  # cuDNN may pick another conv algorithm
    assert torch.equal(fa, fb)
    assert torch.isfinite(a).all() and bool((fa.sum(1) >= 1).all())

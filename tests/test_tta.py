"""Test-time mirroring: one definition, the same numbers in every path that classifies ROIs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from spinelesion.inference.predictor import Predictor, PredictorConfig, tta_mirrors
from spinelesion.labels import TASKS
from spinelesion.models.batch import predict_logits
from spinelesion.models.networks import build_network
from spinelesion.models.tta import forward_tta, mirrors_of

NET = {"backbone": "spinecnn", "widths": [4, 8, 8, 8], "blocks": [1, 1, 1, 1], "hidden": 16, "dropout": 0.0}
ROI = {"shape": [16, 24, 24], "spacing": [2.0, 2.0, 2.0], "margin": 1.25}


def _net() -> torch.nn.Module:
    torch.manual_seed(3)
    net = build_network(NET).eval()
    with torch.no_grad():
        for head in net.heads:  # confident heads: a mirrored ROI gives clearly other logits
            head[-1].weight.mul_(40.0)
    return net


def _rois(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand((n, 4, *ROI["shape"]), generator=g)
    images[:, :, :6] += 2.0  # bright on one side: the mirror image is another input
    return images, torch.ones(n, 4)


def test_mirrors_are_validated_and_only_left_right_is_allowed():
    assert mirrors_of(None) == () and mirrors_of([]) == () and mirrors_of(False) == ()
    assert mirrors_of("lr") == ("lr",) and mirrors_of(["lr", "lr"]) == ("lr",)
    with pytest.raises(ValueError, match=r"tta: unknown mirror\(s\) \['ap'\]"):
        mirrors_of(["ap"])
    assert tta_mirrors("auto", {"tta": ["lr"]}) == ("lr",)
    assert tta_mirrors("auto", {}) == ()  # a model from before mirroring
    assert tta_mirrors(True, {}) == ("lr",) and tta_mirrors(False, {"tta": ["lr"]}) == ()
    with pytest.raises(ValueError, match="auto, true or false"):
        tta_mirrors("sometimes", {})


def test_mirrored_logits_are_the_mean_and_do_not_depend_on_the_side():
    net = _net()
    x, f = _rois()
    with torch.no_grad():
        plain, flipped = net(x, f), net(x.flip(2), f)
        mirrored = forward_tta(net, x, f, ("lr",))
        of_mirror = forward_tta(net, x.flip(2), f, ("lr",))
    for i in range(len(TASKS)):
        assert (plain[i] - flipped[i]).abs().max() > 1e-2  # the net itself is not symmetric
        torch.testing.assert_close(mirrored[i], (plain[i] + flipped[i]) / 2)
        torch.testing.assert_close(mirrored[i], of_mirror[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(forward_tta(net, x, f, ())[i], plain[i])


def test_predictor_and_evaluation_logits_mirror_alike():
    net = _net()
    x, f = _rois()
    meta = {"name": "t", "roi": ROI, "network": NET, "tta": ["lr"]}
    pred = Predictor(net, meta, PredictorConfig(device="cpu", saliency_method="none", png=False))
    assert pred.tta == ("lr",)
    probs, probs_of_mirror = pred.classify(x, f), pred.classify(x.flip(2).contiguous(), f)
    loader = DataLoader(TensorDataset(x, f), batch_size=2)
    batches = ({"image": a, "available": b} for a, b in loader)
    logits = predict_logits(net, batches, device="cpu", tta=("lr",))
    temps = net.temperature.detach().numpy()
    for i, t in enumerate(TASKS):
        np.testing.assert_allclose(probs[t], probs_of_mirror[t], atol=1e-5)
        z = logits[t] / temps[i]
        want = np.exp(z - z.max(1, keepdims=True))
        np.testing.assert_allclose(probs[t], want / want.sum(1, keepdims=True), atol=1e-5)
    single = Predictor(net, meta, PredictorConfig(device="cpu", saliency_method="none", png=False, tta=False))
    assert max(np.abs(single.classify(x, f)[t] - probs[t]).max() for t in TASKS) > 1e-3

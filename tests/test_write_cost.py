"""The shortcuts that keep a study's write cost down give the results of the slow paths they replace.

- Grad-CAM for both tasks from one forward equals MONAI's GradCAM run one ROI at a time.
- The normalisation's CPU quantiles equal ``torch.nanquantile`` bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spinelesion.labels import TASKS


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_gradcam_for_both_tasks_equals_monai_per_roi():
    pytest.importorskip("monai")
    from spinelesion.inference.saliency import cam_maps, gradcam_all_tasks, saliency
    from spinelesion.models.networks import build_network

    torch.manual_seed(0)
    net = build_network({"backbone": "spinecnn", "widths": [4, 8, 8, 16], "hidden": 8}).eval()
    x = torch.randn(5, 4, 16, 24, 24)
    flags = torch.ones(5, 4)
    flags[1, 2] = 0
    classes = {t: [k % len(c) for k in range(5)] for t, c in TASKS.items()}
    layer = "backbone.layers.2"
    fast = gradcam_all_tasks(net, x, flags, classes, layer)
    for t, task in enumerate(TASKS):
        one_by_one = torch.cat(
            [
                cam_maps(net, x[r : r + 1], flags[r : r + 1], classes[task][r : r + 1], t, layer)
                for r in range(5)
            ]
        )
        assert fast[task].shape == (5, 16, 24, 24)
        torch.testing.assert_close(fast[task], one_by_one, atol=1e-5, rtol=0)
    via_api = saliency(net, x, flags, classes, "gradcam", layer)
    assert all(torch.equal(via_api[t], fast[t]) for t in TASKS)
    assert not net.training and all(p.requires_grad for p in net.parameters())
    assert not net.get_submodule(layer)._forward_hooks


def test_cpu_quantiles_equal_nanquantile_bit_for_bit():
    from spinelesion.data.normalize import quantiles_of_valid

    torch.manual_seed(1)
    for shape in [(4, 3, 5000), (2, 2, 7), (1, 1, 1)]:
        x = torch.rand(*shape) * 100
        x[x < 35] = 0
        x[0, 0] = 0  # a row with nothing valid
        valid = x != 0
        q = torch.tensor([0.01, 0.99])
        expected = torch.nanquantile(torch.where(valid, x, torch.full_like(x, float("nan"))), q, dim=-1)
        got = quantiles_of_valid(x, valid, q)
        assert torch.equal(torch.nan_to_num(got, 7.0), torch.nan_to_num(expected, 7.0))
        assert torch.isnan(got[:, 0, 0]).all()


def test_pasting_every_task_at_once_equals_one_map_at_a_time():
    from spinelesion.data.roi import RoiSpec
    from spinelesion.inference.saliency import paste_box

    rng = np.random.default_rng(5)
    spec = RoiSpec(shape=(8, 12, 12), spacing=(1.5, 1.5, 1.5))
    maps = rng.random((3, 2, *spec.shape)).astype(np.float32)  # (ROI, task, X, Y, Z)
    dst = np.array([[0.7, 0.05, 0.0, -20.0], [0.0, 0.68, 0.1, -25.0], [0.0, 0.0, 4.0, -30.0], [0, 0, 0, 1.0]])
    roi_affine = spec.affine(np.array([-12.0, -15.0, -4.0]))
    both = paste_box(maps, roi_affine, dst, (40, 50, 14), 1)
    assert both is not None and both[1].shape[0] == 2
    for k in range(2):
        one = paste_box(maps[:, k], roi_affine, dst, (40, 50, 14), 1)
        assert one is not None and one[0] == both[0]
        assert np.array_equal(one[1], both[1][k])

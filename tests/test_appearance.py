"""Random appearance of whole studies (spinelesion.data.appearance): what a draw may change
(grey levels, contrast, bias, resolution, noise, fat on T1) and what it must keep (shape,
value range, where things are, the order of tissues under a monotone remapping)."""

from __future__ import annotations

import numpy as np
import pytest

from spinelesion.data.appearance import (
    AppearanceConfig,
    appearance_from_dict,
    coarser,
    randomise_sequence,
    randomise_study,
    remap_curve,
)

OFF = AppearanceConfig(
    enabled=True,
    remap_prob=0.0,
    gamma=(1.0, 1.0),
    bias_prob=0.0,
    slice_prob=0.0,
    inplane_prob=0.0,
    noise_prob=0.0,
    fat_suppression_prob=0.0,
)


def tissues() -> np.ndarray:
    """Four flat tissues in bands along axis 1 (values 10, 40, 70, 100) with a bright sphere."""
    img = np.zeros((24, 32, 20), np.float32)
    for k, value in enumerate((10.0, 40.0, 70.0, 100.0)):
        img[:, 8 * k : 8 * k + 8] = value
    z, y, x = np.ogrid[:24, :32, :20]
    img[(z - 12) ** 2 + (y - 16) ** 2 + (x - 10) ** 2 <= 9] = 120.0
    return img


def test_nothing_drawn_is_the_identity() -> None:
    img = tissues()
    out = randomise_sequence(img, "t2", (1.0, 1.0, 1.0), 2, np.random.default_rng(0), OFF)
    np.testing.assert_allclose(out, img, rtol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_monotone_remap_keeps_the_order_of_tissues(seed: int) -> None:
    cfg = AppearanceConfig(enabled=True, remap_prob=1.0, non_monotone_prob=0.0, remap_jitter=1.0)
    img = tissues()
    out = randomise_sequence(img, "t2", (1.0, 1.0, 1.0), 2, np.random.default_rng(seed), _only(cfg, "remap"))
    levels = [float(np.median(out[:, 8 * k : 8 * k + 8])) for k in range(4)]
    assert levels == sorted(levels) and len(set(np.round(levels, 3))) == 4
    curve = remap_curve(np.random.default_rng(seed), cfg, monotone=True)
    assert abs(float(curve(0.0))) < 1e-9 and abs(float(curve(1.0)) - 1.0) < 1e-9
    assert np.all(np.diff(curve(np.linspace(0, 1, 200))) >= -1e-9)


def test_a_draw_changes_contrast_keeps_shape_range_and_is_reproducible() -> None:
    cfg = AppearanceConfig(enabled=True, remap_prob=1.0, bias_prob=1.0, noise_prob=1.0)
    img = tissues()
    a = randomise_study({"t2": img, "t1": img}, (1.0, 1.0, 1.0), 2, np.random.default_rng(3), cfg)
    b = randomise_study({"t2": img, "t1": img}, (1.0, 1.0, 1.0), 2, np.random.default_rng(3), cfg)
    for s in a:
        np.testing.assert_array_equal(a[s], b[s])
        assert a[s].shape == img.shape and a[s].dtype == np.float32 and a[s].min() >= 0
        # the 99.5th percentile keeps its value: an 8-bit study stays in its range
        assert np.percentile(a[s], 99.5) == pytest.approx(np.percentile(img, 99.5), rel=1e-3)
    assert not np.allclose(a["t2"], img, atol=1.0)
    assert not np.allclose(a["t1"], a["t2"])  # each sequence has its own draw


def test_thick_slices_blur_only_along_the_slice_axis() -> None:
    img = np.zeros((16, 16, 40), np.float32)
    img[:, :, ::2] = 100.0  # 1 mm stripes across axis 2
    img[:, ::2, :] += 50.0  # and across axis 1
    out = coarser(img, (1.0, 1.0, 1.0), (None, None, 5.0))
    assert np.std(np.diff(out, axis=2)) < 0.1 * np.std(np.diff(img, axis=2))
    np.testing.assert_allclose(np.diff(out, axis=1)[:, :, 20], np.diff(img, axis=1)[:, :, 20], atol=1e-3)


def test_fat_suppression_only_on_t1() -> None:
    cfg = _only(AppearanceConfig(enabled=True, fat_suppression_prob=1.0, fat_suppression=(0.8, 0.8)), "fat")
    img = tissues()
    t1 = randomise_sequence(img, "t1", (1.0, 1.0, 1.0), 2, np.random.default_rng(0), cfg)
    t2 = randomise_sequence(img, "t2", (1.0, 1.0, 1.0), 2, np.random.default_rng(0), cfg)
    np.testing.assert_allclose(t2, img, rtol=1e-5)
    # on T1 the brightest band (fat) loses signal relative to the middle bands
    ratio_before = 100.0 / 40.0
    assert float(np.median(t1[:, 24:32])) / float(np.median(t1[:, 8:16])) < 0.6 * ratio_before


def test_config_from_hydra_mapping() -> None:
    cfg = appearance_from_dict({"enabled": True, "slice_mm": [3, 5], "copies": 1})
    assert cfg.slice_mm == (3, 5) and cfg.copies == 1
    with pytest.raises(ValueError, match="bogus"):
        appearance_from_dict({"bogus": 1})


def _only(cfg: AppearanceConfig, what: str) -> AppearanceConfig:
    """``cfg`` with every other part switched off."""
    from dataclasses import replace

    keep = {
        "remap": dict(remap_prob=cfg.remap_prob),
        "fat": dict(fat_suppression_prob=cfg.fat_suppression_prob),
    }[what]
    return replace(OFF, **{k: v for k, v in vars(cfg).items() if k in keep or k.startswith(what)})

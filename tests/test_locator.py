"""The spine locator: its ground truth, its region, its files, and scan mode within its region."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spinelesion.localize.model import (
    LocatorSettings,
    SpineLocator,
    build_locator_net,
    load_locator,
    save_locator,
)
from spinelesion.localize.region import body_volume_ml, spine_region

SETTINGS = LocatorSettings(channels=(4, 8), patch=(16, 16, 16))


class BrightIsBody(torch.nn.Module):
    """A stand-in locator network: body wherever the (normalised) image is bright."""

    def __init__(self, level: float = 0.5) -> None:
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > self.level, 10.0, -10.0)


def test_phantom_body_mask_holds_each_vertebra_and_nothing_in_front() -> None:
    from spinelesion.phantom.masks import body_mask
    from tests.helpers_phantom import rendered

    study = rendered("osteoporotic_fracture", seed=3)
    an = study.anatomy
    centres = np.array([v.center for v in an.vertebrae])
    lo, hi = centres.min(0) - 40, centres.max(0) + 40
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = lo
    shape = tuple(int(n) for n in np.ceil((hi - lo) / 2.0))
    mask = body_mask(an, shape, affine)
    inverse = np.linalg.inv(affine)
    for v in an.vertebrae:
        at = np.round(inverse[:3, :3] @ v.center + inverse[:3, 3]).astype(int)
        assert mask[tuple(at)], v.name
        front = np.round(inverse[:3, :3] @ (v.center - [0, v.depth / 2 + 6, 0]) + inverse[:3, 3]).astype(int)
        assert not mask[tuple(front)], v.name  # 6 mm in front of the anterior wall
    # about a body's volume per vertebra (a lumbar body is ~30-40 ml, a cervical one a few)
    per_body = mask.sum() * 8.0 / 1000.0 / len(an.vertebrae)
    assert 2.0 < per_body < 60.0


def test_the_region_reaches_the_canal_and_arches_not_the_abdomen() -> None:
    settings = LocatorSettings(reach_mm=20.0, posterior_mm=50.0)
    prob = np.zeros((40, 60, 60), np.float32)
    prob[15:25, 20:30, 25:33] = 0.9  # a body: 40 x 40 x 32 mm on the 4 mm grid
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    region = spine_region(prob, affine, settings)
    assert region[20, 25, 29]  # the body
    assert region[20, 30 + 12, 29]  # 48 mm behind its posterior wall: the canal, the arch
    assert region[20 + 9, 25, 29]  # 16 mm to its side (a paraspinal mass)
    assert not region[20, 20 - 8, 29]  # 32 mm in front: the abdomen
    assert not region[20 + 13, 25, 29]  # 32 mm to its side
    assert not region[20, 30 + 20, 29]  # 80 mm behind it
    assert region[20, 25, 33 + 15]  # 60 mm above it: the column goes on (a level the locator missed)
    assert not region[20, 25, 33 + 23]  # 92 mm above it: no more
    assert body_volume_ml(prob, affine, 0.5) == pytest.approx(10 * 10 * 8 * 0.064)
    assert not spine_region(np.zeros_like(prob), affine, settings).any()
    speck = np.zeros_like(prob)
    speck[5:7, 5:7, 5:7] = 0.9  # 0.5 ml: not a body
    assert not spine_region(speck, affine, settings).any()


def test_the_column_bridges_a_body_the_locator_missed() -> None:
    """Two bodies found, the one between them not (collapsed, infiltrated): the column through the
    found ones still holds it, following their line (here tilted forwards)."""
    settings = LocatorSettings(reach_mm=10.0, posterior_mm=40.0, extend_mm=40.0)
    prob = np.zeros((40, 80, 100), np.float32)
    prob[15:25, 20:30, 10:18] = 0.9  # lower body
    prob[15:25, 30:40, 50:58] = 0.9  # upper body, 40 mm further back
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    region = spine_region(prob, affine, settings)
    assert region[20, 30, 34]  # the missed middle body's centre, halfway along the line
    assert region[20, 30 + 15, 34]  # its canal, 60 mm behind the line's anterior part
    assert not region[20, 30, 80]  # far above the column's end
    swept_only = spine_region(
        prob, affine, LocatorSettings(reach_mm=10.0, posterior_mm=40.0, half_width_mm=0, front_mm=-100)
    )
    assert not swept_only[20, 25, 34]  # without the column the gap would be lost


def test_locator_files_round_trip_and_refuse_edited_weights(tmp_path: Path) -> None:
    from spinelesion.models.folder import ModelLoadError

    torch.manual_seed(0)
    net = build_locator_net(SETTINGS)
    entry = save_locator(tmp_path, SpineLocator(net, SETTINGS, {"steps": 1}))
    loaded = load_locator(tmp_path, {"locator": entry})
    assert loaded is not None and loaded.settings == SETTINGS and loaded.info == {"steps": 1}
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.inference_mode():
        assert torch.equal(loaded.net(x), net.eval()(x))
    assert load_locator(tmp_path, {}) is None  # a model without one
    data = bytearray((tmp_path / entry["weights"]).read_bytes())
    data[-1] ^= 1
    (tmp_path / entry["weights"]).write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="locator"):
        load_locator(tmp_path, {"locator": entry})
    with pytest.raises(ModelLoadError, match="outside"):
        load_locator(tmp_path, {"locator": {**entry, "weights": "../elsewhere.safetensors"}})
    with pytest.raises(ValueError, match="unknown key"):
        LocatorSettings.from_dict({"reach": 3})


def test_the_seal_covers_the_locator_and_leaves_older_models_alone() -> None:
    from spinelesion.models.folder import INFERENCE_KEYS, seal

    meta = {"network": {"backbone": "spinecnn"}, "roi": {"shape": [8, 8, 8]}, "weights_sha256": "ab"}
    body = json.dumps({k: meta.get(k) for k in INFERENCE_KEYS}, sort_keys=True, separators=(",", ":"))
    import hashlib

    assert seal(meta) == hashlib.sha256(body.encode()).hexdigest()  # as before the locator existed
    with_locator = {**meta, "locator": {"reach_mm": 20.0}}
    assert seal(with_locator) != seal(meta)
    assert seal(with_locator) != seal({**meta, "locator": {"reach_mm": 200.0}})


def _study() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 4-sequence array, T2 only: a bright 'body' on one side, bright noise blobs on the other."""
    rng = np.random.default_rng(0)
    array = np.zeros((4, 60, 100, 80), np.float32)
    array[1] = 100 + 20 * rng.random((60, 100, 80), dtype=np.float32)
    array[1, 25:35, 20:40, 30:45] = 900  # the 'body' (2 mm voxels: 20 x 40 x 30 mm)
    array[1, 25:35, 75:90, 60:75] = 400  # something far behind and below it (normalised: ~1, the body ~2)
    return array, np.diag([2.0, 2.0, 2.0, 1.0]), np.array([False, True, False, False])


def test_scan_searches_only_the_locators_region_and_says_when_it_cannot() -> None:
    from spinelesion.inference.predictor import Predictor, PredictorConfig
    from spinelesion.inference.scan import ScanConfig
    from spinelesion.models.networks import MultiTaskNet

    torch.manual_seed(0)
    net = MultiTaskNet(widths=(4, 8, 8, 8), hidden=8).eval()
    meta = {"network": {}, "roi": {"shape": [16, 16, 16], "spacing": [2.0, 2.0, 2.0], "margin": 1.25}}
    scan = ScanConfig(min_depth_mm=0.0, threshold=0.0, max_rois=8, min_distance_mm=10.0, edge_margin_mm=0.0)
    array, affine, available = _study()
    settings = LocatorSettings(reach_mm=10.0, posterior_mm=20.0, extend_mm=10.0, min_body_ml=4.0)
    whole, warnings, notes = Predictor(net, meta, PredictorConfig(scan=scan)).scan(array, affine, available)
    assert warnings == [] and notes == []  # no locator: the whole field of view
    located = Predictor(net, meta, PredictorConfig(scan=scan), SpineLocator(BrightIsBody(1.5), settings, {}))
    near, warnings, notes = located.scan(array, affine, available)
    assert warnings == [] and notes and notes[0].startswith("scan searched near the spine")
    assert near.windows["relevant"] < whole.windows["relevant"]
    body_y = (np.array([20, 40]) * 2.0 - 10.0, np.array([20, 40]) * 2.0 + 20.0 + 10.0)
    for (
        centre,
        _,
    ) in near.candidates:  # within the body swept 20 mm back, widened 10 mm (one 4 mm voxel of slack)
        assert body_y[0][0] - 4 <= centre[1] <= body_y[1][1] + 4
        assert 30 * 2.0 - 10.0 - 4 <= centre[2] <= 45 * 2.0 + 10.0 + 4
    assert any(c[1] > 130 for c, _ in whole.candidates)  # the far blob was a candidate without the locator
    blind = Predictor(net, meta, PredictorConfig(scan=scan), SpineLocator(BrightIsBody(50.0), settings, {}))
    result, warnings, _ = blind.scan(array, affine, available)
    assert len(warnings) == 1 and "searched the whole field of view" in warnings[0]
    assert result.windows["relevant"] == whole.windows["relevant"]
    off = Predictor(
        net,
        meta,
        PredictorConfig(scan=ScanConfig(**{**scan.__dict__, "spine_locator": False})),
        located.locator,
    )
    assert off.scan(array, affine, available)[0].windows == whole.windows


@pytest.mark.slow  # example drawing, a few training steps and a measurement: ~40 s on the 2-core CPU
def test_a_trained_locator_travels_with_the_model_and_loads_sealed(tmp_path: Path) -> None:
    import yaml

    from spinelesion.config_path import CONFIG_DIR
    from spinelesion.inference.predictor import Predictor
    from spinelesion.models.folder import load_model_folder, save_model_folder
    from spinelesion.models.networks import build_network
    from spinelesion.release.recipe import Stage
    from spinelesion.release.stages import StageContext, with_locator
    from spinelesion.tasks.locator import train_locator
    from tests.helpers_insert import write_toy_backgrounds

    roots = write_toy_backgrounds(tmp_path / "bg", ("toy_01", "toy_02"))
    insert_cfg = yaml.safe_load((Path(CONFIG_DIR) / "insert.yaml").read_text())
    out = tmp_path / "locator"
    entry = train_locator(
        [(roots, {"toy_01": "train", "toy_02": "val"})],
        insert_cfg,
        out,
        settings=LocatorSettings(channels=(4, 8, 8), patch=(16, 32, 32)),
        phantom={"studies": 1, "seed": 5, "val_studies": 1},
        steps=3,
    )
    info = entry["info"]
    # the train subject: T1 and T2 as acquired and under two appearances each, its T2 imaged as T1 and STIR
    assert info["trained_on"]["toy"] == {"train": 2 + 2 * 2 + 2}
    assert set(info["held_out"]) == {"toy", "phantom"} and info["held_out"]["toy"]["bodies"] > 0
    assert json.loads((out / "locator.json").read_text()) == entry

    NET = {"backbone": "spinecnn", "widths": [8, 16, 16, 16], "hidden": 16}
    ROI = {"shape": [16, 16, 16], "spacing": [2.0, 2.0, 2.0], "margin": 1.25}
    save_model_folder(
        build_network(NET),
        tmp_path / "train" / "model",
        {"name": "t", "version": "0", "network": NET, "roi": ROI},
    )
    stage = Stage("located", "with_locator", {"model": "train", "locator": "loc"})
    ctx = StageContext(tmp_path / "located", {"train": tmp_path / "train", "loc": out}, tmp_path, tmp_path)
    model = Path(with_locator(stage, ctx)["model"])
    _, meta = load_model_folder(model)  # sealed with the locator
    assert meta["weights_verified"] and meta["locator"]["weights_sha256"] == entry["weights_sha256"]
    assert Predictor.from_model_dir(model).locator is not None
    edited = json.loads((model / "metadata.json").read_text())
    edited["locator"]["reach_mm"] = 500.0
    (model / "metadata.json").write_text(json.dumps(edited))
    from spinelesion.models.folder import ModelLoadError

    with pytest.raises(ModelLoadError, match="edited"):
        load_model_folder(model)


def test_a_piece_off_the_column_is_not_a_body_and_the_columns_curve_is() -> None:
    """A blob well in front of the bodies (an organ a locator took for bone) does not widen the
    region; bodies along a lordotic curve all stay."""
    from spinelesion.localize.region import on_the_column

    settings = LocatorSettings()
    bodies = np.zeros((30, 80, 120), bool)
    for k in range(7):  # seven bodies along a curve: 12 mm further forward at the middle
        y = 40 + int(round(3 * (1 - ((k - 3) / 3) ** 2)))
        bodies[10:20, y - 4 : y + 4, 10 + 15 * k : 10 + 15 * k + 6] = True
    blob = np.zeros_like(bodies)
    blob[10:20, 5:13, 80:90] = True  # about 130 mm in front of the column
    kept = on_the_column(bodies | blob, np.array([4.0, 4.0, 4.0]), settings)
    assert kept[bodies].all() and not kept[blob].any()
    region = spine_region((bodies | blob).astype(np.float32), np.diag([4.0, 4.0, 4.0, 1.0]), settings)
    assert not region[15, 9, 85]  # the blob's centre is not searched

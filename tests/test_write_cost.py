"""The shortcuts that keep a study's write cost down give the results of the slow paths they replace.

- DICOM outputs: the fast encoder writes pydicom's bytes exactly, and hands anything it
  does not cover to pydicom.
- Grad-CAM for both tasks from one forward equals MONAI's GradCAM run one ROI at a time.
- The normalisation's CPU quantiles equal ``torch.nanquantile`` bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spinelesion.labels import TASKS


@pytest.fixture(scope="module")
def dicom_objects(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("highdicom")
    from spinelesion.inference import dicom_out
    from spinelesion.io.dicom.write import make_uid, write_dicom_series
    from spinelesion.io.volume import Volume

    tmp = tmp_path_factory.mktemp("enc")
    rng = np.random.default_rng(3)
    affine = np.diag([0.8, 0.8, 4.0, 1.0])
    affine[:3, 3] = [-10.0, -12.0, -20.0]
    vol = Volume(rng.random((20, 24, 10)).astype(np.float32) * 500, affine, {})
    files = write_dicom_series(
        vol,
        tmp / "series",
        study={"StudyInstanceUID": make_uid("enc"), "PatientID": "P"},
        series={"SeriesInstanceUID": make_uid("enc", 1), "SeriesDescription": "T2"},
    )
    sources = dicom_out._source_datasets([str(f) for f in files])
    records = []
    for k in range(3):
        rec: dict = {
            "roi_id": f"roi{k}",
            "center_lps_mm": [float(v) for v in affine[:3, 3] + 4.0 * k],
            "source": "given",
        }
        for task, classes in TASKS.items():
            p = rng.dirichlet(np.ones(len(classes)))
            rec[task] = {
                "label": classes[int(p.argmax())],
                "probabilities": dict(zip(classes, map(float, p), strict=True)),
            }
        records.append(rec)
    stack = np.zeros((20, 24, 10, 3), np.uint8)
    stack[2:9, 3:12, 1:6, 0] = rng.integers(0, 256, (7, 9, 5))
    stack[5:15, 8:20, 4:9, 2] = 255
    model = {"name": "m", "version": "1"}
    paths = []
    save = dicom_out.save

    def recording_save(ds, path):  # noqa: ANN001, ANN202
        paths.append(save(ds, path))
        return paths[-1]

    dicom_out.save = recording_save
    try:
        sr = dicom_out.write_sr(tmp / "sr.dcm", records, sources, model)
        seg = dicom_out.write_saliency_seg(
            tmp / "seg.dcm", stack, records, sources, "compartment", model, 9101
        )
    finally:
        dicom_out.save = save
    args = {"records": records, "sources": sources, "stack": stack, "model": model}
    return {"tmp": tmp, "sr": sr, "seg": seg, "paths": paths, "args": args}


@pytest.mark.parametrize("name", ["sr", "seg"])
def test_fast_dicom_encoding_is_byte_identical_to_pydicom(dicom_objects: dict, name: str):
    from spinelesion.inference.dicom_encode import encode_file

    assert dicom_objects["paths"] == ["fast", "fast"]  # neither fell back to pydicom
    ds = dicom_objects[name]
    reference = dicom_objects["tmp"] / f"{name}-pydicom.dcm"
    ds.save_as(str(reference), enforce_file_format=True)
    assert encode_file(ds) == reference.read_bytes()
    assert (
        dicom_objects["tmp"] / f"{name}.dcm"
    ).read_bytes() == reference.read_bytes()  # what dicom_out wrote


def test_what_the_fast_encoder_does_not_cover_goes_to_pydicom(dicom_objects: dict):
    import copy

    import pydicom

    from spinelesion.inference.dicom_encode import Unsupported, encode_file, save

    ds = copy.deepcopy(dicom_objects["sr"])
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Jürgen"
    with pytest.raises(Unsupported):
        encode_file(ds)
    path = dicom_objects["tmp"] / "utf8.dcm"
    assert save(ds, path) == "pydicom"
    assert str(pydicom.dcmread(path).PatientName) == "Müller^Jürgen"


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
    from spinelesion.data.normalize import _quantiles_of_valid

    torch.manual_seed(1)
    for shape in [(4, 3, 5000), (2, 2, 7), (1, 1, 1)]:
        x = torch.rand(*shape) * 100
        x[x < 35] = 0
        x[0, 0] = 0  # a row with nothing valid
        valid = x != 0
        q = torch.tensor([0.01, 0.99])
        expected = torch.nanquantile(torch.where(valid, x, torch.full_like(x, float("nan"))), q, dim=-1)
        got = _quantiles_of_valid(x, valid, q)
        assert torch.equal(torch.nan_to_num(got, 7.0), torch.nan_to_num(expected, 7.0))
        assert torch.isnan(got[:, 0, 0]).all()


def test_dicom_out_module_still_saves_with_pydicom_semantics(dicom_objects: dict):
    import pydicom

    seg = pydicom.dcmread(Path(dicom_objects["tmp"]) / "seg.dcm")
    assert seg.SegmentationType == "FRACTIONAL" and int(seg.NumberOfFrames) > 0


@pytest.mark.parametrize("name", ["sr", "seg"])
def test_fast_dicom_construction_equals_highdicom_alone(
    dicom_objects: dict, name: str, monkeypatch: pytest.MonkeyPatch
):
    """The SR built around an empty root (children attached after) and the SEG given uint8
    fractions are, element for element and byte for byte, what highdicom alone builds."""
    import itertools

    import pydicom.uid

    from spinelesion.inference import dicom_out
    from spinelesion.inference.dicom_encode import encode_file

    assert dicom_out._unit_uint8_segmentation() is not None  # the fast SEG is in use with this highdicom
    args = dicom_objects["args"]
    built = {}
    for fast in (True, False):
        counter = itertools.count(1)
        monkeypatch.setattr(pydicom.uid, "generate_uid", lambda *a, c=counter, **k: f"1.2.3.{next(c)}")
        path = dicom_objects["tmp"] / f"{name}-{'fast' if fast else 'plain'}.dcm"
        if name == "sr":
            ds = dicom_out.write_sr(path, args["records"], args["sources"], args["model"], fast=fast)
        else:
            ds = dicom_out.write_saliency_seg(
                path,
                args["stack"],
                args["records"],
                args["sources"],
                "compartment",
                args["model"],
                9101,
                fast=fast,
            )
        for keyword in ("ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime"):
            if keyword in ds:
                delattr(ds, keyword)
        for item in ds.get("ContributingEquipmentSequence", []):  # highdicom's own entry, with the time
            if "ContributionDateTime" in item:
                del item.ContributionDateTime
        built[fast] = ds
    if name == "seg":
        assert type(built[True]).__name__ == "UnitUint8Segmentation"
        assert int(built[True].NumberOfFrames) > 0
    assert built[True] == built[False]
    assert encode_file(built[True]) == encode_file(built[False])


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

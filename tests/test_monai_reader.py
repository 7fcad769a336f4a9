"""The project's reader under MONAI's LoadImage: same voxels, same geometry (RAS like MONAI's readers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_io import AXIAL, CORONAL, SAGITTAL, make_volume, write_series
from monai.data import MetaTensor, NibabelReader, PydicomReader
from monai.transforms import Compose, EnsureChannelFirstd, LoadImage, LoadImaged, Orientationd, Spacingd

from spinelesion.io.dicom.errors import DicomError
from spinelesion.io.monai_reader import SpineSeriesReader, volume_from_metatensor
from spinelesion.io.nifti import write_nifti
from spinelesion.io.reader import read_volume
from spinelesion.io.volume import LPS_TO_RAS

GRIDS = {
    "sagittal": (SAGITTAL, 0.0),
    "axial": (AXIAL, 0.0),
    "coronal": (CORONAL, 0.0),
    "oblique": (SAGITTAL, 11.0),
}


def _write(tmp_path: Path, grid: str, fmt: str):
    axes, oblique = GRIDS[grid]
    vol = make_volume(axes=axes, oblique_deg=oblique, seed=len(grid))
    if fmt == "dicom":
        write_series(vol, tmp_path / "series")
        return vol, tmp_path / "series"
    return vol, write_nifti(vol, tmp_path / "t2.nii.gz")


def _load(path: Path, **kwargs) -> MetaTensor:
    return LoadImage(reader=SpineSeriesReader(**kwargs), image_only=True)(path)


@pytest.mark.parametrize("fmt", ["dicom", "nifti"])
@pytest.mark.parametrize("grid", list(GRIDS))
def test_loadimage_matches_read_volume_on_generated_grids(tmp_path: Path, grid: str, fmt: str):
    made, path = _write(tmp_path, grid, fmt)
    vol = read_volume(path)
    img = _load(path)
    assert isinstance(img, MetaTensor) and img.dtype == torch.float32
    np.testing.assert_array_equal(img.numpy(), vol.array)
    np.testing.assert_array_equal(img.numpy(), made.array)  # integer-valued: exact through uint16 DICOM
    np.testing.assert_allclose(img.affine.numpy(), LPS_TO_RAS @ vol.affine, atol=1e-9)
    np.testing.assert_allclose(
        img.affine.numpy(), LPS_TO_RAS @ made.affine, atol=1e-4
    )  # the grid it was written on
    assert str(img.meta["space"]) == "RAS"
    np.testing.assert_array_equal(img.meta["spatial_shape"], vol.shape)
    lps = _load(path, affine_lps_to_ras=False)
    np.testing.assert_allclose(lps.affine.numpy(), vol.affine, atol=1e-9)
    assert str(lps.meta["space"]) == "LPS"
    back = volume_from_metatensor(img)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-9)
    np.testing.assert_array_equal(back.array, vol.array)


@pytest.mark.parametrize("grid", ["sagittal", "oblique"])
def test_nifti_like_monai_nibabel_reader_through_orientation_and_spacing(tmp_path: Path, grid: str):
    _, path = _write(tmp_path, grid, "nifti")
    ours, theirs = (
        LoadImage(reader=r, image_only=True)(path) for r in (SpineSeriesReader(), NibabelReader())
    )
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_allclose(ours.affine.numpy(), theirs.affine.numpy(), atol=1e-6)
    pipeline = [
        Orientationd(keys="img", axcodes="RAS", labels=None),
        Spacingd(keys="img", pixdim=(2.0, 2.0, 2.0)),
    ]
    out = [
        Compose([LoadImaged(keys="img", reader=r), EnsureChannelFirstd(keys="img"), *pipeline])(
            {"img": str(path)}
        )["img"]
        for r in (SpineSeriesReader(), NibabelReader())
    ]
    assert out[0].shape == out[1].shape
    np.testing.assert_allclose(out[0].numpy(), out[1].numpy(), atol=1e-3)
    np.testing.assert_allclose(out[0].affine.numpy(), out[1].affine.numpy(), atol=1e-6)
    # labels=None: Orientation reads meta["space"], so the LPS variant lands on the same voxels.
    lps = Compose(
        [
            LoadImaged(keys="img", reader=SpineSeriesReader(affine_lps_to_ras=False)),
            EnsureChannelFirstd(keys="img"),
            pipeline[0],
        ]
    )({"img": str(path)})["img"]
    ras = Compose(
        [LoadImaged(keys="img", reader=SpineSeriesReader()), EnsureChannelFirstd(keys="img"), pipeline[0]]
    )({"img": str(path)})["img"]
    np.testing.assert_array_equal(lps.numpy(), ras.numpy())
    np.testing.assert_allclose(LPS_TO_RAS @ lps.affine.numpy(), ras.affine.numpy(), atol=1e-9)


def test_dicom_series_and_its_nifti_give_one_affine(tmp_path: Path):
    vol = make_volume(axes=SAGITTAL, oblique_deg=7.0, seed=3)
    write_series(vol, tmp_path / "dcm")
    nii = write_nifti(vol, tmp_path / "t2.nii.gz")
    a, b = _load(tmp_path / "dcm"), LoadImage(reader=NibabelReader(), image_only=True)(nii)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-4)


def test_loadimaged_several_sequences_and_channel_stacking(tmp_path: Path):
    v1, v2 = make_volume(seed=1), make_volume(seed=2)  # same grid, different voxels
    p1, p2 = write_nifti(v1, tmp_path / "t1.nii.gz"), write_nifti(v2, tmp_path / "t2.nii.gz")
    d = LoadImaged(keys=["t1", "t2"], reader=SpineSeriesReader())({"t1": str(p1), "t2": str(p2)})
    np.testing.assert_array_equal(d["t2"].numpy(), v2.array)
    assert d["t1"].meta["format"] == "nifti" and d["t1"].meta["filename_or_obj"] == str(p1)
    both = LoadImage(reader=SpineSeriesReader(), image_only=True, ensure_channel_first=True)([p1, p2])
    assert tuple(both.shape) == (2, *v1.shape)
    np.testing.assert_array_equal(both[1].numpy(), v2.array)
    other = write_nifti(make_volume(spacing=(1.0, 1.0, 3.0)), tmp_path / "stir.nii.gz")
    with pytest.raises(RuntimeError, match="grid differs"):
        LoadImage(reader=SpineSeriesReader(), image_only=True)([p1, other])


def test_suffix_check_and_project_errors(tmp_path: Path):
    reader = SpineSeriesReader()
    (tmp_path / "notes.csv").write_text("a,b\n")
    assert (
        reader.verify_suffix(tmp_path) and reader.verify_suffix("x.nii.gz") and reader.verify_suffix("a.dcm")
    )
    assert not reader.verify_suffix(tmp_path / "notes.csv") and not reader.verify_suffix(["x.nii", "y.png"])
    first = write_series(make_volume(), tmp_path / "series")[0]
    assert reader.verify_suffix(first.rename(tmp_path / "IM0001"))  # DICOM by content, whatever the name
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DicomError, match="no DICOM file found"
    ):  # the project's error when this reader alone is asked
        LoadImage(image_only=True)(tmp_path / "empty", reader=reader)
    # With the reader registered, MONAI tries its own readers after it and lists every error.
    with pytest.raises(RuntimeError, match="(?s)SpineSeriesReader.*DicomError"):
        LoadImage(reader=reader, image_only=True)(tmp_path / "empty")


REAL = [
    "sct_t2_cervical/t2.nii.gz",
    "totalseg_mr_abdomen/example_mr_sm.nii.gz",
    pytest.param("totalseg_ct_dicom_thoracolumbar/dicom", marks=pytest.mark.slow),  # > 3 s
]


@pytest.mark.parametrize("rel", REAL)
def test_real_scans_same_voxels_and_affine(shared_data: Path, rel: str):
    path = shared_data / "real" / rel
    if not path.exists():
        pytest.skip(f"{path} absent")
    vol = read_volume(path)
    img = _load(path)
    np.testing.assert_array_equal(img.numpy(), vol.array)
    np.testing.assert_allclose(img.affine.numpy(), LPS_TO_RAS @ vol.affine, atol=1e-9)
    if path.is_dir():  # MONAI's own DICOM reader stacks the slices the other way round: same world geometry
        ref = LoadImage(reader=PydicomReader(), image_only=True)(path)
        flip = np.eye(4)
        flip[2, 2], flip[2, 3] = -1.0, ref.shape[2] - 1
        np.testing.assert_allclose(ref.affine.numpy() @ flip, img.affine.numpy(), atol=1e-4)
        np.testing.assert_allclose(ref.numpy()[:, :, ::-1], img.numpy())
    else:
        ref = LoadImage(reader=NibabelReader(), image_only=True)(path)
        np.testing.assert_allclose(ref.affine.numpy(), img.affine.numpy(), atol=1e-6)
        np.testing.assert_array_equal(ref.numpy(), img.numpy())


@pytest.mark.slow
def test_generated_phantom_studies_oblique_dicom_and_nifti(tmp_path: Path):
    """The generator's own writers (DICOM series and NIfTI, every study tilted): LoadImaged == read_volume."""
    import csv

    from conftest import generate

    manifest = generate(tmp_path / "data", studies=2, seed=31, **{"phantom.acquisition.oblique_rate": 1.0})
    paths = []
    for name in ("manifest.csv", "manifest_nifti.csv"):
        with open(manifest.parent / name, newline="") as fh:
            for row in csv.DictReader(fh):
                paths += [manifest.parent / row[s] for s in ("t1", "t2", "stir", "t1c") if row[s]]
    paths = sorted(set(paths))
    assert any(p.is_dir() for p in paths) and any(p.name.endswith(".nii.gz") for p in paths)
    tilted = 0
    for path in paths:
        vol = read_volume(path)
        item = LoadImaged(keys="img", reader=SpineSeriesReader())({"img": str(path)})
        np.testing.assert_array_equal(item["img"].numpy(), vol.array)
        np.testing.assert_allclose(item["img"].affine.numpy(), LPS_TO_RAS @ vol.affine, atol=1e-9)
        direction = vol.affine[:3, :3] / np.linalg.norm(vol.affine[:3, :3], axis=0)
        tilted += int(np.abs(direction).max(axis=0).min() < 0.9999)  # no axis exactly along a patient axis
    assert tilted > 0

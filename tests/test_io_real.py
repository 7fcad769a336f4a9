"""Real files: the scanner exports bundled with pydicom, and the real scans in ../shared/data/real."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers_io import pydicom_file

from spinelesion.io.dicom import DicomDecodeError, DicomSeriesError, discover_series, read_dicom_folder
from spinelesion.io.reader import read_geometry, read_volume
from spinelesion.io.volume import LPS_TO_RAS, axis_codes


def _dicomdir_tests() -> Path:
    return pydicom_file("dicomdirtests/DICOMDIR").parent


def test_real_ct_series_sorted_by_position_not_instance_number(tmp_path: Path):
    src = _dicomdir_tests() / "98892001" / "CT5N"  # 5 slices, InstanceNumber rising as z falls
    shutil.copytree(src, tmp_path / "ct")
    v = read_volume(tmp_path / "ct")
    assert v.shape == (16, 16, 5)
    np.testing.assert_allclose(v.affine[:3, 2], [0.0, 0.0, 2.5], atol=1e-6)  # k runs superior, 2.5 mm
    np.testing.assert_allclose(v.affine[:3, 3], [-72.2, -143.0, -1.2375], atol=1e-4)  # the lowest slice first
    assert v.meta["SeriesDescription"].startswith("SmartScore")
    import pydicom

    by_z = sorted(src.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    for k, p in enumerate(by_z):
        ds = pydicom.dcmread(p)
        expected = ds.pixel_array.T * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        np.testing.assert_allclose(v.array[:, :, k], expected)


def test_real_exports_with_problems_are_refused_with_the_reason():
    root = _dicomdir_tests()
    with pytest.raises(DicomSeriesError, match=r"missing slice\(s\): about 161 between"):
        read_dicom_folder(root / "77654033" / "CT2")  # 4 files of a brain CT: one far from the other three
    with pytest.raises(DicomSeriesError, match="mixed orientations.*multi-plane localiser"):
        read_dicom_folder(root / "98892001" / "CT2N")  # a two-plane scout


def test_real_export_with_dicomdir_is_discovered():
    root = _dicomdir_tests() / "TINY_ALPHA"
    infos, skipped = discover_series(root)
    reasons = {p.name: why for p, why in skipped}
    assert set(reasons) == {"DICOMDIR", "README"}  # the export's index and its text file
    assert "DICOMDIR index" in reasons["DICOMDIR"] and reasons["README"] == "not a DICOM file"
    assert len(infos) == 1 and len(infos[0].files) == 50


def test_real_localizer_folder_lists_every_series(tmp_path: Path):
    root = _dicomdir_tests()
    infos, skipped = discover_series(root / "98892003")
    assert not skipped
    assert sum(len(i.files) for i in infos) == 3 + 7 + 7
    assert {i.description for i in infos} >= {"FAST LOCALIZER", "T/S/C RF FAST PILOT"}


def test_real_mr_slice_header_fields():
    v_meta = discover_series(pydicom_file("MR_small.dcm").parent)[0]
    mr = next(i for i in v_meta if i.files[0].name == "MR_small.dcm")
    assert mr.is_image and mr.unusable_reason() is None
    with pytest.raises(DicomSeriesError, match=r"single-slice series \(MR_small.dcm\)"):
        read_volume(mr.files[0])  # one file that is not a volume


# -- ../shared/data/real ------------------------------------------------------------------------------


def test_real_cervical_nifti_in_psr_axes(shared_data: Path):
    path = shared_data / "real" / "sct_t2_cervical" / "t2.nii.gz"
    img = nib.load(path)
    v = read_volume(path)
    assert v.shape == (60, 55, 52) and nib.aff2axcodes(img.affine) == ("P", "S", "R")
    assert axis_codes(v.affine) == "PSR" == axis_codes(v.affine, frame="LPS")
    np.testing.assert_allclose(v.affine, LPS_TO_RAS @ img.affine)
    shape, affine = read_geometry(path)
    assert shape == v.shape
    np.testing.assert_array_equal(affine, v.affine)
    # the cord mask overlays the image: same grid, and its voxels sit in the image's field of view
    mask = read_volume(shared_data / "real" / "sct_t2_cervical" / "t2_seg-manual.nii.gz")
    np.testing.assert_allclose(mask.affine, v.affine)
    assert mask.array.sum() > 0
    centre = mask.voxel_to_world(np.argwhere(mask.array > 0).mean(0))
    assert v.contains(centre)


def test_real_abdominal_mr_nifti(shared_data: Path):
    v = read_volume(shared_data / "real" / "totalseg_mr_abdomen" / "example_mr_sm.nii.gz")
    assert v.shape == (117, 91, 20) and axis_codes(v.affine) == "LPS"
    np.testing.assert_allclose(v.spacing, [3.0, 3.0, 3.0], atol=1e-4)


def test_real_jpeg2000_ct_series_matches_its_segmentation_grid(shared_data: Path):
    folder = shared_data / "real" / "totalseg_ct_dicom_thoracolumbar" / "dicom"
    v = read_dicom_folder(folder)
    assert v.shape == (512, 512, 20)
    assert axis_codes(v.affine) == "LPS"  # axial: rows run left, columns posterior, slices superior
    np.testing.assert_allclose(v.affine[:3, 2], [0.0, 0.0, 2.0], atol=1e-4)
    np.testing.assert_allclose(v.spacing[:2], [0.977, 0.977], atol=1e-3)
    assert v.meta["Modality"] == "CT" and len(v.meta["files"]) == 20
    assert float(v.array.min()) == -1024.0  # Hounsfield units after RescaleSlope/Intercept (air)
    seg = nib.load(shared_data / "real" / "totalseg_ct_dicom_thoracolumbar" / "example_seg_dicom.nii.gz")
    assert seg.shape == v.shape
    # The segmentation is stored with its j axis reversed (L-A-S): the same voxel centres.
    flip_j = np.diag([1.0, -1.0, 1.0, 1.0])
    flip_j[1, 3] = v.shape[1] - 1
    np.testing.assert_allclose(LPS_TO_RAS @ seg.affine, v.affine @ flip_j, atol=1e-3)
    shape, affine = read_geometry(folder)
    assert shape == v.shape
    np.testing.assert_array_equal(affine, v.affine)


def test_real_jpeg2000_ct_without_decoder_names_the_package(shared_data: Path, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless

    folder = shared_data / "real" / "totalseg_ct_dicom_thoracolumbar" / "dicom"
    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})
    with pytest.raises(
        DicomDecodeError, match=r"compressed \(JPEG 2000.*pip install pylibjpeg-openjpeg"
    ) as info:
        read_dicom_folder(folder)
    assert "CT Body" in str(info.value) and str(folder) in str(info.value)
    assert read_geometry(folder)[0] == (512, 512, 20)  # headers alone still give the geometry

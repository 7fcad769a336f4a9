"""Reading studies: DICOM discovery, geometry, checks with clear errors, NIfTI, resampling by geometry."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from scipy.spatial.transform import Rotation

from spinelesion.io.dicom import (
    DicomDecodeError,
    DicomError,
    DicomSeriesError,
    NonImageError,
    discover_series,
    read_dicom_folder,
)
from spinelesion.io.dicom_write import make_uid, write_dicom_series
from spinelesion.io.nifti import read_nifti, write_nifti
from spinelesion.io.reader import read_geometry, read_volume
from spinelesion.io.resample import to_reference
from spinelesion.io.sequences import apply_override, guess_sequence
from spinelesion.io.study import Study, load_study_folder, nifti_sequence_name
from spinelesion.io.volume import LPS_TO_RAS, Volume, axis_codes, grid_affine

SAGITTAL = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]]).T  # i->P, j->I, k->R
AXIAL = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).T      # i->L, j->P, k->S


def make_volume(shape=(40, 48, 12), spacing=(1.0, 1.0, 3.5), axes=SAGITTAL, centre=(4.0, -10.0, 20.0), seed=0,
                oblique_deg: float = 0.0) -> Volume:
    rot = axes if not oblique_deg else Rotation.from_euler("xyz", [oblique_deg, -0.6 * oblique_deg, 0.3 * oblique_deg],
                                                              degrees=True).as_matrix() @ axes
    arr = np.random.default_rng(seed).integers(10, 1000, size=shape).astype(np.float32)
    return Volume(arr, grid_affine(np.asarray(centre), shape, spacing, rot))


def write_series(vol: Volume, folder: Path, desc: str = "T2 TSE SAG", study_uid: str | None = None, **series) -> list[Path]:
    study_uid = study_uid or make_uid("study", folder.name)
    return write_dicom_series(vol, folder, study={"StudyInstanceUID": study_uid, "PatientID": "PAT-1"},
                              series={"SeriesInstanceUID": make_uid(study_uid, desc), "SeriesDescription": desc, **series})


def test_shuffled_renamed_nested_series_reads_back_like_the_nifti(tmp_path: Path):
    vol = make_volume()
    paths = write_series(vol, tmp_path / "flat")
    messy = tmp_path / "export"
    rng = np.random.default_rng(3)
    for k in rng.permutation(len(paths)):  # random names, no suffix, nested, shuffled
        dest = messy / f"d{k % 3}" / f"x{rng.integers(1e9)}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(paths[k], dest)
    (messy / "README.txt").write_text("not dicom")
    write_series(make_volume(seed=1), messy / "other", desc="T1 TSE SAG", study_uid=make_uid("study", "flat"))
    infos, skipped = discover_series(messy)
    assert len(infos) == 2 and [p.name for p, _ in skipped] == ["README.txt"]
    t2 = next(i for i in infos if i.description == "T2 TSE SAG")
    with pytest.raises(DicomError, match="several image series"):
        read_dicom_folder(messy)
    got = read_dicom_folder(messy, series_uid=t2.series_uid)
    write_nifti(vol, tmp_path / "v.nii.gz")
    ref = read_nifti(tmp_path / "v.nii.gz")
    np.testing.assert_allclose(got.array, ref.array)
    np.testing.assert_allclose(got.affine, ref.affine, atol=1e-4)
    assert axis_codes(got.affine) == "PIR"


@pytest.mark.parametrize("axes, oblique", [(SAGITTAL, 0.0), (SAGITTAL, 7.0), (AXIAL, 0.0), (AXIAL, 12.0)])
def test_lps_point_maps_to_the_right_voxel(tmp_path: Path, axes, oblique):
    vol = make_volume(axes=axes, oblique_deg=oblique)
    vol.array[:] = 0
    ijk = np.array([11, 30, 7])
    vol.array[tuple(ijk)] = 5000
    point = vol.voxel_to_world(ijk)
    write_series(vol, tmp_path / "s")
    got = read_volume(tmp_path / "s")
    np.testing.assert_allclose(got.world_to_voxel(point), ijk, atol=1e-3)
    assert got.array[tuple(ijk)] == 5000
    shape, affine = read_geometry(tmp_path / "s")
    assert shape == vol.shape
    np.testing.assert_allclose(affine, vol.affine, atol=1e-4)


def test_nifti_ras_and_lps_orientations_give_the_same_patient_point(tmp_path: Path):
    vol = make_volume(axes=AXIAL)
    vol.array[:] = 0
    vol.array[5, 6, 7] = 1.0
    point = vol.voxel_to_world(np.array([5, 6, 7]))
    write_nifti(vol, tmp_path / "a.nii.gz")
    # the same image stored flipped to RAS-increasing axes (as many tools write it)
    img = nib.load(tmp_path / "a.nii.gz")
    ras = nib.as_closest_canonical(img)
    nib.save(ras, tmp_path / "ras.nii.gz")
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    for name in ("a.nii.gz", "ras.nii.gz"):
        v = read_nifti(tmp_path / name)
        idx = np.array(np.unravel_index(np.argmax(v.array), v.shape))
        np.testing.assert_allclose(v.voxel_to_world(idx), point, atol=1e-4)


def test_sequences_on_different_grids_are_resampled_by_geometry():
    t2 = make_volume(shape=(60, 70, 14), spacing=(1.0, 1.0, 3.0), centre=(0, 0, 0))
    t1 = make_volume(shape=(40, 50, 30), spacing=(1.4, 1.4, 1.6), axes=AXIAL, centre=(3, -4, 6), oblique_deg=5)
    target = np.array([2.0, -3.0, 5.0])
    for v in (t1, t2):
        v.array[:] = 0
        idx = np.round(v.world_to_voxel(target)).astype(int)
        v.array[tuple(idx)] = 1000.0
    array, affine, available, ref = to_reference(Study("s", {"t1": t1, "t2": t2}))
    assert ref == "t2" and available.tolist() == [True, True, False, False]
    peak_t1 = np.unravel_index(np.argmax(array[0]), array.shape[1:])
    peak_t2 = np.unravel_index(np.argmax(array[1]), array.shape[1:])
    # the T1 marker (placed on its own rotated grid) lands within a voxel or two of the T2 one
    d = (np.asarray(peak_t1) - np.asarray(peak_t2)) * np.array([1.0, 1.0, 3.0])
    assert np.linalg.norm(d) <= 3.5
    assert float(array[2].max()) == 0.0


# -- bad input, one clear error each ------------------------------------------------------------

@pytest.fixture()
def good_series(tmp_path: Path) -> tuple[Path, list[Path]]:
    return tmp_path / "s", write_series(make_volume(shape=(20, 20, 8)), tmp_path / "s")


def test_missing_slice_is_named(good_series):
    folder, paths = good_series
    paths[4].unlink()
    with pytest.raises(DicomSeriesError, match=r"missing slice\(s\): about 1 between IM0004.dcm .* and IM0006.dcm"):
        read_dicom_folder(folder)


def test_duplicated_slice_is_named(good_series):
    folder, paths = good_series
    ds = pydicom.dcmread(paths[3])
    ds.SOPInstanceUID = make_uid("dup")
    ds.save_as(folder / "copy.dcm")
    with pytest.raises(DicomSeriesError, match="duplicated slice: .* share position"):
        read_dicom_folder(folder)


def test_uneven_spacing_is_named(good_series):
    folder, paths = good_series
    ds = pydicom.dcmread(paths[5])
    ds.ImagePositionPatient = [float(v) + (-1.2 if i == 0 else 0) for i, v in enumerate(ds.ImagePositionPatient)]
    ds.save_as(paths[5])
    with pytest.raises(DicomSeriesError, match="uneven slice spacing"):
        read_dicom_folder(folder)


def test_mixed_orientation_is_named(good_series):
    folder, paths = good_series
    ds = pydicom.dcmread(paths[2])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.save_as(paths[2])
    with pytest.raises(DicomSeriesError, match="mixed orientations in one series"):
        read_dicom_folder(folder)


def test_gantry_tilt_is_named(tmp_path: Path):
    vol = make_volume(shape=(20, 20, 8))
    vol.affine[:3, 2] += vol.affine[:3, 0] * 0.3  # slices advance sideways: a sheared stack
    write_series(vol, tmp_path / "s")
    with pytest.raises(DicomSeriesError, match="gantry tilt"):
        read_dicom_folder(tmp_path / "s")


def test_single_slice_series_is_refused():
    folder = Path(get_testdata_file("MR_small.dcm")).parent
    with pytest.raises(DicomSeriesError, match="single-slice series"):
        from spinelesion.io.dicom import volume_from_datasets

        volume_from_datasets([pydicom.dcmread(folder / "MR_small.dcm")], [folder / "MR_small.dcm"], folder)


def test_non_image_object_is_refused(tmp_path: Path):
    shutil.copy(get_testdata_file("reportsi.dcm"), tmp_path / "sr.dcm")
    with pytest.raises(NonImageError, match="not an image"):
        read_dicom_folder(tmp_path)


def _enhanced_multiframe(path: Path, vol: Volume) -> None:
    """An Enhanced-MR-style multi-frame file: one object, per-frame plane positions."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    spacing = vol.spacing
    rows, cols, frames = vol.shape[1], vol.shape[0], vol.shape[2]
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    row_dir, col_dir = vol.affine[:3, 0] / spacing[0], vol.affine[:3, 1] / spacing[1]
    shared = Dataset()
    po, pm = Dataset(), Dataset()
    po.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
    pm.PixelSpacing = [float(spacing[1]), float(spacing[0])]
    pm.SliceThickness = float(spacing[2])
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelMeasuresSequence = Sequence([pm])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    order = [3, 0, 4, 1, 2][:frames] if frames == 5 else list(range(frames))
    for k in order:  # frames stored out of order on purpose
        f, pp = Dataset(), Dataset()
        pp.ImagePositionPatient = [float(v) for v in vol.voxel_to_world(np.array([0, 0, k]))]
        f.PlanePositionSequence = Sequence([pp])
        per.append(f)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if tag in ds:
            delattr(ds, tag)
    ds.PixelData = np.stack([vol.array[:, :, k].T for k in order]).astype(np.uint16).tobytes()
    ds.save_as(path)


def test_enhanced_multiframe_object_reads_with_per_frame_geometry(tmp_path: Path):
    vol = make_volume(shape=(16, 12, 5), axes=AXIAL, oblique_deg=4.0)
    _enhanced_multiframe(tmp_path / "mf.dcm", vol)
    got = read_dicom_folder(tmp_path)
    np.testing.assert_allclose(got.array, vol.array)
    np.testing.assert_allclose(got.affine, vol.affine, atol=1e-4)


def test_rt_dose_grid_is_not_an_image_to_classify(tmp_path: Path):
    shutil.copy(get_testdata_file("rtdose.dcm"), tmp_path / "dose.dcm")
    with pytest.raises(NonImageError, match="RT Dose"):
        read_dicom_folder(tmp_path)


def test_compressed_pixels_without_decoder_name_the_package(tmp_path: Path, monkeypatch):
    shutil.copy(get_testdata_file("MR_small_jp2klossless.dcm"), tmp_path / "a.dcm")
    from spinelesion.io import dicom as dicom_mod

    ds = pydicom.dcmread(tmp_path / "a.dcm")

    def no_decoder(*_a, **_k):
        raise RuntimeError("Unable to decode the pixel data: no plugin available")

    monkeypatch.setattr(type(ds), "pixel_array", property(no_decoder))
    with pytest.raises(DicomDecodeError, match="JPEG 2000.*install pylibjpeg-openjpeg"):
        dicom_mod._decode(ds, tmp_path / "a.dcm", "uid")


def test_compressed_pixels_decode_when_the_decoder_is_installed():
    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    ref = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    from spinelesion.io.dicom import _decode

    np.testing.assert_array_equal(_decode(ds, Path("a"), "u"), ref.pixel_array)


# -- sequences and studies --------------------------------------------------------------------------

@pytest.mark.parametrize("meta, expected", [
    ({"SeriesDescription": "Sag T2 FRFSE"}, "t2"),
    ({"SeriesDescription": "T2 TIRM SAG"}, "stir"),
    ({"SeriesDescription": "sag", "ScanningSequence": "IR", "InversionTime": 160, "RepetitionTime": 4000, "EchoTime": 40}, "stir"),
    ({"SeriesDescription": "T1 TSE SAG FS +C"}, "t1c"),
    ({"SeriesDescription": "SAG T1", "ContrastBolusAgent": "Gadobutrol"}, "t1c"),
    ({"SeriesDescription": "Sag T1 FSE"}, "t1"),
    ({"SeriesDescription": "SE sag", "RepetitionTime": 550, "EchoTime": 12}, "t1"),
    ({"SeriesDescription": "3-plane localizer"}, None),
    ({"SeriesDescription": "DWI b800"}, None),
])
def test_sequence_recognition(meta, expected):
    assert guess_sequence(meta).sequence == expected


def test_sequence_override_wins():
    assert apply_override({"7": "t1c"}, "1.2.3", 7, "weird name") == "t1c"
    assert apply_override({"^ax": "t2"}, "1.2.3", 1, "AX something") == "t2"
    assert apply_override({"1.2.3": "stir"}, "1.2.3", None, "") == "stir"
    assert apply_override({"x": "t1"}, "1.2.3", 1, "T2") is None


def test_study_folder_with_several_series_and_junk(tmp_path: Path):
    study_uid = make_uid("study-folder")
    write_series(make_volume(seed=1), tmp_path / "exp" / "a", desc="Sag T2 FRFSE", study_uid=study_uid)
    write_series(make_volume(seed=2), tmp_path / "exp" / "b", desc="SAG T1", study_uid=study_uid)
    write_series(make_volume(seed=3), tmp_path / "exp" / "c", desc="3-plane localizer", study_uid=study_uid)
    shutil.copy(get_testdata_file("reportsi.dcm"), tmp_path / "exp" / "report")
    (tmp_path / "exp" / "notes.txt").write_text("hello")
    study = load_study_folder(tmp_path / "exp")
    assert study.sequences == ["t1", "t2"]
    assert any("localizer" in w for w in study.warnings)
    assert any("not an image" in w for w in study.warnings)


def test_nifti_names_map_to_sequences():
    assert [nifti_sequence_name(Path(n)) for n in ("t2.nii.gz", "sub-01_T2w.nii.gz", "T1c.nii", "case_stir.nii.gz",
                                                   "t1_post.nii.gz", "flair.nii.gz")] == \
        ["t2", "t2", "t1c", "stir", "t1c", None]


# -- real scans (../shared/data) ----------------------------------------------------------------------

def test_real_cervical_nifti_in_psr_axes(shared_data: Path):
    path = shared_data / "real" / "sct_t2_cervical" / "t2.nii.gz"
    v = read_nifti(path)
    img = nib.load(path)
    assert v.shape == (60, 55, 52)
    np.testing.assert_allclose(v.affine, LPS_TO_RAS @ img.affine)
    assert axis_codes(img.affine, frame="RAS") == "".join(nib.aff2axcodes(img.affine))


def test_real_jpeg2000_ct_series_matches_its_segmentation_grid(shared_data: Path):
    folder = shared_data / "real" / "totalseg_ct_dicom_thoracolumbar" / "dicom"
    v = read_dicom_folder(folder)
    assert v.shape == (512, 512, 20)
    np.testing.assert_allclose(np.linalg.norm(v.affine[:3, 2]), 2.0, atol=1e-3)
    seg = nib.load(shared_data / "real" / "totalseg_ct_dicom_thoracolumbar" / "example_seg_dicom.nii.gz")
    seg_lps = LPS_TO_RAS @ seg.affine
    # same physical volume: the world position of the grid centre agrees within a voxel
    c_dcm = v.voxel_to_world((np.asarray(v.shape) - 1) / 2)
    c_seg = seg_lps[:3, :3] @ ((np.asarray(seg.shape[:3]) - 1) / 2) + seg_lps[:3, 3]
    assert np.linalg.norm(c_dcm - c_seg) < 2.0
    assert float(v.array.min()) < -500  # Hounsfield units after RescaleSlope/Intercept (air)

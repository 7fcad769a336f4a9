"""DICOM series: discovery in messy folders, geometry round trips, and one clear error per bad input."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from helpers_io import AXIAL, CORONAL, SAGITTAL, edit, make_volume, pydicom_file, write_series

from spinelesion.io.dicom import (
    DicomDecodeError,
    DicomError,
    DicomSeriesError,
    NonImageError,
    SeriesChecks,
    discover_series,
    read_dicom_folder,
    read_series,
    volume_from_datasets,
)
from spinelesion.io.dicom.write import make_uid
from spinelesion.io.nifti import read_nifti, write_nifti
from spinelesion.io.reader import read_geometry, read_volume
from spinelesion.io.volume import LPS_TO_RAS, Volume, axis_codes

# -- round trips --------------------------------------------------------------------------------


def test_messy_export_reads_back_like_the_nifti_of_the_same_volume(tmp_path: Path):
    vol = make_volume(seed=4)
    paths = write_series(vol, tmp_path / "flat", desc="T2 TSE SAG")
    messy = tmp_path / "export"
    rng = np.random.default_rng(3)
    for k in rng.permutation(len(paths)):  # shuffled, random names without suffix, nested folders
        dest = messy / f"d{k % 3}" / ("sub" if k % 2 else "") / f"x{rng.integers(1e9)}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(paths[k], dest)
    (messy / "README.txt").write_text("not dicom")
    (messy / "d0" / "fake.dcm").write_bytes(b"\0" * 300)
    write_series(make_volume(seed=1), messy / "other", desc="T1 TSE SAG", study_uid=make_uid("study", "flat"))

    infos, skipped = discover_series(messy)
    assert sorted(i.description for i in infos) == ["T1 TSE SAG", "T2 TSE SAG"]
    assert sorted(p.name for p, _ in skipped) == ["README.txt", "fake.dcm"]
    assert all(reason == "not a DICOM file" for _, reason in skipped)
    t2 = next(i for i in infos if i.description == "T2 TSE SAG")
    assert len(t2.files) == len(t2.headers) == vol.shape[2]

    with pytest.raises(
        DicomError, match=r"several image series.*T1 TSE SAG.*T2 TSE SAG|several image series.*T2.*T1"
    ):
        read_dicom_folder(messy)
    got = read_dicom_folder(messy, series_uid=t2.series_uid)
    write_nifti(vol, tmp_path / "v.nii.gz")
    ref = read_nifti(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(got.array, ref.array)
    np.testing.assert_allclose(got.affine, ref.affine, atol=1e-4)
    assert axis_codes(got.affine) == "PIR"
    assert got.meta["SeriesDescription"] == "T2 TSE SAG" and got.meta["SeriesInstanceUID"] == t2.series_uid
    assert len(got.meta["files"]) == vol.shape[2] and got.meta["format"] == "dicom"
    # the discovered series reads to the same volume, and read_series agrees with the folder read
    again = read_series(t2)
    np.testing.assert_array_equal(again.array, got.array)
    np.testing.assert_array_equal(again.affine, got.affine)


@pytest.mark.parametrize(
    "axes, oblique, expected_codes",
    [
        (SAGITTAL, 0.0, "PIR"),
        (SAGITTAL, 7.0, None),
        (AXIAL, 0.0, "LPS"),
        (AXIAL, 12.0, None),
        (CORONAL, 0.0, "LIP"),
    ],
)
def test_lps_point_maps_to_the_right_voxel(tmp_path: Path, axes, oblique, expected_codes):
    vol = make_volume(axes=axes, oblique_deg=oblique)
    vol.array[:] = 0
    ijk = np.array([11, 20, 5])
    vol.array[tuple(ijk)] = 5000
    point = vol.voxel_to_world(ijk)
    write_series(vol, tmp_path / "s")
    got = read_volume(tmp_path / "s")
    np.testing.assert_allclose(got.world_to_voxel(point), ijk, atol=1e-3)
    assert got.array[tuple(ijk)] == 5000 and np.count_nonzero(got.array) == 1
    if expected_codes:
        assert axis_codes(got.affine) == expected_codes
    # header-only geometry is the same as the full read's
    shape, affine = read_geometry(tmp_path / "s")
    assert shape == got.shape == vol.shape
    np.testing.assert_array_equal(affine, got.affine)
    np.testing.assert_allclose(affine, vol.affine, atol=1e-4)


def test_nifti_in_ras_and_in_lps_axis_order_gives_the_same_patient_point(tmp_path: Path):
    vol = make_volume(axes=AXIAL, oblique_deg=3.0)
    vol.array[:] = 0
    vol.array[5, 6, 7] = 1.0
    point = vol.voxel_to_world(np.array([5, 6, 7]))
    write_nifti(vol, tmp_path / "lps_axes.nii.gz")  # array axes run L, P, S: RAS affine has negative x, y
    assert nib.aff2axcodes(nib.load(tmp_path / "lps_axes.nii.gz").affine) == ("L", "P", "S")
    canonical = nib.as_closest_canonical(nib.load(tmp_path / "lps_axes.nii.gz"))  # flipped to R, A, S
    nib.save(canonical, tmp_path / "ras_axes.nii.gz")
    assert nib.aff2axcodes(canonical.affine) == ("R", "A", "S")
    write_series(vol, tmp_path / "dicom", desc="AX T1")
    for source in ("lps_axes.nii.gz", "ras_axes.nii.gz", "dicom"):
        v = read_volume(tmp_path / source)
        idx = np.array(np.unravel_index(np.argmax(v.array), v.shape))
        np.testing.assert_allclose(v.voxel_to_world(idx), point, atol=1e-3)
        shape, affine = read_geometry(tmp_path / source)
        assert shape == v.shape
        np.testing.assert_allclose(affine, v.affine, atol=1e-6)
    assert nib.load(tmp_path / "ras_axes.nii.gz").affine[0, 0] > 0  # really stored differently
    np.testing.assert_allclose(
        read_nifti(tmp_path / "lps_axes.nii.gz").affine,
        LPS_TO_RAS @ nib.load(tmp_path / "lps_axes.nii.gz").affine,
    )


def test_rescale_slope_and_intercept_are_applied(tmp_path: Path):
    vol = make_volume()
    vol.array[:] = np.round(vol.array) * 0.5 - 100.0  # real values: needs slope 0.5, intercept -100
    from spinelesion.io.dicom.write import write_dicom_series

    write_dicom_series(
        vol,
        tmp_path / "s",
        study={"StudyInstanceUID": "1.2.3", "PatientID": "p"},
        series={"SeriesInstanceUID": "1.2.3.4", "SeriesDescription": "x"},
        slope=0.5,
        intercept=-100,
    )
    got = read_volume(tmp_path / "s")
    assert got.array.dtype == np.float32
    np.testing.assert_allclose(got.array, vol.array, atol=1e-4)


def test_files_without_preamble_are_read(tmp_path: Path):
    vol = make_volume(shape=(10, 12, 4))
    paths = write_series(vol, tmp_path / "part10")
    raw = tmp_path / "raw"
    raw.mkdir()
    for i, p in enumerate(paths):  # old exports: a bare dataset, no 128-byte preamble, no file meta
        ds = pydicom.dcmread(p)
        del ds.file_meta
        ds.preamble = None
        pydicom.dcmwrite(raw / f"slice{i}", ds, implicit_vr=True, little_endian=True)
        assert (raw / f"slice{i}").read_bytes()[128:132] != b"DICM"
    got = read_volume(raw)
    np.testing.assert_array_equal(got.array, vol.array)
    np.testing.assert_allclose(got.affine, vol.affine, atol=1e-4)


def test_signed_pixels_with_unused_high_bits_are_sign_extended(tmp_path: Path):
    vol = make_volume(shape=(8, 8, 3))
    paths = write_series(vol, tmp_path / "s")
    for p in paths:  # 12-bit signed values stored in 16 bits without sign extension
        ds = pydicom.dcmread(p)
        values = np.full((8, 8), -5, dtype=np.int16)
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 12, 11
        ds.PixelData = (values.view(np.uint16) & 0x0FFF).tobytes()
        ds.save_as(p)
    assert np.all(read_volume(tmp_path / "s").array == -5)


# -- bad input: one clear error each, naming the series, the files and the reason ---------------


@pytest.fixture()
def good_series(tmp_path: Path) -> tuple[Path, list[Path]]:
    return tmp_path / "s", write_series(
        make_volume(shape=(20, 20, 8)), tmp_path / "s", desc="T2 SAG", number=7
    )


def _raises(folder: Path, cls: type[Exception], *patterns: str, **kwargs) -> str:
    with pytest.raises(cls) as info:
        read_dicom_folder(folder, **kwargs)
    msg = str(info.value)
    for pattern in patterns:
        assert pattern in msg, f"{pattern!r} not in {msg!r}"
    return msg


def test_missing_slice_is_named(good_series):
    folder, paths = good_series
    paths[4].unlink()
    _raises(
        folder,
        DicomSeriesError,
        "missing slice(s): about 1 between IM0004.dcm",
        "IM0006.dcm",
        "series 7 'T2 SAG'",
        "SeriesInstanceUID ",
        str(folder),
    )
    with pytest.raises(DicomSeriesError, match="missing slice"):
        read_geometry(folder, strict=True)  # the header-only path runs the same checks when asked
    shape, affine = read_geometry(folder)  # lenient (manifest checks): still places the grid
    assert shape == (20, 20, 7)
    np.testing.assert_allclose(affine[:3, 3], pydicom.dcmread(paths[0]).ImagePositionPatient, atol=1e-4)


def test_duplicated_slice_is_named(good_series):
    folder, paths = good_series
    edit(paths[3], folder / "copy.dcm", SOPInstanceUID=make_uid("dup"))
    msg = _raises(folder, DicomSeriesError, "duplicated slice", "copy.dcm", "IM0004.dcm", "series 7 'T2 SAG'")
    assert "identical copy" in msg


def test_two_echoes_at_one_position_are_explained(good_series):
    folder, paths = good_series
    for i, p in enumerate(paths):
        edit(p, folder / f"echo2_{i}.dcm", SOPInstanceUID=make_uid("echo2", i), EchoNumbers=2, EchoTime=90)
        edit(p, EchoNumbers=1, EchoTime=12)
    _raises(folder, DicomSeriesError, "duplicated slice", "EchoNumbers 1 vs 2", "multi-echo")


def test_uneven_spacing_is_named_and_its_tolerance_configurable(good_series):
    folder, paths = good_series
    ds = pydicom.dcmread(paths[5])
    ds.ImagePositionPatient = [
        float(v) + (-0.4 if i == 0 else 0) for i, v in enumerate(ds.ImagePositionPatient)
    ]
    ds.save_as(paths[5])  # slice 6 moved 0.4 mm along the normal (the normal is -x for this sagittal grid)
    _raises(folder, DicomSeriesError, "uneven slice spacing", "tolerance 0.050 mm", "IM0006.dcm")
    got = read_dicom_folder(folder, spacing_tolerance=0.5)
    assert got.shape == (20, 20, 8)
    assert read_dicom_folder(folder, checks=SeriesChecks(spacing_tolerance=0.5)).shape == (20, 20, 8)


def test_mixed_orientation_is_named(good_series):
    folder, paths = good_series
    edit(paths[2], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    _raises(folder, DicomSeriesError, "mixed orientations in one series", "IM0003.dcm", "axial", "sagittal")


def test_gantry_tilt_is_named(tmp_path: Path):
    vol = make_volume(shape=(20, 20, 8), axes=AXIAL)
    vol.affine[:3, 2] += vol.affine[:3, 1] * 0.25  # each slice shifted along the columns: a tilted gantry
    write_series(vol, tmp_path / "s", desc="AX CT")
    _raises(tmp_path / "s", DicomSeriesError, "gantry tilt", "deg off their normal", "'AX CT'")


def test_one_slice_off_the_stack_line_is_named(good_series):
    folder, paths = good_series
    ds = pydicom.dcmread(paths[3])
    ds.ImagePositionPatient = [
        float(v) + (5.0 if i == 2 else 0) for i, v in enumerate(ds.ImagePositionPatient)
    ]
    ds.save_as(paths[3])  # in-plane jump of 5 mm (z is in the sagittal plane)
    _raises(folder, DicomSeriesError, "IM0004.dcm lies 5.00 mm off the line")


def test_different_slice_sizes_and_pixel_spacings_are_named(good_series, tmp_path: Path):
    folder, paths = good_series
    edit(paths[1], PixelSpacing=[1.5, 1.5])
    _raises(folder, DicomSeriesError, "pixel spacing differs between slices", "IM0002.dcm")
    other = write_series(make_volume(shape=(12, 12, 4)), tmp_path / "sizes")
    ds = pydicom.dcmread(other[0])
    ds.Rows, ds.Columns = 6, 24  # same pixel count, other shape
    ds.save_as(other[0])
    _raises(tmp_path / "sizes", DicomSeriesError, "slices of different sizes", "(6, 24)", "(12, 12)")


def test_missing_geometry_is_named(good_series):
    folder, paths = good_series
    ds = pydicom.dcmread(paths[0])
    del ds.ImagePositionPatient
    ds.save_as(paths[0])
    _raises(folder, DicomSeriesError, "IM0001.dcm: missing ImagePositionPatient")


def test_image_without_patient_geometry_is_refused(tmp_path: Path):
    paths = write_series(make_volume(shape=(10, 10, 3)), tmp_path / "s", desc="screenshot")
    for p in paths:
        ds = pydicom.dcmread(p)
        for tag in ("ImagePositionPatient", "ImageOrientationPatient"):
            delattr(ds, tag)
        ds.save_as(p)
    _raises(tmp_path / "s", DicomSeriesError, "no patient geometry", "'screenshot'")


def test_single_slice_series_is_refused(good_series):
    folder, paths = good_series
    for p in paths[1:]:
        p.unlink()
    _raises(folder, DicomSeriesError, "single-slice series (IM0001.dcm): not a 3D volume", "series 7")


def test_non_image_objects_are_skipped_in_discovery_and_refused_when_asked_for(tmp_path: Path):
    folder = tmp_path / "exp"
    write_series(make_volume(shape=(10, 10, 3)), folder / "img")
    shutil.copy(pydicom_file("reportsi.dcm"), folder / "sr")
    shutil.copy(pydicom_file("rtdose.dcm"), folder / "dose")
    shutil.copy(pydicom_file("ExplVR_LitEndNoMeta.dcm"), folder / "old_rt_without_preamble")
    infos, skipped = discover_series(folder)
    reasons = {i.description or i.files[0].name: i.unusable_reason() for i in infos}
    assert sum(r is None for r in reasons.values()) == 1
    assert any("Basic Text SR" in (r or "") for r in reasons.values())
    assert any("RT Dose" in (r or "") for r in reasons.values())
    assert sum("not an image" in (r or "") for r in reasons.values()) == 3  # incl. the preamble-less RT file
    assert skipped == []
    assert read_dicom_folder(folder).shape == (10, 10, 3)  # the one image series is found among them
    sr = next(i for i in infos if "SR" in (i.unusable_reason() or ""))
    with pytest.raises(NonImageError, match="not an image .*Basic Text SR"):
        read_dicom_folder(folder, series_uid=sr.series_uid)
    only_sr = tmp_path / "sr_only"
    only_sr.mkdir()
    shutil.copy(pydicom_file("reportsi.dcm"), only_sr / "a")
    _raises(only_sr, NonImageError, "no image series here", "Basic Text SR")


def test_unknown_series_uid_lists_what_is_there(good_series):
    folder, _ = good_series
    _raises(
        folder, DicomError, "series 9.9.9 not found; present: series 7 'T2 SAG' (8 files)", series_uid="9.9.9"
    )


def test_not_a_folder_and_empty_folder(tmp_path: Path):
    _raises(tmp_path / "nope", DicomError, "does not exist")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    _raises(tmp_path / "empty", DicomError, "no DICOM file found (1 other file(s))")


# -- multi-frame -----------------------------------------------------------------------------------


def _enhanced(
    path: Path,
    vol: Volume,
    order: list[int],
    echoes: list[float] | None = None,
    rescale: list[tuple[float, float]] | None = None,
) -> None:
    """An Enhanced MR object: one file, per-frame positions (frames stored in ``order``)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedMRImageStorage

    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    spacing = vol.spacing
    ds.Rows, ds.Columns, ds.NumberOfFrames = vol.shape[1], vol.shape[0], len(order)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared, po, pm, timing = Dataset(), Dataset(), Dataset(), Dataset()
    po.ImageOrientationPatient = [
        float(v) for v in (*(vol.affine[:3, 0] / spacing[0]), *(vol.affine[:3, 1] / spacing[1]))
    ]
    pm.PixelSpacing = [float(spacing[1]), float(spacing[0])]
    pm.SliceThickness = float(spacing[2])
    timing.RepetitionTime, timing.FlipAngle = 4000.0, 90.0
    shared.PlaneOrientationSequence = Sequence([po])
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for n, k in enumerate(order):
        f, pp = Dataset(), Dataset()
        pp.ImagePositionPatient = [float(v) for v in vol.voxel_to_world(np.array([0, 0, k]))]
        f.PlanePositionSequence = Sequence([pp])
        echo = Dataset()
        echo.EffectiveEchoTime = float(echoes[n] if echoes else 100.0)
        f.MREchoSequence = Sequence([echo])
        if rescale:
            pv = Dataset()
            pv.RescaleSlope, pv.RescaleIntercept, pv.RescaleType = rescale[k][0], rescale[k][1], "US"
            f.PixelValueTransformationSequence = Sequence([pv])
        frames.append(f)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    for tag in (
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "EchoTime",
        "RepetitionTime",
    ):
        if tag in ds:
            delattr(ds, tag)
    stored = [
        vol.array[:, :, k].T if not rescale else (vol.array[:, :, k].T - rescale[k][1]) / rescale[k][0]
        for k in order
    ]
    ds.PixelData = np.stack(stored).astype(np.uint16).tobytes()
    ds.save_as(path)


def test_enhanced_multiframe_reads_with_per_frame_geometry_and_rescale(tmp_path: Path):
    vol = make_volume(shape=(16, 12, 5), axes=AXIAL, oblique_deg=4.0)
    rescale = [(2.0, 0.0), (1.0, 10.0), (0.5, -4.0), (1.0, 0.0), (4.0, 2.0)]
    vol.array[:] = np.stack(
        [np.round((vol.array[:, :, k] - b) / a) * a + b for k, (a, b) in enumerate(rescale)], -1
    )
    _enhanced(tmp_path / "mf.dcm", vol, order=[3, 0, 4, 1, 2], rescale=rescale)  # frames out of order
    for got in (read_dicom_folder(tmp_path), read_volume(tmp_path / "mf.dcm")):
        np.testing.assert_allclose(got.array, vol.array, atol=1e-4)
        np.testing.assert_allclose(got.affine, vol.affine, atol=1e-4)
        assert (
            got.meta["RepetitionTime"] == 4000.0 and got.meta["EchoTime"] == 100.0
        )  # lifted from the groups
    shape, affine = read_geometry(tmp_path)
    assert shape == vol.shape
    np.testing.assert_allclose(affine, vol.affine, atol=1e-4)


def test_enhanced_multiframe_with_two_echoes_per_position_is_refused(tmp_path: Path):
    vol = make_volume(shape=(8, 8, 3), axes=AXIAL)
    _enhanced(tmp_path / "mf.dcm", vol, order=[0, 1, 2, 0, 1, 2], echoes=[10, 10, 10, 90, 90, 90])
    _raises(tmp_path, DicomSeriesError, "duplicated frame", "mf.dcm frame 1", "EchoTime 10.0 vs 90.0")


def _legacy_multiframe(path: Path, vol: Volume, grid_offsets: bool) -> None:
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    spacing = vol.spacing
    ds.Rows, ds.Columns, ds.NumberOfFrames = vol.shape[1], vol.shape[0], vol.shape[2]
    ds.ImageOrientationPatient = [
        float(v) for v in (*(vol.affine[:3, 0] / spacing[0]), *(vol.affine[:3, 1] / spacing[1]))
    ]
    ds.ImagePositionPatient = [float(v) for v in vol.affine[:3, 3]]
    ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
    if grid_offsets:
        ds.GridFrameOffsetVector = [float(k * spacing[2]) for k in range(vol.shape[2])]
    ds.PixelData = np.stack([vol.array[:, :, k].T for k in range(vol.shape[2])]).astype(np.uint16).tobytes()
    ds.save_as(path)


def test_legacy_multiframe_reads_when_geometry_is_unambiguous_and_is_refused_otherwise(tmp_path: Path):
    vol = make_volume(shape=(10, 9, 4), axes=AXIAL)
    (tmp_path / "a").mkdir()
    _legacy_multiframe(tmp_path / "a" / "mf.dcm", vol, grid_offsets=True)
    got = read_dicom_folder(tmp_path / "a")
    np.testing.assert_array_equal(got.array, vol.array)
    np.testing.assert_allclose(got.affine, vol.affine, atol=1e-4)
    (tmp_path / "b").mkdir()
    _legacy_multiframe(tmp_path / "b" / "mf.dcm", vol, grid_offsets=False)
    _raises(
        tmp_path / "b",
        DicomSeriesError,
        "mf.dcm: legacy multi-frame object (4 frames) whose frame positions are ambiguous",
    )


# -- compressed pixel data --------------------------------------------------------------------------


def _series_from_file(src: Path, folder: Path, n: int = 3) -> None:
    """``n`` copies of one slice, moved along its normal: a small series with ``src``'s encoding."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        ds = pydicom.dcmread(src)
        o = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        normal = np.cross(o[:3], o[3:])
        ds.ImagePositionPatient = [
            float(v) + 2.0 * k * c for v, c in zip(ds.ImagePositionPatient, normal, strict=True)
        ]
        ds.SOPInstanceUID = make_uid(src.name, k)
        ds.save_as(folder / f"{k}")


def test_jpeg2000_without_decoder_names_the_package(tmp_path: Path, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless

    _series_from_file(pydicom_file("MR_small_jp2klossless.dcm"), tmp_path / "j2k")
    assert read_volume(tmp_path / "j2k").shape == (64, 64, 3)  # decodes with the decoder installed
    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})  # as if no plugin were installed
    msg = _raises(
        tmp_path / "j2k",
        DicomDecodeError,
        "pixel data are compressed (JPEG 2000 Image Compression (Lossless Only)",
        "pip install pylibjpeg-openjpeg",
    )
    assert "series" in msg and "SeriesInstanceUID" in msg
    assert read_geometry(tmp_path / "j2k")[0] == (64, 64, 3)  # geometry needs no decoder


def test_jpeg_ls_without_decoder_names_the_package(tmp_path: Path):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    _series_from_file(pydicom_file("MR_small_jpeg_ls_lossless.dcm"), tmp_path / "jls")
    _raises(tmp_path / "jls", DicomDecodeError, "JPEG-LS Lossless", "pip install pyjpegls")


@pytest.mark.parametrize(
    "name",
    ["MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"],
)
def test_every_lossless_encoding_decodes_to_the_same_pixels(tmp_path: Path, name: str):
    _series_from_file(pydicom_file("MR_small.dcm"), tmp_path / "ref")
    _series_from_file(pydicom_file(name), tmp_path / "enc")
    ref, got = read_volume(tmp_path / "ref"), read_volume(tmp_path / "enc")
    np.testing.assert_array_equal(got.array, ref.array)
    np.testing.assert_array_equal(got.affine, ref.affine)
    assert float(np.abs(ref.array).max()) > 0


def test_volume_from_datasets_refuses_a_lone_slice_with_its_name():
    path = pydicom_file("MR_small.dcm")
    with pytest.raises(DicomSeriesError, match=r"single-slice series \(MR_small.dcm\)"):
        volume_from_datasets([pydicom.dcmread(path)], [path])


def test_headers_longer_than_the_discovery_prefix_are_read_whole(tmp_path: Path):
    from spinelesion.io.dicom import discover as dicom_discover

    vol = make_volume(shape=(10, 10, 3))
    paths = write_series(vol, tmp_path / "s")
    for p in paths:  # a vendor's private blob before the pixels, larger than the prefix read
        ds = pydicom.dcmread(p)
        ds.add_new(0x00291010, "OB", b"\x01" * (dicom_discover.HEADER_BYTES + 1000))
        ds.save_as(p)
    infos, _ = discover_series(tmp_path / "s")
    assert len(infos) == 1 and "ImagePositionPatient" in infos[0].headers[0]
    shape, affine = read_geometry(tmp_path / "s")
    assert shape == vol.shape
    np.testing.assert_allclose(affine, vol.affine, atol=1e-4)


def test_truncated_pixel_data_names_the_file(good_series):
    folder, paths = good_series
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:-300])
    _raises(folder, DicomDecodeError, "IM0003.dcm: cannot read pixel data", "series 7 'T2 SAG'")


def test_damaged_dicom_header_is_skipped_with_its_reason(tmp_path: Path, caplog):
    write_series(make_volume(shape=(10, 10, 3)), tmp_path / "s")
    (tmp_path / "s" / "broken").write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(0).bytes(2000))
    with caplog.at_level("WARNING"):
        infos, skipped = discover_series(tmp_path / "s")
    assert len(infos) == 1 and [p.name for p, _ in skipped] == ["broken"]
    assert "damaged or truncated DICOM header" in skipped[0][1]
    assert "broken" in caplog.text  # a file that may be a lost slice is not skipped silently
    assert read_dicom_folder(tmp_path / "s").shape == (10, 10, 3)


# -- the header against the pixel data, before decoding (issue 37) ----------------------------------


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (
            {"BitsAllocated": 8, "BitsStored": 8, "HighBit": 7},
            "Rows 20 x Columns 24 at BitsAllocated 8 need 480",
        ),
        ({"Columns": 18}, "Rows 20 x Columns 18 at BitsAllocated 16 need 720"),
        ({"Rows": 15}, "Rows 15 x Columns 24 at BitsAllocated 16 need 720"),
    ],
    ids=["bits-allocated-8-on-16-bit-data", "columns-smaller-than-stored", "rows-smaller-than-stored"],
)
def test_pixel_data_length_must_match_the_header(tmp_path: Path, tags: dict[str, int], expected: str):
    """Issue 37: a header describing fewer bytes than stored was read as a sheared image."""
    from spinelesion.io.study import StudyError, load_study_folder

    folder = tmp_path / "s"
    for p in write_series(make_volume(shape=(24, 20, 4)), folder, desc="T2 TSE SAG", number=3):
        edit(p, **tags)  # every slice: the stack itself stays consistent
    msg = _raises(
        folder,
        DicomDecodeError,
        f"IM0001.dcm: cannot read pixel data: PixelData holds 960 bytes, but {expected}",
    )
    assert "series 3 'T2 TSE SAG'" in msg
    with pytest.raises(
        StudyError, match=r"t2: .*IM0001\.dcm: cannot read pixel data: PixelData holds 960 bytes"
    ):
        load_study_folder(folder)  # the study is refused by name; predict reports it and goes on


def test_odd_pixel_data_with_its_padding_byte_still_reads(tmp_path: Path):
    vol = make_volume(shape=(5, 5, 3))
    vol.array[:] = np.round(vol.array / 4)  # fits in 8 bits
    for k, p in enumerate(write_series(vol, tmp_path / "s")):
        ds = pydicom.dcmread(p)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = vol.array[:, :, k].T.astype(np.uint8).tobytes()  # 25 bytes, written as 26
        ds.save_as(p)
        assert len(pydicom.dcmread(p).PixelData) == 26
    np.testing.assert_array_equal(read_volume(tmp_path / "s").array, vol.array)


def test_unknown_transfer_syntax_is_named(good_series):
    folder, paths = good_series
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = "1.2.3.4"
        ds.save_as(p)
    _raises(folder, DicomDecodeError, "IM0001.dcm: unknown transfer syntax 1.2.3.4")


@pytest.fixture()
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any frame reaching a decoder fails the test at once (instead of allocating gigabytes)."""
    from pydicom.pixels.decoders.base import DecodeRunner

    def refuse(self: DecodeRunner, src: bytes) -> bytes:
        raise AssertionError("a decoder was called")

    monkeypatch.setattr(DecodeRunner, "_decode_frame", refuse)


def _with_frame_size(frame: bytes, rows: int, cols: int) -> bytes:
    """``frame`` with the size in its codec header replaced (JPEG 2000 SIZ, JPEG-LS SOF55)."""
    out = bytearray(frame)
    if frame[:4] == b"\xff\x4f\xff\x51":
        struct.pack_into(">II", out, 8, cols, rows)  # Xsiz, Ysiz (offsets are 0)
    else:
        sof = frame.index(b"\xff\xf7")
        struct.pack_into(">HH", out, sof + 5, rows, cols)
    return bytes(out)


def _recoded(ds: pydicom.Dataset, rows: int, cols: int, frames: int = 1) -> None:
    from pydicom.encaps import encapsulate, generate_frames

    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([_with_frame_size(frame, rows, cols)] * frames)


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_a_frame_claiming_30000_squared_is_refused_before_decoding(
    tmp_path: Path, name: str, no_decoding: None
):
    """Issue 37: a 60 KB stream claiming 30000 x 30000 drove memory to gigabytes."""
    _series_from_file(pydicom_file(name), tmp_path / "s")
    for p in sorted((tmp_path / "s").iterdir()):
        ds = pydicom.dcmread(p)
        _recoded(ds, 30000, 30000)
        ds.save_as(p)
    _raises(
        tmp_path / "s",
        DicomDecodeError,
        "0: its frame declares 30000 x 30000 pixels in its ",
        "stream, the header Rows 64 x Columns 64; refused before decoding",
    )


def test_a_compressed_object_declaring_more_than_the_memory_limit_is_refused_before_decoding(
    tmp_path: Path, no_decoding: None
):
    ds = pydicom.dcmread(pydicom_file("MR_small_jp2klossless.dcm"))
    ds.Rows = ds.Columns = 30000
    ds.NumberOfFrames, ds.GridFrameOffsetVector = 3, [0.0, 2.0, 4.0]
    _recoded(ds, 30000, 30000, frames=3)
    ds.save_as(tmp_path / "mf.dcm")
    assert (tmp_path / "mf.dcm").stat().st_size < 100_000
    with pytest.raises(
        DicomDecodeError,
        match=r"mf\.dcm: declares 30000x30000x3 voxels, 10\.1 GiB.*max_study_gb.*refused before decoding",
    ):
        read_volume(tmp_path / "mf.dcm")


def _deflated(src: Path, dst: Path, pixel_data: bytes | None = None) -> Path:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    if pixel_data is not None:
        ds.PixelData = pixel_data
    ds.save_as(dst, enforce_file_format=True)
    return dst


def test_deflated_series_reads_like_the_original(good_series, tmp_path: Path):
    folder, paths = good_series
    (tmp_path / "d").mkdir()
    for p in paths:
        _deflated(p, tmp_path / "d" / p.name)
    np.testing.assert_array_equal(read_volume(tmp_path / "d").array, read_volume(folder).array)
    assert [len(i.files) for i in discover_series(tmp_path / "d")[0]] == [len(paths)]


def test_a_deflate_bomb_is_refused_before_it_is_inflated(good_series, tmp_path: Path):
    from spinelesion.io.dicom import read_dataset
    from spinelesion.io.dicom.discover import read_header

    bomb = _deflated(good_series[1][0], tmp_path / "bomb.dcm", bytes(16 << 20))  # 20x20 declared
    assert bomb.stat().st_size < 100_000
    for read in (read_dataset, read_header):
        with pytest.raises(
            DicomError,
            match=r"bomb\.dcm: its deflated dataset inflates to more than 1\.0 MiB, but its header declares 800 B of pixel data",
        ):
            read(bomb)

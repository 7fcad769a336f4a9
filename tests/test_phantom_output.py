"""The generator's files: geometry survives writing and reading, determinism, the contract, the CLI."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from spinelesion.data.manifest import ManifestError, read_manifest
from spinelesion.io.reader import read_volume
from spinelesion.io.volume import LPS_TO_RAS, Volume
from spinelesion.phantom.acquisition import SeriesPlan, acquire, plan_series
from spinelesion.phantom.canvas import Canvas
from spinelesion.phantom.config import default_phantom_config
from spinelesion.phantom.study import RenderedStudy
from spinelesion.phantom.writer import write_study


@pytest.mark.parametrize("oblique", [False, True])
def test_marker_at_an_lps_point_is_found_there_in_dicom_and_nifti(tmp_path: Path, oblique: bool):
    cfg = default_phantom_config()["acquisition"]
    cfg = {
        **cfg,
        "oblique_rate": 1.0 if oblique else 0.0,
        "noise_fraction": [0.001, 0.001],
        "bias_strength": [0.0, 0.0],
        "rescale_slope_rate": 0.0,
    }
    cv = Canvas.empty(np.array([-40.0, -80.0, -90.0]), np.array([40.0, 80.0, 90.0]), 1.0)
    point = np.array([4.0, -11.0, 17.0])
    x, y, z = cv.coords((slice(0, cv.shape[0]), slice(0, cv.shape[1]), slice(0, cv.shape[2])))
    cv.img[1] = 0.05 + 0.95 * np.exp(
        -((x - point[0]) ** 2 + (y - point[1]) ** 2 + (z - point[2]) ** 2) / (2 * 3.0**2)
    )
    rng = np.random.default_rng(1)
    plan: SeriesPlan = plan_series(rng, "t2", np.zeros(3), np.array([80.0, 160.0, 180.0]), cfg, 1.5)
    vol = acquire(cv, 1, plan, rng)
    study = RenderedStudy(
        "S1",
        "P1",
        {"t2": vol},
        {"t2": plan},
        [],
        [],
        None,
        None,  # type: ignore[arg-type]  # no series: the writer must cope
        {"age": 50, "sex": "F", "region": "lumbar", "field_strength": 1.5},
    )
    paths = write_study(study, tmp_path, ["dicom", "nifti"], seed=0)
    # DICOM, read back through pydicom geometry
    dcm = read_volume(tmp_path / paths["dicom"]["t2"])
    # NIfTI, read back with nibabel directly (RAS on disk)
    img = nib.load(tmp_path / paths["nifti"]["t2"])
    nii = Volume(np.asarray(img.dataobj, dtype=np.float32), LPS_TO_RAS @ img.affine)
    for v in (dcm, nii):
        peak = np.array(np.unravel_index(np.argmax(v.array), v.shape), dtype=float)
        found = v.voxel_to_world(peak)
        tolerance = float(np.linalg.norm(v.spacing)) / 2 + 0.5  # half a voxel diagonal
        assert np.linalg.norm(found - point) <= tolerance, (found, point)
    # the DICOM reader orders slices along the row x column normal, the NIfTI keeps the written
    # order: the grids may be mirrored in k, but every voxel sits at the same place
    pts = np.array([[0.0, 0.0, 0.0], [5.0, 7.0, 2.0]])
    for p in pts:
        world = dcm.voxel_to_world(p)
        q = nii.world_to_voxel(world)
        assert np.allclose(q, np.round(q), atol=1e-3)
        assert dcm.array[tuple(p.astype(int))] == pytest.approx(
            nii.array[tuple(np.round(q).astype(int))], abs=1.0
        )
    if oblique:
        normal = dcm.affine[:3, 2] / np.linalg.norm(dcm.affine[:3, 2])
        assert abs(abs(normal[0]) - 1.0) > 1e-4  # really oblique


def _pixels(folder: Path) -> dict[str, bytes]:
    out = {}
    for f in sorted(folder.rglob("*.dcm")):
        out[str(f.relative_to(folder))] = pydicom.dcmread(f).PixelData
    for f in sorted(folder.rglob("*.nii.gz")):
        out[str(f.relative_to(folder))] = np.asarray(nib.load(f).dataobj).tobytes()
    return out


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_same_seed_same_pixel_bytes_any_worker_count(tmp_path: Path):
    from conftest import generate

    a = generate(tmp_path / "a", studies=3, seed=5, workers=1)
    b = generate(tmp_path / "b", studies=3, seed=5, workers=2)
    c = generate(tmp_path / "c", studies=3, seed=6)
    pa, pb, pc = _pixels(a.parent / "studies"), _pixels(b.parent / "studies"), _pixels(c.parent / "studies")
    assert pa.keys() == pb.keys() and len(pa) > 10
    assert all(pa[k] == pb[k] for k in pa)
    assert a.read_text() == b.read_text()
    assert a.read_text() != c.read_text()
    common = set(pa) & set(pc)
    assert not common or any(pa[k] != pc[k] for k in common)


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_generated_manifest_passes_and_corrupted_copies_are_rejected(tiny_dataset: Path, tmp_path: Path):
    m = read_manifest(tiny_dataset, geometry=True)
    assert len(m.rows) > 20
    assert read_manifest(tiny_dataset.parent / "manifest_nifti.csv", geometry=True).rows
    copy = tmp_path / "d"
    shutil.copytree(tiny_dataset.parent, copy, ignore=shutil.ignore_patterns("*.nii.gz"))
    with open(copy / "manifest.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows, header = list(reader), list(reader.fieldnames or [])
    rows[0]["compartment"] = "epidural"
    rows[1]["y_mm"] = "twelve"
    shutil.rmtree(copy / rows[2]["t2"])
    with open(copy / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[h for h in header if h != "z_mm"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(ManifestError, match="column 'z_mm': required column is missing"):
        read_manifest(copy / "manifest.csv")
    with open(copy / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(ManifestError) as err:
        read_manifest(copy / "manifest.csv")
    text = str(err.value)
    assert "row 1, column 'compartment': unknown label 'epidural'" in text
    assert "row 2, column 'y_mm': 'twelve' is not a finite number" in text
    assert "row 3, column 't2'" in text and "does not exist" in text


@pytest.mark.slow  # > 3 s on the 2-core CPU
def test_make_data_cli(tmp_path: Path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spinelesion.make_data",
            f"output_dir={tmp_path / 'out'}",
            "studies=2",
            "seed=1",
            "workers=1",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = read_manifest(tmp_path / "out" / "manifest.csv", geometry=True)
    assert {r.study_id for r in m.rows} == {"S000100000", "S000100001"}
    assert (tmp_path / "out" / "dataset.json").is_file()


def test_voxel_centres_are_the_affine_applied_to_every_index():
    from scipy.spatial.transform import Rotation

    from spinelesion.io.volume import voxel_centres

    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", [12, -7, 30], degrees=True).as_matrix() @ np.diag(
        [0.7, 0.9, 4.0]
    )
    affine[:3, 3] = [-31.0, 12.5, 88.0]
    shape = (5, 7, 3)
    grid = voxel_centres(affine, [slice(0, n) for n in shape])
    assert grid.shape == (*shape, 3)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    expected = ijk @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(grid.reshape(-1, 3), expected, atol=1e-9)


def test_noise_upsampling_is_zooms_linear_mapping_with_the_far_corner_read():
    from scipy import ndimage

    from spinelesion.phantom.canvas import upsample_linear

    field = np.random.default_rng(3).standard_normal((6, 5, 9)).astype(np.float32)
    shape = (57, 43, 91)
    ours = upsample_linear(field, shape)
    zoom = ndimage.zoom(field, [s / c for s, c in zip(shape, field.shape, strict=True)], order=1)
    assert ours.shape == shape
    # The same corner-aligned mapping everywhere zoom stays inside its input ...
    np.testing.assert_allclose(ours[:-1, :-1, :-1], zoom[:-1, :-1, :-1], atol=1e-5)
    # ... and the far corner is the input's corner (zoom rounds past it and reads zero there).
    assert ours[-1, -1, -1] == pytest.approx(float(field[-1, -1, -1]), abs=1e-6)

"""A toy real background for insertion tests: three box-shaped bodies, discs, a CSF-filled canal
with a cord, in T1 and T2, with a vertebral-body mask (the layout of ``../shared/data/real-normals``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spinelesion.io.nifti import write_nifti
from spinelesion.io.volume import Volume

# Signal per tissue (T1, T2) of the toy study.
TOY = {
    "marrow": (400.0, 220.0),
    "disc": (250.0, 300.0),
    "csf": (80.0, 600.0),
    "cord": (300.0, 260.0),
    "muscle": (220.0, 150.0),
    "fat": (500.0, 300.0),
}


def _toy_arrays(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(images, body labels) of a toy lumbar spine: i = L-R, j = A-P, k = S-I, 1 mm voxels."""
    shape = (56, 96, 140)
    tissue = np.full(shape, 0, dtype=np.int8)  # 0 muscle/soft tissue
    bodies = np.zeros(shape, dtype=np.int16)
    i, j, k = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    lr = np.abs(i - 28) <= 18
    ap_body = (j >= 20) & (j < 50)
    for n, top in enumerate((128, 92, 56)):  # superior first: label 1 on top
        z = (k <= top) & (k > top - 26)
        bodies[lr & ap_body & z] = n + 1
        disc = (k <= top - 26) & (k > top - 36) & lr & ap_body
        tissue[disc] = 2
    tissue[bodies > 0] = 1
    canal = (np.abs(i - 28) <= 8) & (j >= 52) & (j < 66)
    tissue[canal] = 3
    tissue[canal & (np.abs(i - 28) <= 3) & (np.abs(j - 58) <= 3)] = 4  # cord
    names = ["muscle", "marrow", "disc", "csf", "cord"]
    images = {}
    for s, col in (("t1", 0), ("t2", 1)):
        lut = np.array([TOY[n][col] for n in names], dtype=np.float32)
        img = lut[tissue] + rng.normal(0, 8.0, shape).astype(np.float32)
        images[s] = np.clip(img, 0, None)
    return images, bodies


def write_toy_backgrounds(root: Path, subjects: tuple[str, ...] = ("toy_01", "toy_02")) -> Path:
    """One folder per subject: t1.nii.gz, t2.nii.gz and vertebral_bodies.nii.gz."""
    rng = np.random.default_rng(0)
    affine = np.eye(4)
    affine[:3, 3] = [-28.0, -30.0, -70.0]
    for subject in subjects:
        images, bodies = _toy_arrays(rng)
        for s, img in images.items():
            write_nifti(Volume(img.astype(np.int16), affine), root / subject / f"{s}.nii.gz")
        write_nifti(Volume(bodies, affine), root / subject / "vertebral_bodies.nii.gz")
    return root

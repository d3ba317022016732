"""Synthetic abdominal CT phantoms in the raw Synapse (BTCV) layout.

``python -m data_prep.phantom --out DIR --cases 30 --seed 0`` writes::

    DIR/img/img0001.nii.gz    int16 HU, shape (X, Y, Z), anisotropic spacing, non-identity affine
    DIR/label/label0001.nii.gz  uint8 raw Synapse ids (1 spleen ... 13 left adrenal)

With ``--dicom`` every image is also written as a CT DICOM series, ``DIR/dicom/imgNNNN/NNNN.dcm``
(one file per slice, CT Image Storage, int16 HU), for trying DICOM input and DICOM SEG output.

Case ids follow Synapse (1-10, 21-40) so the TransUNet split applies. Each case is a body
(fat, muscle, spine) holding randomly placed, smoothly deformed organs with realistic and
partly overlapping HU values (liver, spleen and pancreas differ by a few HU, so a model must
use position and shape), low-frequency texture and noise. A case depends only on
``(seed, case id)``: the same call writes the same voxels.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

import medsam_ft
from medsam_ft.arguments import add_option, argument_parser
from medsam_ft.io import atomic_path, write_nifti
from medsam_ft.scans import LPS_TO_RAS

SYNAPSE_CASE_IDS: tuple[int, ...] = tuple(range(1, 11)) + tuple(range(21, 41))


@dataclass(frozen=True)
class OrganShape:
    """An organ as a deformed ellipsoid in body-normalised coordinates.

    ``centre``: (u, v, w) with u in [-1, 1] from the patient's right to left, v in [-1, 1]
    from anterior to posterior and w in [0, 1] from the lowest to the highest slice;
    ``radii``: semi-axes in the same units; ``hu``: mean intensity; ``deform``: amplitude of
    the smooth random boundary deformation, relative to the radius.
    """

    label: int
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    hu: float
    deform: float = 0.25


# Painted in this order, later organs over earlier ones (the liver first, vessels last).
ORGANS: tuple[OrganShape, ...] = (
    OrganShape(6, (-0.42, -0.05, 0.78), (0.40, 0.42, 0.30), 62.0, 0.20),  # liver
    OrganShape(1, (0.55, 0.30, 0.72), (0.16, 0.20, 0.16), 55.0),  # spleen
    OrganShape(7, (0.30, -0.30, 0.70), (0.25, 0.20, 0.20), 28.0, 0.30),  # stomach
    OrganShape(2, (-0.35, 0.45, 0.45), (0.12, 0.14, 0.17), 165.0, 0.15),  # right kidney
    OrganShape(3, (0.35, 0.45, 0.50), (0.12, 0.14, 0.17), 165.0, 0.15),  # left kidney
    OrganShape(4, (-0.30, -0.35, 0.55), (0.09, 0.08, 0.14), 12.0, 0.15),  # gallbladder (elongated along the body axis)
    OrganShape(11, (0.05, 0.08, 0.52), (0.32, 0.07, 0.07), 45.0, 0.30),  # pancreas
    OrganShape(9, (-0.12, 0.22, 0.5), (0.06, 0.06, 0.65), 120.0, 0.05),  # inferior vena cava
    OrganShape(8, (0.04, 0.25, 0.5), (0.06, 0.06, 0.70), 190.0, 0.05),  # aorta
)


def _smooth_field(rng: np.random.Generator, grid: tuple[np.ndarray, ...], n_waves: int = 6, max_freq: float = 3.0) -> np.ndarray:
    """A smooth random field in [-1, 1] on ``grid`` (a sum of random low-frequency cosines)."""
    field = np.zeros(np.broadcast_shapes(*(g.shape for g in grid)), dtype=np.float32)
    for _ in range(n_waves):
        freq = rng.uniform(-max_freq, max_freq, size=3)
        phase = rng.uniform(0, 2 * np.pi)
        field += np.cos(np.pi * (freq[0] * grid[0] + freq[1] * grid[1] + freq[2] * grid[2]) + phase)
    return field / n_waves


def _axis_range(axis: np.ndarray, centre: float, radius: float) -> slice:
    """The index range of grid ``axis`` within ``radius`` of ``centre``."""
    inside = np.flatnonzero(np.abs(axis.ravel() - centre) <= radius)
    return slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else slice(0, 0)


def make_case(case_id: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate one phantom case.

    Returns:
        image: int16[X, Y, Z] in HU.
        label: uint8[X, Y, Z] raw Synapse ids.
        affine: float64[4, 4] voxel -> RAS mm (axes flipped like Synapse's LPS-stored files).
    """
    rng = np.random.default_rng([seed, case_id])
    size = int(rng.choice([160, 192, 224]))
    n_slices = int(rng.integers(24, 49))
    spacing_xy = float(rng.uniform(0.7, 0.9))
    spacing_z = float(rng.choice([2.5, 3.0, 4.0, 5.0]))

    # Array axis 0 runs to the patient's left, axis 1 to posterior, axis 2 to superior (the affine's axis
    # codes L, P, S), so the liver lies on the patient's right in any viewer.
    i = np.linspace(-1.0, 1.0, size, dtype=np.float32)[:, None, None]  # u: +1 = patient left
    j = np.linspace(-1.0, 1.0, size, dtype=np.float32)[None, :, None]  # v: +1 = posterior
    k = np.linspace(0.0, 1.0, n_slices, dtype=np.float32)[None, None, :]
    grid = (i, j, k)

    body_ru, body_rv = rng.uniform(0.82, 0.95), rng.uniform(0.62, 0.75)
    body_edge = (i / body_ru) ** 2 + (j / body_rv) ** 2 + 0.04 * _smooth_field(rng, grid, 4, 2.0)
    body = body_edge < 1.0
    muscle_wall = body & (body_edge > 0.78)
    image = np.full((size, size, n_slices), -1000.0, dtype=np.float32)
    image[body] = -95.0 + 15.0 * _smooth_field(rng, grid)[body]
    image[muscle_wall] = 48.0
    label = np.zeros(image.shape, dtype=np.uint8)

    # Scale organ positions to this body, so they sit inside it whatever its size.
    scale_u, scale_v = body_ru / 0.9, body_rv / 0.7
    for organ in ORGANS:
        cu, cv, cw = organ.centre
        cu = cu * scale_u + rng.normal(0, 0.03)
        cv = cv * scale_v + rng.normal(0, 0.03)
        cw = cw + rng.normal(0, 0.03)
        ru, rv, rw = (r * rng.uniform(0.85, 1.15) for r in organ.radii)
        # Work in the organ's bounding box: the deformation moves the boundary by at most sqrt(1 + deform).
        reach = np.sqrt(1.0 + organ.deform)
        box = (_axis_range(i, cu, ru * scale_u * reach), _axis_range(j, cv, rv * scale_v * reach),
               _axis_range(k, cw, rw * reach))
        sub = (i[box[0]], j[:, box[1]], k[:, :, box[2]])
        dist = ((sub[0] - cu) / (ru * scale_u)) ** 2 + ((sub[1] - cv) / (rv * scale_v)) ** 2 + ((sub[2] - cw) / rw) ** 2
        inside = (dist + organ.deform * _smooth_field(rng, sub)) < 1.0
        inside &= body[box] & ~muscle_wall[box]
        label[box][inside] = organ.label
        hu = organ.hu + rng.normal(0, 6.0)
        image[box][inside] = hu + 8.0 * _smooth_field(rng, sub, 8, 6.0)[inside]

    # Kidneys: darker medulla in the centre of each kidney.
    for kidney in (2, 3):
        mask = label == kidney
        if mask.any():
            idx = np.argwhere(mask)
            centre = idx.mean(axis=0)
            spread = idx.std(axis=0) + 1e-3
            d = (((np.argwhere(mask) - centre) / spread) ** 2).sum(axis=1)
            medulla = d < 1.2
            image[tuple(idx[medulla].T)] -= 60.0

    # Spine: vertebral body (cancellous) with cortical rim, posterior midline, all slices.
    spine_v = 0.52 * scale_v
    spine_r = 0.13 + rng.normal(0, 0.01)
    spine_dist = (i / spine_r) ** 2 + ((j - spine_v) / (spine_r * 0.9)) ** 2
    image[(spine_dist < 1.0) & body] = 250.0
    image[(spine_dist < 0.6) & body] = 180.0
    label[(spine_dist < 1.0) & body] = 0

    image += rng.normal(0.0, 12.0, size=image.shape).astype(np.float32)
    image = np.clip(image, -1024, 3071)

    origin = rng.uniform(-200.0, 200.0, size=3)
    affine = np.diag([-spacing_xy, -spacing_xy, spacing_z, 1.0])
    affine[:3, 3] = origin
    return image.round().astype(np.int16), label, affine


def write_dicom_series(folder: str | os.PathLike, image: np.ndarray, affine: np.ndarray, patient_id: str,
                       series_description: str = "phantom CT", study_uid: str | None = None,
                       series_number: int = 1) -> str:
    """Write image int16[X, Y, Z] (HU) with ``affine`` (voxel -> RAS mm) as a CT series of single-frame
    files ``folder/NNNN.dcm``, slice k in file k. Returns the SeriesInstanceUID. Column i and row j of a
    frame are voxel axes 0 and 1; the slice normal is their cross product (keep axis 2 along it so DICOM
    readers sort the files in k order)."""
    folder = Path(folder)
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    along_row, along_column = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    study_uid, series_uid, frame_uid = study_uid or generate_uid(), generate_uid(), generate_uid()
    today = datetime.date.today().strftime("%Y%m%d")
    for k in range(image.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = f"Phantom^{patient_id}", patient_id, "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality, ds.SeriesDescription = "CT", series_description
        ds.Manufacturer = f"medsam_ft {medsam_ft.__version__} phantom"
        ds.SeriesNumber, ds.InstanceNumber, ds.PositionReferenceIndicator = series_number, k + 1, ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [float(v) for v in np.concatenate([along_row, along_column])]
        ds.ImagePositionPatient = [float(v) for v in lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3]]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # between rows, between columns
        ds.SliceThickness = float(spacing[2])
        ds.Rows, ds.Columns = image.shape[1], image.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.PixelData = np.ascontiguousarray(image[:, :, k].T.astype(np.int16)).tobytes()  # [rows j, columns i]
        with atomic_path(folder / f"{k:04d}.dcm") as tmp:
            ds.save_as(tmp, enforce_file_format=True)
    return series_uid


def generate(out_dir: Path, cases: int = 30, seed: int = 0, dicom: bool = False) -> list[int]:
    """Write ``cases`` phantom cases (ids in Synapse order) under ``out_dir`` (also as DICOM series
    with ``dicom``); returns the ids."""
    if not 1 <= cases <= len(SYNAPSE_CASE_IDS):
        raise ValueError(f"--cases must be between 1 and {len(SYNAPSE_CASE_IDS)}, got {cases}")
    ids = list(SYNAPSE_CASE_IDS[:cases])
    for case_id in ids:
        image, label, affine = make_case(case_id, seed)
        write_nifti(out_dir / "img" / f"img{case_id:04d}.nii.gz", image, affine)
        write_nifti(out_dir / "label" / f"label{case_id:04d}.nii.gz", label, affine)
        if dicom:
            write_dicom_series(out_dir / "dicom" / f"img{case_id:04d}", image, affine, patient_id=f"{case_id:04d}")
    return ids


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser("python -m data_prep.phantom", __doc__.splitlines()[0])
    add_option(parser, "out", type=Path, required=True, help="output folder (img/ and label/ are created)")
    add_option(parser, "cases", type=int, default=30, help="number of cases, 1-30 (Synapse ids 1-10, 21-40)")
    add_option(parser, "seed", type=int, default=0)
    add_option(parser, "dicom", action="store_true", help="also write each image as a DICOM series (dicom/imgNNNN/)")
    args = parser.parse_args(argv)
    ids = generate(args.out, args.cases, args.seed, args.dicom)
    print(f"wrote {len(ids)} phantom cases to {args.out}")


if __name__ == "__main__":
    main()

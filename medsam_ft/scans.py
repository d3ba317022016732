"""Patient scans to predict: finding them (a file, a folder of files, a DICOM series) and reading them with checks.

A :class:`Scan` keeps the voxels in the file's own index order with the affine that places them in the
patient (RAS millimetres, as NIfTI and nibabel), so a prediction written with that affine and shape
lies exactly on the scan in any viewer, whatever its axis codes (LPS, LAS, oblique). Every problem
is an :class:`~medsam_ft.io.InputError` naming the file or folder.
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from medsam_ft.data.transunet import read_h5_volume
from medsam_ft.io import InputError, files_by_stem, volume_stem

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
TRANSUNET_SUFFIX = ".npy.h5"
VOLUME_FILE_SUFFIXES = NIFTI_SUFFIXES + (TRANSUNET_SUFFIX,)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # also RAS -> LPS: flip the first two axes


@dataclass(frozen=True)
class ScanSource:
    """Where one scan is: ``format`` ``nifti`` / ``transunet`` (a file) or ``dicom`` (a series folder, its UID
    and its files in slice order, as :func:`dicom_series` found them)."""

    path: Path
    format: str
    name: str
    series_uid: str | None = None
    dicom_files: tuple[Path, ...] = ()


@dataclass
class Scan:
    """A loaded scan: ``voxels`` float32[I, J, K] and ``affine`` float64[4, 4] (voxel i, j, k -> RAS mm).

    ``intensity``: ``"raw"`` (the scanner's values: CT numbers, MR signal; NIfTI, DICOM after rescale)
    or ``"unit"`` (already scaled to [0, 1]: TransUNet h5). ``nifti``: the source header (NIfTI input),
    copied into the label file.
    ``dicom_files``: the series' files, file k holding slice ``voxels[:, :, k]`` (DICOM input).
    """

    source: ScanSource
    voxels: np.ndarray
    affine: np.ndarray
    intensity: str = "raw"
    nifti: nib.Nifti1Image | None = None
    dicom_files: list[Path] = field(default_factory=list)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (|det| of the affine's 3 x 3 part, mm^3 / 1000)."""
        return abs(float(np.linalg.det(self.affine[:3, :3]))) / 1000.0


def dicom_series(folder: str | os.PathLike) -> dict[str, list[Path]]:
    """The DICOM series directly in a folder.

    Args:
        folder: the folder.

    Returns:
        ``{SeriesInstanceUID: files sorted by slice position}``.
    """
    folder = str(folder)
    reader = sitk.ImageSeriesReader()
    warnings_shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK prints "No Series were found" for a folder without any
    try:
        return {uid: [Path(f) for f in reader.GetGDCMSeriesFileNames(folder, uid)]
                for uid in reader.GetGDCMSeriesIDs(folder)}
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings_shown)


def _describe_series(uid: str, files: list[Path]) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(files[0]))
    try:
        reader.ReadImageInformation()
        description = reader.GetMetaData("0008|103e").strip() if reader.HasMetaDataKey("0008|103e") else ""
    except RuntimeError:
        description = ""
    return f"{uid} ({len(files)} files{', ' + repr(description) if description else ''})"


def find_scans(path: str | os.PathLike, series_uid: str | None = None) -> list[ScanSource]:
    """The scans to predict at a path.

    Args:
        path: a NIfTI or TransUNet ``.npy.h5`` file, a folder of such files, or a folder holding DICOM series.
        series_uid: picks one of several series (without it the error lists them).

    Returns:
        The sources, sorted.

    Raises:
        InputError: nothing readable at ``path``, several series and no ``series_uid``, or an unknown one.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "not found")
    if path.is_file():
        name = path.name.lower()
        if not name.endswith(VOLUME_FILE_SUFFIXES):
            raise InputError(path, "not a NIfTI (.nii, .nii.gz) or TransUNet .npy.h5 file; "
                                   "for a DICOM series give its folder")
        return [_file_source(path)]
    files = files_by_stem(path, VOLUME_FILE_SUFFIXES)
    series = dicom_series(path)
    if files and series:
        raise InputError(path, f"holds both volume files ({len(files)}) and DICOM series ({len(series)}): "
                               "give one kind per folder")
    if files:
        return [_file_source(f) for f in files.values()]
    if not series:
        raise InputError(path, "holds no NIfTI (.nii, .nii.gz), TransUNet .npy.h5 or DICOM files")
    if series_uid is None and len(series) > 1:
        listing = "; ".join(_describe_series(uid, f) for uid, f in series.items())
        raise InputError(path, f"holds {len(series)} DICOM series; choose one with --series UID: {listing}")
    uid = series_uid if series_uid is not None else next(iter(series))
    if uid not in series:
        raise InputError(path, f"has no DICOM series {uid} (it holds {', '.join(series)})")
    return [ScanSource(path, "dicom", path.name, uid, tuple(series[uid]))]


def _file_source(path: Path) -> ScanSource:
    kind = "transunet" if path.name.lower().endswith(TRANSUNET_SUFFIX) else "nifti"
    return ScanSource(path, kind, volume_stem(path))


def read_scan(source: ScanSource) -> Scan:
    """Load and check one scan: 3D, finite, not constant.

    Args:
        source: from :func:`find_scans`.

    Returns:
        The voxels in the file's own order with their RAS affine (and NIfTI header / DICOM files).

    Raises:
        InputError: unreadable or failing the checks (names the file).
    """
    readers = {"nifti": _read_nifti, "dicom": _read_dicom, "transunet": _read_transunet}
    scan = readers[source.format](source)
    check_voxels(source.path, scan.voxels)
    return scan


def check_voxels(path: str | os.PathLike, voxels: np.ndarray) -> None:
    """Refuse volumes that are not 3D, hold NaN/infinite values, or are one value everywhere (no image).

    Args:
        path: the file, for the error.
        voxels: the volume.

    Raises:
        InputError: a failed check.
    """
    if voxels.ndim != 3:
        raise InputError(path, f"expected a 3D volume, got shape {voxels.shape}")
    finite = np.isfinite(voxels)
    if not finite.all():
        raise InputError(path, f"{int((~finite).sum())} voxels are NaN or infinite")
    low, high = float(voxels.min()), float(voxels.max())
    if low == high:
        raise InputError(path, f"every voxel has the value {low}: no image to segment")


def _read_nifti(source: ScanSource) -> Scan:
    try:
        image = nib.load(source.path)
    except Exception as err:  # nibabel raises many types (ImageFileError, OSError, ...) for what is not NIfTI
        raise InputError(source.path, f"not a readable NIfTI image ({type(err).__name__}: {err})") from None
    shape = tuple(image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(source.path, f"expected a 3D volume, got a {len(shape)}D image of shape {tuple(image.shape)}")
    try:
        voxels = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
    except (EOFError, OSError, ValueError, zlib.error) as err:
        raise InputError(source.path, f"truncated or corrupt image data ({type(err).__name__}: {err})") from None
    return Scan(source, voxels, np.asarray(image.affine, dtype=np.float64), nifti=image)


def _read_dicom(source: ScanSource) -> Scan:
    files = list(source.dicom_files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(source.path, f"DICOM series {source.series_uid} could not be read: {err}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(source.path, f"DICOM series {source.series_uid} is not a grey 3D volume")
    voxels = sitk.GetArrayFromImage(image).astype(np.float32).transpose(2, 1, 0)  # [K, J, I] -> [I, J, K]
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return Scan(source, voxels, LPS_TO_RAS @ lps, dicom_files=files)


def _read_transunet(source: ScanSource) -> Scan:
    image = read_h5_volume(source.path)["image"][0].numpy()
    logger.warning("%s: TransUNet volumes carry no geometry; the label volume gets an identity affine (voxel units)",
                   source.path)
    return Scan(source, image, np.eye(4), intensity="unit")

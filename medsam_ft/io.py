"""File input/output with checked boundaries: clear errors naming the file, atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch


class InputError(ValueError):
    """Bad user input (a file, a folder, a checkpoint): the message names it and says what is wrong.

    Args:
        path: the file or folder at fault.
        problem: what is wrong with it (and, where known, how to fix it).
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _temporary_beside(path: Path) -> Path:
    """An empty file beside ``path`` with the usual permissions, keeping the full suffix (``.nii.gz``) so
    writers that infer the format from the name behave as for ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    Path(tmp_name).chmod(0o666 & ~umask)  # mkstemp makes 0600
    return Path(tmp_name)


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield one temporary path beside each of ``paths``; rename them all to ``paths`` (in the order
    given) only if the block succeeds. On error every temporary file is removed and ``paths`` are
    untouched. Put the file that marks a finished result last."""
    targets = [Path(p) for p in paths]
    temporaries: list[Path] = []
    try:
        temporaries = [_temporary_beside(path) for path in targets]
        yield temporaries
        for tmp, path in zip(temporaries, targets):
            os.replace(tmp, path)
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed to ``path`` only if the ``with`` block succeeds.

    Args:
        path: the file to write.

    Yields:
        The temporary path to write to (removed if the block fails).
    """
    with atomic_paths(path) as (tmp,):
        yield tmp


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks).

    Args:
        path: the file.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically.

    Args:
        path: the file.
        obj: anything ``json.dump`` takes.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def nifti_image(array: np.ndarray, affine: np.ndarray, like: nib.Nifti1Image | None = None) -> nib.Nifti1Image:
    """An array as a NIfTI image.

    Args:
        array: the voxels (dtype kept).
        affine: float[4, 4] voxel -> RAS mm.
        like: an image whose header is copied (qform/sform codes, units, description), so a label
            volume carries its source's geometry exactly; its intensity scaling is dropped. None:
            qform and sform are both ``affine`` (code 1).

    Returns:
        The image.
    """
    array = np.asarray(array)
    if like is None:
        image = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
        image.set_qform(image.affine, code=1)
        image.set_sform(image.affine, code=1)
        return image
    header = like.header.copy()
    header.set_data_dtype(array.dtype)
    header.set_slope_inter(1.0, 0.0)
    return nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64), header=header)


def write_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> None:
    """Write an array as a NIfTI file, atomically.

    Args:
        path: the file (``.nii`` or ``.nii.gz``).
        array: the voxels (dtype kept).
        affine: float[4, 4] voxel -> RAS mm.
    """
    with atomic_path(path) as tmp:
        nib.save(nifti_image(array, affine), tmp)


def load_torch_file(path: str | os.PathLike, expected: str) -> Any:
    """``torch.load`` of tensors and plain containers only (``weights_only``).

    Args:
        path: the file.
        expected: what it should be, for the error ("a medsam_ft checkpoint").

    Returns:
        What the file holds.

    Raises:
        InputError: missing or unreadable, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"checkpoint not found (expected {expected})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types (pickle, zip, index errors) for a bad file
        raise InputError(path, f"not a readable PyTorch checkpoint (expected {expected}): {err}") from None


VOLUME_SUFFIXES = (".nii.gz", ".nii", ".npy.h5")


def volume_stem(path: str | os.PathLike) -> str:
    """A volume file's name without its (double) suffix.

    Args:
        path: e.g. ``/a/img0001.nii.gz`` (also ``.nii`` and TransUNet's ``.npy.h5``).

    Returns:
        e.g. ``img0001``.
    """
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def files_by_stem(folder: str | os.PathLike, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """The files of a folder by stem (outputs are named after stems).

    Args:
        folder: the folder.
        suffixes: the endings kept (case-insensitive); hidden files skipped.

    Returns:
        ``{stem: path}``, sorted by name.

    Raises:
        InputError: no such folder, or two files with one stem.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        suffix = next((s for s in suffixes if path.name.lower().endswith(s)), None)
        if suffix is None or path.name.startswith(".") or not path.is_file():
            continue
        stem = path.name[: -len(suffix)]
        if stem in found:
            raise InputError(path, f"has the same stem as {found[stem].name}: cannot tell which one to use")
        found[stem] = path
    return found

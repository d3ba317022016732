"""The TransUNet / SAMed Synapse layout: ``train_npz/caseXXXX_sliceYYY.npz`` and ``test_vol_h5/caseXXXX.npy.h5``.

Images are HU clipped to [-125, 275] and scaled to [0, 1]; labels are already the 8-organ ids 0-8.
Arrays are stored as SimpleITK orders them (volumes ``[Z, Y, X]``, slices ``[Y, X]``); the readers
return our channel-first ``[1, X, Y, Z]`` / ``[1, X, Y]`` so they enter the same transform chains
as NIfTI volumes after windowing and label remapping.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import torch

from medsam_ft.io import InputError, atomic_path


def _checked(path: Path, image: np.ndarray, label: np.ndarray, ndim: int) -> dict[str, torch.Tensor]:
    if image.ndim != ndim or image.shape != label.shape:
        raise InputError(path, f"expected image and label of the same {ndim}D shape, got {image.shape} and {label.shape}")
    if not np.isfinite(image).all():
        raise InputError(path, "image holds NaN or infinite values")
    axes = tuple(reversed(range(ndim)))
    return {
        "image": torch.as_tensor(np.ascontiguousarray(image.transpose(axes)), dtype=torch.float32)[None],
        "label": torch.as_tensor(np.ascontiguousarray(label.transpose(axes)).astype(np.int64))[None],
    }


def read_npz_slice(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a TransUNet training slice.

    Args:
        path: ``caseXXXX_sliceYYY.npz``.

    Returns:
        ``{"image": float[1, X, Y], "label": long[1, X, Y]}``.

    Raises:
        InputError: unreadable or without ``image`` and ``label`` arrays.
    """
    path = Path(path)
    try:
        with np.load(path) as data:
            image, label = data["image"], data["label"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise InputError(path, f"not a TransUNet npz slice with 'image' and 'label' ({err})") from None
    return _checked(path, image, label, 2)


def read_h5_volume(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a TransUNet test volume.

    Args:
        path: ``caseXXXX.npy.h5``.

    Returns:
        ``{"image": float[1, X, Y, Z], "label": long[1, X, Y, Z]}``.

    Raises:
        InputError: unreadable or without ``image`` and ``label`` datasets.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as data:
            image, label = data["image"][:], data["label"][:]
    except (OSError, KeyError) as err:
        raise InputError(path, f"not a TransUNet h5 volume with 'image' and 'label' ({err})") from None
    return _checked(path, image, label, 3)


def write_npz_slice(path: str | os.PathLike, image: np.ndarray, label: np.ndarray) -> None:
    """Write a TransUNet training slice ([Y, X] arrays).

    Args:
        path: the ``.npz`` file.
        image: float[X, Y] in [0, 1].
        label: [X, Y] class ids.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, image=image.T.astype(np.float32), label=label.T.astype(np.float32))


def write_h5_volume(path: str | os.PathLike, image: np.ndarray, label: np.ndarray) -> None:
    """Write a TransUNet test volume ([Z, Y, X] arrays).

    Args:
        path: the ``.npy.h5`` file.
        image: float[X, Y, Z] in [0, 1].
        label: [X, Y, Z] class ids.
    """
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("image", data=image.transpose(2, 1, 0).astype(np.float32))
        handle.create_dataset("label", data=label.transpose(2, 1, 0).astype(np.float32))

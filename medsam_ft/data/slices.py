"""3D volumes -> 2D axial training slices, and loading with errors that name the file."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

from medsam_ft.io import InputError

from .transunet import read_h5_volume, read_npz_slice


def apply_checked(transform: Callable[[Any], Any], item: Mapping[str, Any]) -> Any:
    """Apply a transform to a datalist item, errors naming the file.

    Args:
        transform: the MONAI transform.
        item: the item.

    Returns:
        ``transform(item)``.

    Raises:
        InputError: the transform failed (MONAI's wrapped exception unwrapped), naming the item's file.
    """
    try:
        return transform(item)
    except Exception as err:  # MONAI wraps every failure in RuntimeError("applying transform ...")
        cause: BaseException | None = err
        while cause is not None:
            if isinstance(cause, InputError):
                raise cause from None
            root, cause = cause, cause.__cause__
        raise InputError(item.get("image", "<item>"), f"could not be loaded: {type(root).__name__}: {root}") from err


class LoadTransUNetd(MapTransform):
    """``{"image": path}`` of a TransUNet ``.npz`` slice or ``.npy.h5`` volume -> image and label tensors."""

    def __init__(self) -> None:
        super().__init__(["image"])

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        path = Path(d["image"])
        reader = read_h5_volume if path.name.endswith(".h5") else read_npz_slice
        d["image_path"] = str(path)
        d.update(reader(path))
        return d


def kept_slices(has_organ: Sequence[bool], keep_empty: float, rng: np.random.Generator) -> list[int]:
    """The slices to train on.

    Args:
        has_organ: per slice, whether its label has any foreground.
        keep_empty: the fraction of slices without any kept.
        rng: draws them.

    Returns:
        Indices: every slice with an organ, and the drawn empty ones, sorted.
    """
    return [z for z, organ in enumerate(has_organ) if organ or rng.random() < keep_empty]


class VolumeSliceDataset(torch.utils.data.Dataset):
    """Every axial slice of preloaded volumes, as 2D samples.

    ``volumes``: dicts with ``image`` float[1, X, Y, Z] and ``label`` [1, X, Y, Z] (plus anything
    else, e.g. ``case``). Item i is ``transform({"image": [1, X, Y], "label": [1, X, Y], "case", "slice"})``.
    Slices are views into the volumes: nothing is copied up front. ``keep_empty`` < 1 keeps only that
    fraction (drawn with ``seed``) of the slices whose label is all background.

    Args:
        volumes: the loaded volumes.
        transform: the 2D sample chain.
        keep_empty: the fraction of empty slices kept.
        seed: draws them.
    """

    def __init__(self, volumes: Sequence[Mapping[str, Any]], transform: Callable[[dict], dict] | None = None,
                 keep_empty: float = 1.0, seed: int = 0):
        self.volumes = list(volumes)
        self.transform = transform
        rng = np.random.default_rng(seed)
        self.index = []
        for v, volume in enumerate(self.volumes):
            has_organ = torch.as_tensor(volume["label"]).flatten(0, -2).any(dim=0).tolist()
            self.index += [(v, z) for z in kept_slices(has_organ, keep_empty, rng)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        v, z = self.index[i]
        volume = self.volumes[v]
        item = {
            "image": torch.as_tensor(volume["image"][..., z]),
            "label": torch.as_tensor(volume["label"][..., z]),
            "case": volume.get("case", v),
            "slice": z,
        }
        return self.transform(item) if self.transform is not None else item


def load_volumes(items: Sequence[Mapping[str, Any]], transform: Callable[[Any], Any]) -> list[dict[str, Any]]:
    """Load every datalist item's volumes.

    Args:
        items: the datalist items.
        transform: the volume chain.

    Returns:
        The loaded items.

    Raises:
        InputError: a file failed, naming it.
    """
    return [apply_checked(transform, item) for item in items]

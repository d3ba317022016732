"""MONAI dictionary transforms of our own, and the transform chains built from them.

Arrays are channel-first: volumes ``[1, X, Y, Z]`` (RAS after ``Orientationd``), slices ``[1, X, Y]``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandomizableTransform,
    RepeatChanneld,
    Resized,
    Rotate,
    ScaleIntensityRanged,
)

from medsam_ft.io import InputError

HU_WINDOW: tuple[float, float] = (-125.0, 275.0)


def source_name(data: Mapping[Hashable, Any], key: Hashable) -> str:
    """The file a loaded item came from (MONAI metadata), for error messages."""
    value = data.get(key)
    meta = getattr(value, "meta", None) or {}
    return str(meta.get("filename_or_obj", data.get(f"{key}_path", f"<{key}>")))


class ValidateImageLabeld(MapTransform):
    """Refuse NaN/infinite image voxels and image/label pairs whose spatial shapes differ."""

    def __init__(self, image_key: str = "image", label_key: str | None = "label"):
        super().__init__([image_key] + ([label_key] if label_key else []))
        self.image_key, self.label_key = image_key, label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = torch.as_tensor(d[self.image_key])
        if not torch.isfinite(image).all():
            bad = int((~torch.isfinite(image)).sum())
            raise InputError(source_name(d, self.image_key), f"{bad} voxels are NaN or infinite")
        if self.label_key and self.label_key in d:
            label = d[self.label_key]
            if tuple(label.shape[1:]) != tuple(image.shape[1:]):
                raise InputError(
                    source_name(d, self.label_key),
                    f"label shape {tuple(label.shape[1:])} differs from image shape {tuple(image.shape[1:])} "
                    f"({source_name(d, self.image_key)})",
                )
        return d


class RemapLabelsd(MapTransform):
    """Map label ids through ``mapping`` (ids not in it -> ``default``); ids outside ``allowed`` are an error.

    E.g. Synapse raw ids 0-13 -> 0-8 with 5, 9, 10, 12, 13 -> background.
    """

    def __init__(self, keys: KeysCollection, mapping: Mapping[int, int], allowed: Sequence[int], default: int = 0):
        super().__init__(keys)
        self.allowed = set(int(i) for i in allowed)
        self.lut = np.full(max(self.allowed) + 1, default, dtype=np.uint8)
        for source, target in mapping.items():
            self.lut[int(source)] = int(target)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            values = torch.as_tensor(label)
            ids = torch.unique(values).tolist()
            if any(i != int(i) for i in ids):
                raise InputError(source_name(d, key), f"label values are not integers (e.g. {[i for i in ids if i != int(i)][:3]})")
            unknown = sorted(int(i) for i in ids if int(i) not in self.allowed)
            if unknown:
                raise InputError(source_name(d, key), f"label ids {unknown[:10]} outside the expected {sorted(self.allowed)}")
            remapped = torch.as_tensor(self.lut, device=values.device)[values.long()]
            if isinstance(label, MetaTensor):
                remapped = MetaTensor(remapped, meta=label.meta, applied_operations=label.applied_operations)
            d[key] = remapped
        return d


class RandRotFlipOrRotated(RandomizableTransform, MapTransform):
    """SAMed's / TransUNet's 2D augmentation of ``[C, H, W]`` slices.

    With probability 0.5: rotate by k x 90 degrees (k uniform in 0-3) and flip along a random axis;
    otherwise, with probability 0.5: rotate by an angle uniform in [-20, 20] degrees about the centre
    (the same size kept). Images are interpolated with ``image_mode``, labels with nearest.
    """

    def __init__(self, image_key: str = "image", label_key: str = "label", image_mode: str = "bilinear"):
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, [image_key, label_key])
        self.image_key, self.label_key, self.image_mode = image_key, label_key, image_mode

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.R.rand() < 0.5:
            k, axis = int(self.R.randint(0, 4)), int(self.R.randint(1, 3))
            for key in (self.image_key, self.label_key):
                d[key] = torch.flip(torch.rot90(torch.as_tensor(d[key]), k, dims=(1, 2)), dims=(axis,))
        elif self.R.rand() < 0.5:
            angle = float(np.deg2rad(self.R.uniform(-20.0, 20.0)))
            d[self.image_key] = Rotate(angle, keep_size=True, mode=self.image_mode, padding_mode="zeros")(d[self.image_key])
            d[self.label_key] = Rotate(angle, keep_size=True, mode="nearest", padding_mode="zeros")(d[self.label_key])
        return d


def volume_transforms(
    hu_window: Sequence[float] = HU_WINDOW,
    label_map: Mapping[int, int] | None = None,
    allowed_label_ids: Sequence[int] | None = None,
    with_label: bool = True,
) -> Compose:
    """NIfTI/DICOM paths -> checked RAS volumes: image float[1, X, Y, Z] in [0, 1], label uint8[1, X, Y, Z]."""
    keys = ["image", "label"] if with_label else ["image"]
    chain: list = [
        LoadImaged(keys, image_only=True),
        EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes="RAS"),
        ValidateImageLabeld("image", "label" if with_label else None),
        ScaleIntensityRanged("image", a_min=hu_window[0], a_max=hu_window[1], b_min=0.0, b_max=1.0, clip=True),
    ]
    if with_label and label_map is not None:
        allowed = allowed_label_ids if allowed_label_ids is not None else sorted(set(label_map) | {0})
        chain.append(RemapLabelsd("label", label_map, allowed))
    return Compose(chain)


def slice_transforms(image_size: int, augment: bool) -> Compose:
    """2D slices image float[1, X, Y], label [1, X, Y] -> image float[3, S, S], label long[1, S, S].

    Training (``augment=True``) applies SAMed's rot90/flip-or-rotate augmentation first. Images are
    resized bilinearly (no overshoot outside [0, 1]), labels with nearest.
    """
    chain: list = [RandRotFlipOrRotated()] if augment else []
    chain += [
        Resized(["image", "label"], spatial_size=(image_size, image_size), mode=("bilinear", "nearest")),
        RepeatChanneld("image", repeats=3),
        EnsureTyped("image", dtype=torch.float32, track_meta=False),
        EnsureTyped("label", dtype=torch.long, track_meta=False),
    ]
    return Compose(chain)

"""MONAI dictionary transforms of our own, and the transform chains built from them.

Arrays are channel-first: volumes ``[1, X, Y, Z]`` (RAS after ``Orientationd``), slices ``[1, X, Y]``,
2D images ``[1 or 3, H, W]``. Labels hold class ids, and :data:`IGNORE_INDEX` where no loss or metric counts.
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
    OneOf,
    Orientationd,
    RandAxisFlipd,
    RandFlipd,
    RandRotate90d,
    RandRotated,
    RandSpatialCropd,
    Resized,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    SpatialPadd,
)

from medsam_ft.io import InputError

HU_WINDOW: tuple[float, float] = (-125.0, 275.0)
PERCENTILES: tuple[float, float] = (0.5, 99.5)
INTENSITY_KINDS = ("window", "percentiles")
IGNORE_INDEX = 255  # label value of pixels that losses and metrics skip (void / unlabelled)


def source_name(data: Mapping[Hashable, Any], key: Hashable) -> str:
    """The file a loaded item came from (MONAI metadata), for error messages.

    Args:
        data: the item.
        key: the entry whose metadata names the file.

    Returns:
        The file name, or the key when the metadata has none.
    """
    value = data.get(key)
    meta = getattr(value, "meta", None) or {}
    return str(meta.get("filename_or_obj", data.get(f"{key}_path", f"<{key}>")))


class ValidateImageLabeld(MapTransform):
    """Refuse NaN/infinite image voxels and image/label pairs whose spatial shapes differ.

    Args:
        image_key: the image entry.
        label_key: the label entry (None: images without labels).
    """

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

    A look-up table, not ``monai.transforms.MapLabelValued``: on a 512 x 512 x 150 label volume
    MapLabelValue (one pass per id) took 2.19 s, the table 0.45 s, as long as reading the NIfTI file.

    Args:
        keys: the label entries.
        mapping: source id -> target id.
        allowed: every id the labels may hold.
        default: the target of allowed ids not in ``mapping``.
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
                fractional = [i for i in ids if i != int(i)][:3]
                raise InputError(source_name(d, key), f"label values are not integers (e.g. {fractional})")
            unknown = sorted(int(i) for i in ids if int(i) not in self.allowed)
            if unknown:
                raise InputError(source_name(d, key), f"label ids {unknown[:10]} outside the expected {sorted(self.allowed)}")
            remapped = torch.as_tensor(self.lut, device=values.device)[values.long()]
            if isinstance(label, MetaTensor):
                remapped = MetaTensor(remapped, meta=label.meta, applied_operations=label.applied_operations)
            d[key] = remapped
        return d


def three_channels(image: torch.Tensor) -> torch.Tensor:
    """Three-channel images, as SAM's encoders take them.

    Args:
        image: float[..., 1 or 3, H, W] (channel dim -3).

    Returns:
        float[..., 3, H, W]: grey repeated (a view), colour unchanged.

    Raises:
        ValueError: another number of channels.
    """
    if image.shape[-3] == 1:
        return image.expand(*image.shape[:-3], 3, *image.shape[-2:])
    if image.shape[-3] != 3:
        raise ValueError(f"expected 1 or 3 image channels, got shape {tuple(image.shape)}")
    return image


class ThreeChanneld(MapTransform):
    """Grey images ``[1, H, W]`` -> ``[3, H, W]``; colour images unchanged (what SAM's encoder takes)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = three_channels(torch.as_tensor(d[key])).contiguous()
        return d


def samed_augmentation(image_mode: str = "bilinear") -> OneOf:
    """SAMed's / TransUNet's 2D augmentation of image ``[C, H, W]`` and label ``[1, H, W]`` pairs.

    With probability 0.5: rotate by k x 90 degrees (k uniform over the four rotations) and flip along
    a random axis; otherwise, with probability 0.5: rotate by an angle uniform in [-20, 20] degrees
    about the centre (the same size kept). So: the slice unchanged 1/4, each of the four mirror images
    1/8, a small rotation 1/4 (tests/test_data.py counts it).

    Args:
        image_mode: the image's interpolation for small rotations (labels: nearest).

    Returns:
        MONAI ``OneOf`` of the two branches, weights 0.5 / 0.5.
    """
    keys = ["image", "label"]
    rot90_flip = Compose([RandRotate90d(keys, prob=1.0, max_k=4, spatial_axes=(0, 1)), RandAxisFlipd(keys, prob=1.0)])
    rotate = RandRotated(keys, range_x=float(np.deg2rad(20.0)), prob=0.5, keep_size=True, mode=(image_mode, "nearest"),
                         padding_mode="zeros")
    return OneOf([rot90_flip, rotate], weights=[0.5, 0.5])


def intensity_spec(intensity: Mapping[str, Any] | Sequence[float]) -> dict[str, Any]:
    """How a data set's voxel values become [0, 1], in its one stored form.

    Args:
        intensity: ``{"kind": "window", "window": [low, high]}`` (CT: HU clipped to the window and
            scaled), ``{"kind": "percentiles", "percentiles": [low, high]}`` (MR and other scanners
            without a fixed scale: each volume's own low-high percentiles clipped and scaled), or
            ``[low, high]``, short for a window.

    Returns:
        The dictionary form.

    Raises:
        ValueError: another kind, or not two increasing numbers.
    """
    if not isinstance(intensity, Mapping):
        intensity = {"kind": "window", "window": list(intensity)}
    kind = intensity.get("kind")
    if kind not in INTENSITY_KINDS:
        raise ValueError(f"intensity kind {kind!r} unknown; choose one of {INTENSITY_KINDS}")
    bounds = [float(v) for v in intensity.get(kind, ())]
    if len(bounds) != 2 or not bounds[0] < bounds[1] or (kind == "percentiles" and not 0 <= bounds[0] < bounds[1] <= 100):
        raise ValueError(f"intensity {kind} must be two increasing numbers (percentiles within 0-100), got {bounds}")
    return {"kind": kind, kind: bounds}


def intensity_transform(intensity: Mapping[str, Any] | Sequence[float], key: str = "image") -> MapTransform:
    """The MONAI transform scaling ``data[key]`` to [0, 1] as ``intensity`` says (see :func:`intensity_spec`).

    Args:
        intensity: the data set's (or checkpoint's) intensity handling.
        key: the image entry.

    Returns:
        ``ScaleIntensityRanged`` (window) or ``ScaleIntensityRangePercentilesd`` (per volume), clipped.
    """
    spec = intensity_spec(intensity)
    low, high = spec[spec["kind"]]
    if spec["kind"] == "window":
        return ScaleIntensityRanged(key, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)
    return ScaleIntensityRangePercentilesd(key, lower=low, upper=high, b_min=0.0, b_max=1.0, clip=True)


def volume_transforms(
    intensity: Mapping[str, Any] | Sequence[float] = HU_WINDOW,
    label_map: Mapping[int, int] | None = None,
    allowed_label_ids: Sequence[int] | None = None,
    with_label: bool = True,
    axcodes: str = "RAS",
) -> Compose:
    """NIfTI/DICOM paths -> checked volumes.

    Args:
        intensity: how voxel values become [0, 1] (:func:`intensity_spec`; a pair is a CT window).
        label_map: raw label id -> class id (None: ids kept).
        allowed_label_ids: the raw ids the labels may hold (default: ``label_map``'s and 0).
        with_label: items have a ``label``.
        axcodes: the orientation (RAS: X to the patient's right, Y anterior, Z superior; the slice
            convention networks train and predict in, recorded in their checkpoints).

    Returns:
        The chain: image float[1, X, Y, Z] in [0, 1], label uint8[1, X, Y, Z].
    """
    keys = ["image", "label"] if with_label else ["image"]
    chain: list = [
        LoadImaged(keys, image_only=True),
        EnsureChannelFirstd(keys),
        Orientationd(keys, axcodes=axcodes),
        ValidateImageLabeld("image", "label" if with_label else None),
        intensity_transform(intensity),
    ]
    if with_label and label_map is not None:
        allowed = allowed_label_ids if allowed_label_ids is not None else sorted(set(label_map) | {0})
        chain.append(RemapLabelsd("label", label_map, allowed))
    return Compose(chain)


AUGMENTATIONS = ("samed", "flip_rotate", "flip", "none")


def augmentation(name: str) -> list:
    """The random 2D augmentation ``name`` of image ``[C, H, W]`` and label ``[1, H, W]`` pairs.

    ``samed``: :func:`samed_augmentation` (what SAMed applies to CT slices); ``flip_rotate``: GSAM's
    horizontal flip (p 0.5) and rotation within [-90, 90] degrees (p 0.5) (microscopy, satellite,
    endoscopy); ``flip``: horizontal flip only (street scenes, which have an up); ``none``.

    Args:
        name: one of :data:`AUGMENTATIONS`.

    Returns:
        The MONAI dictionary transforms, to put in a chain.

    Raises:
        ValueError: unknown name.
    """
    keys = ["image", "label"]
    flip = RandFlipd(keys, prob=0.5, spatial_axis=1)
    rotate = RandRotated(keys, range_x=float(np.deg2rad(90.0)), prob=0.5, keep_size=True, mode=("bilinear", "nearest"),
                         padding_mode="zeros")
    chains = {"samed": [samed_augmentation()], "flip_rotate": [flip, rotate], "flip": [flip], "none": []}
    if name not in chains:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {AUGMENTATIONS}")
    return chains[name]


def slice_transforms(image_size: int | None, augment: str = "none", crop_size: int | None = None,
                     crop_after_resize: bool = False) -> Compose:
    """2D training samples: image float[1 or 3, H, W], label [1, H, W] -> image float[3, S, S], label long[1, S, S].

    ``crop_size`` None: the whole image is resized to S = ``image_size`` (CT slices; 2D images of
    similar size). ``crop_size`` c: a random c x c crop (images smaller than c padded with zeros
    first) resized to S, so large images train at their own scale; predict them with sliding windows
    of c pixels. ``crop_after_resize`` (networks that take any size, GSAM): the whole image is
    resized to S (None: kept) and the c x c crop of it is the sample (S x S becomes c x c).
    Images are resized bilinearly (no overshoot outside [0, 1]), labels with nearest (ignore values
    stay intact).

    Args:
        image_size: S (None with ``crop_after_resize``: the image kept at its size).
        augment: one of :data:`AUGMENTATIONS` (see :func:`augmentation`).
        crop_size: c, or None for whole images.
        crop_after_resize: crop after resizing (GSAM), as above.

    Returns:
        The chain.
    """
    keys = ["image", "label"]
    resize = [Resized(keys, spatial_size=(image_size, image_size), mode=("bilinear", "nearest"))] if image_size else []
    crop = [SpatialPadd(keys, spatial_size=(crop_size, crop_size)),
            RandSpatialCropd(keys, roi_size=(crop_size, crop_size), random_size=False)] if crop_size else []
    chain = resize + crop + augmentation(augment) if crop_after_resize else crop + augmentation(augment) + resize
    chain += [
        ThreeChanneld("image"),
        EnsureTyped("image", dtype=torch.float32, track_meta=False),
        EnsureTyped("label", dtype=torch.long, track_meta=False),
    ]
    return Compose(chain)

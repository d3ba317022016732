"""Generic 2D data sets: folders of images and masks paired by file stem.

Images (png, jpg, jpeg, tif, tiff, bmp; grey, RGB, RGBA, palette) are read as float[1 or 3, H, W] in
[0, 1]: 8-bit values / 255; 16-bit, 32-bit and float images are scaled by their own 0.5-99.5
percentile range (microscopy and satellite images rarely fill the 16-bit range). Alpha is dropped.

Masks are read as class ids uint8[1, H, W] in one of three formats (:class:`MaskFormat`):
- ``ids``: pixel values are class ids (0 = background); palette PNGs (PASCAL VOC) give their indices;
- ``binary``: foreground where the value is at least half the type's range (0/255 masks, also JPEG
  masks whose values scatter around 0 and 255); RGB masks are averaged over channels first;
- ``palette``: RGB colours mapped to class ids through a palette (CamVid style).
An ignore value (``ids``) or ignore colours (``palette``) become :data:`IGNORE_INDEX`, which losses
and metrics skip.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform
from PIL import Image, UnidentifiedImageError

from medsam_ft.io import InputError, files_by_stem
from medsam_ft.transforms import IGNORE_INDEX

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_MODES = ("ids", "binary", "palette")
SPLIT_FOLDERS = {"training": ("train", "training"), "validation": ("val", "valid", "validation"), "test": ("test", "testing")}


@dataclass
class MaskFormat:
    """How mask files encode class ids (see the module docstring).

    ``palette``: class name -> [r, g, b], in class-id order (``palette`` mode only);
    ``ignore_value`` (``ids``) / ``ignore_colors`` (``palette``): pixels that no loss or metric counts.
    """

    mode: str = "ids"
    num_classes: int = 2
    ignore_value: int | None = None
    palette: dict[str, list[int]] | None = None
    ignore_colors: list[list[int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in MASK_MODES:
            raise ValueError(f"unknown mask mode {self.mode!r}; choose one of {MASK_MODES}")
        if self.mode == "palette" and not self.palette:
            raise ValueError("palette masks need a palette (class name -> [r, g, b])")
        if self.mode == "binary" and self.num_classes != 2:
            raise ValueError(f"binary masks have 2 classes, not {self.num_classes}")
        if not 2 <= self.num_classes <= IGNORE_INDEX:
            raise ValueError(f"num_classes must be in 2..{IGNORE_INDEX}, got {self.num_classes}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> MaskFormat:
        return cls(**obj)

    def class_colors(self) -> list[list[int]] | None:
        """The palette's colours in class-id order (None without a palette)."""
        return [list(c) for c in self.palette.values()] if self.palette else None


def read_palette(path: str | os.PathLike) -> tuple[dict[str, list[int]], list[list[int]]]:
    """``(classes name -> [r, g, b], ignore colours)`` from a palette file.

    JSON: ``{"classes": {"sky": [128, 128, 128], ...}, "ignore": [[0, 0, 0]]}`` (``ignore`` optional);
    CSV with a header (CamVid's ``class_dict.csv``): ``name,r,g,b`` rows, every row a class.
    Class ids follow the file's order.

    Args:
        path: the palette file (``.json`` or ``.csv``).

    Returns:
        ``(classes name -> [r, g, b], ignore colours)``.

    Raises:
        InputError: unreadable, or colours that are not three values in 0..255.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "palette file not found")
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="") as handle:
                rows = list(csv.reader(handle))[1:]
            classes = {row[0]: [int(v) for v in row[1:4]] for row in rows if row}
            ignore: list[list[int]] = []
        else:
            obj = json.loads(path.read_text())
            classes = {str(k): [int(v) for v in rgb] for k, rgb in obj["classes"].items()}
            ignore = [[int(v) for v in rgb] for rgb in obj.get("ignore", [])]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
        raise InputError(path, f"not a palette (JSON {{'classes': {{name: [r, g, b]}}}} or CSV name,r,g,b): "
                               f"{type(err).__name__}: {err}") from None
    colours = [tuple(c) for c in list(classes.values()) + ignore]
    if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in colours):
        raise InputError(path, "every colour must be three values in 0..255")
    if len(set(colours)) != len(colours):
        raise InputError(path, "a colour is listed twice")
    if len(classes) < 2:
        raise InputError(path, f"needs at least 2 classes, has {len(classes)}")
    return classes, ignore


def _open(path: Path, what: str, palette_to_rgb: bool = True) -> np.ndarray:
    """The pixel array of a single-frame image file, or an InputError naming it.

    Palette images become RGB unless ``palette_to_rgb`` is False (then their indices are the pixels).
    """
    try:
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                raise InputError(path, f"holds {image.n_frames} frames; split a stack into single images first "
                                       "(python -m data_prep.folder2d --unstack IMAGES.tif MASKS.tif)")
            if image.mode in ("1", "LA", "PA", "RGBA", "CMYK", "YCbCr") or (palette_to_rgb and image.mode == "P"):
                image = image.convert("L" if image.mode in ("1", "LA") else "RGB")
            return np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(path, f"not a readable {what} file ({type(err).__name__}: {err})") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a 2D image (see the module docstring for the scaling).

    Args:
        path: the image file.

    Returns:
        float32[1 or 3, H, W] in [0, 1].

    Raises:
        InputError: unreadable or of an unsupported kind.
    """
    path = Path(path)
    pixels = _open(path, "image")
    if pixels.dtype == np.uint8:
        scaled = pixels.astype(np.float32) / 255.0
    else:
        pixels = pixels.astype(np.float32)
        if not np.isfinite(pixels).all():
            raise InputError(path, "holds NaN or infinite pixel values")
        low, high = np.percentile(pixels, (0.5, 99.5))
        scaled = np.clip((pixels - low) / max(float(high - low), 1e-6), 0.0, 1.0)
    return scaled[None] if scaled.ndim == 2 else np.ascontiguousarray(scaled.transpose(2, 0, 1))


def _grey(pixels: np.ndarray) -> np.ndarray:
    return pixels.mean(axis=-1) if pixels.ndim == 3 else pixels


def _class_id_pixels(path: Path, pixels: np.ndarray) -> np.ndarray:
    """The single integer channel of an ``ids`` mask (grey, or RGB with equal channels)."""
    if pixels.ndim == 3:
        if np.abs(pixels.astype(np.int16) - pixels[..., :1]).max() > 0:
            raise InputError(path, "is a colour mask, but the mask format is class ids: give a palette "
                                   "(--palette) or use --mask_mode binary")
        pixels = pixels[..., 0]
    if pixels.dtype.kind not in "ui":
        raise InputError(path, f"mask pixels are {pixels.dtype}, not integer class ids")
    return pixels


def _check_class_ids(path: Path, values: Iterable[int], mask_format: MaskFormat) -> None:
    """Every value must be a class id of ``mask_format`` or its ignore value."""
    bad = sorted(int(v) for v in values if v != mask_format.ignore_value and not 0 <= v < mask_format.num_classes)
    if bad:
        raise InputError(path, f"mask values {bad[:10]} are not class ids 0..{mask_format.num_classes - 1}"
                               + ("" if mask_format.ignore_value is None else f" or the ignore value {mask_format.ignore_value}"))


def read_mask(path: str | os.PathLike, mask_format: MaskFormat) -> np.ndarray:
    """Read a mask as class ids.

    Args:
        path: the mask file.
        mask_format: how its values map to classes.

    Returns:
        uint8[1, H, W]: class ids 0..C-1, and :data:`IGNORE_INDEX` where ignored.

    Raises:
        InputError: unreadable, or values the format does not allow.
    """
    path = Path(path)
    pixels = _open(path, "mask", palette_to_rgb=mask_format.mode == "palette")
    if mask_format.mode == "binary":
        threshold = (np.iinfo(pixels.dtype).max // 2 + 1) if pixels.dtype.kind in "ui" else 0.5
        return (_grey(pixels) >= threshold).astype(np.uint8)[None]
    if mask_format.mode == "palette":
        return _palette_ids(path, pixels, mask_format)[None]
    ids = _class_id_pixels(path, pixels).astype(np.int64)
    _check_class_ids(path, np.unique(ids).tolist(), mask_format)
    return np.where(ids == mask_format.ignore_value, IGNORE_INDEX, ids).astype(np.uint8)[None]


def _palette_ids(path: Path, pixels: np.ndarray, mask_format: MaskFormat) -> np.ndarray:
    if pixels.ndim != 3:
        raise InputError(path, "is a grey mask, but the mask format is an RGB palette")
    codes = (pixels[..., 0].astype(np.int64) << 16) | (pixels[..., 1].astype(np.int64) << 8) | pixels[..., 2]
    lookup = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(mask_format.class_colors() or [])}
    lookup |= {(r << 16) | (g << 8) | b: IGNORE_INDEX for r, g, b in mask_format.ignore_colors}
    values, inverse = np.unique(codes, return_inverse=True)
    unknown = [v for v in values.tolist() if v not in lookup]
    if unknown:
        shown = [[v >> 16, (v >> 8) & 255, v & 255] for v in unknown[:5]]
        raise InputError(path, f"{len(unknown)} colours are not in the palette, e.g. {shown}")
    return np.asarray([lookup[v] for v in values.tolist()], dtype=np.uint8)[inverse.reshape(codes.shape)]


def header_size(path: str | os.PathLike) -> tuple[int, int]:
    """An image's size from its file header, without decoding the pixels.

    Args:
        path: the image file.

    Returns:
        (H, W).
    """
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(path, f"not a readable image file ({type(err).__name__}: {err})") from None


def _require_same_size(image: str | os.PathLike, image_hw: Sequence[int], mask: str | os.PathLike,
                       mask_hw: Sequence[int]) -> None:
    if tuple(image_hw) != tuple(mask_hw):
        raise InputError(mask, f"mask size {mask_hw[1]}x{mask_hw[0]} differs from its image's "
                               f"{image_hw[1]}x{image_hw[0]} ({image})")


def check_sizes(image: str | os.PathLike, mask: str | os.PathLike) -> None:
    """An image and its mask must have the same height and width (read from the file headers).

    Args:
        image: the image file.
        mask: its mask.

    Raises:
        InputError: the sizes differ (names the mask).
    """
    _require_same_size(image, header_size(image), mask, header_size(mask))


def pair_files(images_dir: str | os.PathLike, masks_dir: str | os.PathLike, mask_suffix: str = "") -> list[dict[str, str]]:
    """``[{"image", "label", "name"}]`` pairing ``images_dir/STEM.*`` with ``masks_dir/STEM{mask_suffix}.*``.

    Pairs by file stem, never by sort order.

    Args:
        images_dir: the images.
        masks_dir: the masks.
        mask_suffix: what mask stems add to image stems (e.g. ``_mask``).

    Returns:
        ``[{"image", "label", "name"}]``, sorted by stem.

    Raises:
        InputError: an image without its mask, or a mask without its image, naming the file.
    """
    images, masks = files_by_stem(images_dir, IMAGE_SUFFIXES), files_by_stem(masks_dir, IMAGE_SUFFIXES)
    if not images:
        raise InputError(images_dir, f"holds no images ({', '.join(IMAGE_SUFFIXES)})")
    pairs = []
    for stem, image in images.items():
        mask = masks.pop(f"{stem}{mask_suffix}", None)
        if mask is None:
            raise InputError(image, f"has no mask {stem}{mask_suffix}.* in {masks_dir}")
        pairs.append({"image": str(image), "label": str(mask), "name": stem})
    if masks:
        orphan = next(iter(masks.values()))
        raise InputError(orphan, f"is a mask without an image in {images_dir} ({len(masks)} such masks)")
    return pairs


def scan_masks(masks: Sequence[str | os.PathLike], mode: str = "auto", ignore_value: int | None = None,
               num_classes: int | None = None, palette: str | os.PathLike | None = None) -> MaskFormat:
    """Read every mask once: choose their format, count the classes, and check every file.

    ``palette`` given: ``palette`` masks (:func:`read_palette`). ``auto``: ``binary`` for JPEG masks
    (JPEG cannot store exact ids) or values within {0, 255} (255 not being the ignore value), else
    ``ids``. ``ids``: ``num_classes`` = the largest id + 1 unless given.

    Args:
        masks: every mask file.
        mode: ``auto``, ``ids``, ``binary`` or ``palette``.
        ignore_value: the mask value of unlabelled pixels (ids / binary masks).
        num_classes: ids masks: the number of classes (default: the largest id + 1).
        palette: a palette file (:func:`read_palette`).

    Returns:
        The :class:`MaskFormat` every mask was checked against.

    Raises:
        InputError: a mask that does not fit, naming the file.
    """
    if palette is not None:
        classes, ignore = read_palette(palette)
        known: MaskFormat | None = MaskFormat("palette", num_classes=len(classes), palette=classes, ignore_colors=ignore)
    elif mode == "binary" or (mode == "auto" and any(Path(m).suffix.lower() in (".jpg", ".jpeg") for m in masks)):
        known = MaskFormat("binary")
    elif mode in ("auto", "ids"):
        known = None
    else:
        raise ValueError(f"mask mode {mode!r}: choose auto, ids or binary, or give a palette")
    if known is not None:
        for mask in masks:
            read_mask(mask, known)
        return known
    values = {Path(m): set(np.unique(_class_id_pixels(Path(m), _open(Path(m), "mask", palette_to_rgb=False))).tolist())
              for m in masks}
    found = set().union(*values.values())
    if mode == "auto" and found <= {0, 255} and ignore_value != 255:
        return MaskFormat("binary")
    ids = found - {ignore_value}
    mask_format = MaskFormat("ids", num_classes=num_classes or max(max(ids, default=0) + 1, 2), ignore_value=ignore_value)
    for path, file_values in values.items():
        _check_class_ids(path, file_values, mask_format)
    return mask_format


def find_split_folders(root: Path, images: str, masks: str) -> dict[str, tuple[Path, Path]]:
    """The image and mask folders of a data set, per split.

    Args:
        root: the data set folder.
        images: the image folder's name.
        masks: the mask folder's name.

    Returns:
        ``{split: (images_dir, masks_dir)}``: ``root/images`` -> one unsplit ``"all"``; else per-split
        subfolders ``root/{train,val,test}/images`` (also ``training``, ``valid``, ``validation``, ``testing``).

    Raises:
        InputError: neither layout found.
    """
    if (root / images).is_dir():
        return {"all": (root / images, root / masks)}
    found = {}
    for split, names in SPLIT_FOLDERS.items():
        for name in names:
            if (root / name / images).is_dir():
                found[split] = (root / name / images, root / name / masks)
                break
    if not found:
        raise InputError(root, f"holds neither {images}/ + {masks}/ nor train/{images}/ ... split folders")
    return found


def read_name_list(path: str | os.PathLike) -> list[str]:
    """The stems a split file lists.

    Args:
        path: one image name or stem per line (blank lines and # comments skipped).

    Returns:
        The stems.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "split list not found")
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [Path(line).stem if Path(line).suffix.lower() in IMAGE_SUFFIXES else line for line in lines if line]


def assign_splits(pairs: Iterable[Mapping[str, str]], lists: Mapping[str, Sequence[str]], val_fraction: float,
                  seed: int, list_source: Mapping[str, str | os.PathLike] | None = None) -> dict[str, list[dict[str, str]]]:
    """Split unsplit pairs by the user's name lists (``{"training" | "validation" | "test": names}``).

    Without a training list, the pairs in no list are the training set (with one, unlisted pairs are
    left out). Without a validation list, ``val_fraction`` of the training pairs, drawn with ``seed``,
    become the validation set.

    Args:
        pairs: the unsplit image/mask pairs.
        lists: split -> listed names.
        val_fraction: the training share drawn for validation without a validation list.
        seed: draws it.
        list_source: split -> the list's file, for errors.

    Returns:
        split -> pairs.

    Raises:
        InputError: a listed name with no pair, or one listed in two splits.
    """
    pairs = list(pairs)
    by_name = {p["name"]: dict(p) for p in pairs}
    splits: dict[str, list[dict[str, str]]] = {"training": [], "validation": [], "test": []}
    for split, names in lists.items():
        for name in names:
            if name not in by_name:
                raise InputError((list_source or {}).get(split, split), f"lists {name!r}, which has no image/mask pair")
            splits[split].append(by_name[name])
    if "training" not in lists:
        listed = {p["name"] for items in splits.values() for p in items}
        splits["training"] = [p for p in pairs if p["name"] not in listed]
    if "validation" in lists:
        return splits
    pairs = splits["training"]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs)).tolist()
    n_val = int(round(val_fraction * len(pairs)))
    if pairs and n_val >= len(pairs):
        raise ValueError(f"a validation fraction of {val_fraction} leaves no training images out of {len(pairs)}")
    val_ids = set(order[:n_val])
    splits["validation"] = [p for i, p in enumerate(pairs) if i in val_ids]
    splits["training"] = [p for i, p in enumerate(pairs) if i not in val_ids]
    return splits


class LoadImage2Dd(MapTransform):
    """``{"image": path[, "label": path]}`` -> image float[1 or 3, H, W] in [0, 1], label uint8[1, H, W].

    Both are MetaTensors whose ``filename_or_obj`` is their file; a mask of another size than its
    image is an :class:`InputError` naming the mask.

    Args:
        mask_format: how mask values map to classes (None: images only).
        image_key: the image entry.
        label_key: the mask entry.
    """

    def __init__(self, mask_format: MaskFormat | None = None, image_key: str = "image", label_key: str = "label"):
        super().__init__([image_key, label_key], allow_missing_keys=True)
        self.mask_format, self.image_key, self.label_key = mask_format, image_key, label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image_path = str(d[self.image_key])
        image = read_image(image_path)
        d[self.image_key] = MetaTensor(torch.from_numpy(image), meta={"filename_or_obj": image_path,
                                                                      "spatial_shape": image.shape[1:]})
        if self.label_key in d and self.mask_format is not None:
            label_path = str(d[self.label_key])
            label = read_mask(label_path, self.mask_format)
            _require_same_size(image_path, image.shape[1:], label_path, label.shape[1:])
            d[self.label_key] = MetaTensor(torch.from_numpy(label), meta={"filename_or_obj": label_path,
                                                                          "spatial_shape": label.shape[1:]})
        return d

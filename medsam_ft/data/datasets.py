"""What a bundle trains and evaluates on: a data set folder opened once, then its splits as datasets.

Three layouts are recognised in ``dataset_dir``:
- ``datalist.json`` from ``python -m data_prep.synapse``: raw NIfTI volumes, windowed and
  remapped by :func:`medsam_ft.transforms.volume_transforms`;
- ``datalist.json`` from ``python -m data_prep.folder2d`` (``"format": "folder2d"``): 2D images and
  masks (:mod:`medsam_ft.data.folder2d`), trained on and predicted at their own resolution;
- the TransUNet layout (``lists/lists_Synapse/train.txt``, ``train_npz/``, ``test_vol_h5/``):
  already windowed and remapped; validation volumes are the npz slices of ``val_cases`` training
  cases stacked back into volumes (and removed from training). h5/npz files carry no spacing, so
  their clinical HD95 is in voxels.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose

from medsam_ft.io import InputError
from medsam_ft.transforms import HU_WINDOW, intensity_spec, slice_transforms, volume_transforms

from .datalist import SPLITS, read_datalist
from .folder2d import LoadImage2Dd, MaskFormat
from .slices import LoadTransUNetd, VolumeSliceDataset, apply_checked, kept_slices, load_volumes
from .synapse import SYNAPSE_CLASS_NAMES, check_pair
from .transunet import read_npz_slice

TRANSUNET_LISTS = Path("lists") / "lists_Synapse"
TRANSUNET_META = "transunet.json"
_NPZ_NAME = re.compile(r"case(\d+)_slice(\d+)$")


@dataclass
class DatasetSpec:
    """A data set's splits (lists of ``{"image", "label", ...}``) and how to read them."""

    root: Path
    layout: str  # "nifti", "transunet" or "folder2d"
    class_names: list[str]
    intensity: dict[str, Any] | None  # volumes: how voxel values become [0, 1] (transforms.intensity_spec)
    label_map: dict[int, int] | None
    allowed_label_ids: list[int] | None
    splits: dict[str, list[dict[str, Any]]]
    mask_format: MaskFormat | None = None
    axcodes: str | None = None  # volumes: the orientation of their slice arrays (None: 2D images)

    def load_transform(self, with_label: bool = True) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
        if self.layout == "folder2d":
            return LoadImage2Dd(self.mask_format if with_label else None)
        if self.layout == "transunet":
            return LoadTransUNetd()
        return volume_transforms(self.intensity, self.label_map, self.allowed_label_ids, with_label=with_label,
                                 axcodes=self.axcodes)


def read_dataset_spec(dataset_dir: str | os.PathLike, datalist: str | os.PathLike | None = None,
                      val_cases: int = 2, seed: int = 0, axcodes: str | None = None,
                      intensity: Mapping[str, Any] | None = None) -> DatasetSpec:
    """Read what a data set folder holds (a datalist's folder, or the TransUNet layout); every listed file is checked.

    Args:
        dataset_dir: the folder.
        datalist: the datalist (default ``dataset_dir/datalist.json``).
        val_cases: TransUNet layout: training cases held out for validation (the datalist's own
            validation split otherwise).
        seed: draws those cases.
        axcodes: the orientation volumes are sliced in (a checkpoint's, to evaluate it as it was
            trained). NIfTI datalists are reoriented to it (default RAS); the TransUNet layout's
            arrays have the orientation they were written in (:func:`transunet_axcodes`).
        intensity: the intensity handling volumes are read with (a checkpoint's, to evaluate it as it
            was trained; default: the datalist's own).

    Returns:
        The :class:`DatasetSpec` (layout, class names, HU window, splits...); datasets come from
        :func:`slice_dataset` and :func:`evaluation_dataset`.

    Raises:
        InputError: folder or listed file missing or unreadable, no datalist nor TransUNet layout, an
            invalid mask format, or a TransUNet layout oriented otherwise than ``axcodes``.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise InputError(root, "dataset folder not found")
    datalist_path = Path(datalist) if datalist is not None else root / "datalist.json"
    if datalist_path.is_file():
        listed = read_datalist(datalist_path)
        splits = {s: listed.get(s, []) for s in SPLITS}
        labels = listed.get("labels")
        try:
            named = isinstance(labels, dict) and sorted(int(k) for k in labels) == list(range(len(labels)))
        except (TypeError, ValueError):
            named = False
        if not named:
            raise InputError(datalist_path, "must name its classes: \"labels\": {\"0\": \"background\", \"1\": ...} "
                                            "(ids 0..C-1); the data_prep converters write it")
        class_names = [labels[str(i)] for i in range(len(labels))]
        if listed.get("format") == "folder2d":
            try:
                mask_format = MaskFormat.from_json(listed["mask_format"])
            except (KeyError, TypeError, ValueError) as err:
                raise InputError(datalist_path, f"has no valid mask_format ({type(err).__name__}: {err}); "
                                                "remake it with `python -m data_prep.folder2d`") from None
            return DatasetSpec(root, "folder2d", class_names, None, None, None, splits, mask_format)
        axcodes = axcodes or "RAS"
        stored = listed.get("intensity", listed.get("hu_window"))  # "hu_window": datalists of medsam_ft 0.1
        if stored is None:
            raise InputError(datalist_path, "must say how intensities are scaled: \"intensity\": {\"kind\": \"window\", "
                                            "\"window\": [low, high]} (CT) or {\"kind\": \"percentiles\", \"percentiles\": "
                                            "[0.5, 99.5]} (MR); the data_prep converters write it")
        try:
            intensity = intensity_spec(intensity if intensity is not None else stored)
        except (TypeError, ValueError) as err:
            raise InputError(datalist_path, f"has an invalid intensity: {err}") from None
        for items in splits.values():
            for item in items:
                check_pair(Path(item["image"]), Path(item["label"]))
        label_map = listed.get("label_map")
        return DatasetSpec(
            root, "nifti", class_names, intensity,
            {int(k): int(v) for k, v in label_map.items()} if label_map else None,
            listed.get("allowed_label_ids"), splits, axcodes=axcodes,
        )
    if (root / TRANSUNET_LISTS / "train.txt").is_file():
        spec = _open_transunet(root, val_cases, seed)
        if axcodes is not None and axcodes != spec.axcodes:
            raise InputError(root, f"holds TransUNet arrays oriented {spec.axcodes} ({TRANSUNET_META}), but a network "
                                   f"sliced {axcodes} is asked for; evaluate it on the NIfTI volumes instead")
        return spec
    raise InputError(root, f"holds neither {datalist_path.name} (make it with `python -m data_prep.synapse` "
                           "or `python -m data_prep.folder2d`) "
                           f"nor the TransUNet layout ({TRANSUNET_LISTS}/train.txt)")


def _open_transunet(root: Path, val_cases: int, seed: int) -> DatasetSpec:
    lists = root / TRANSUNET_LISTS
    slices: dict[int, list[dict[str, Any]]] = {}
    for name in (lists / "train.txt").read_text().split():
        match = _NPZ_NAME.match(name)
        path = root / "train_npz" / f"{name}.npz"
        if not match or not path.is_file():
            raise InputError(lists / "train.txt", f"lists {name!r}, but {path} is missing or misnamed")
        slices.setdefault(int(match.group(1)), []).append({"image": str(path), "case": int(match.group(1)),
                                                           "slice": int(match.group(2))})
    test = []
    test_list = lists / "test_vol.txt"
    for name in test_list.read_text().split() if test_list.is_file() else []:
        path = root / "test_vol_h5" / f"{name}.npy.h5"
        if not path.is_file():
            raise InputError(test_list, f"lists {name!r}, but {path} is missing")
        test.append({"image": str(path), "case": int(name[4:])})
    cases = sorted(slices)
    val_ids = sorted(np.random.default_rng(seed).choice(cases, size=min(val_cases, len(cases) - 1), replace=False).tolist())
    validation = [{"slices": sorted(slices[c], key=lambda s: s["slice"]), "case": c} for c in val_ids]
    training = [s for c in cases if c not in val_ids for s in slices[c]]
    return DatasetSpec(root, "transunet", list(SYNAPSE_CLASS_NAMES), intensity_spec(HU_WINDOW), None, None,
                       {"training": training, "validation": validation, "test": test}, axcodes=transunet_axcodes(root))


def transunet_axcodes(root: str | os.PathLike) -> str:
    """The orientation of a TransUNet layout's arrays (read back as ``[1, X, Y(, Z)]``).

    ``python -m data_prep.synapse --transunet`` writes volumes reoriented RAS, as NIfTI training sees
    them, and says so in ``transunet.json``. The original authors' files carry no such record: they
    keep each scan's stored voxel order (SimpleITK arrays of DICOM-derived NIfTI), LPS for the
    Synapse scans (X to the patient's left, Y posterior: the liver on the image's left, anterior up,
    as their figures show). Another convention: write ``{"axcodes": "..."}`` to ``transunet.json``.

    Args:
        root: the TransUNet layout's folder.

    Returns:
        Three axis codes, e.g. ``RAS``.

    Raises:
        InputError: an unreadable ``transunet.json`` or invalid codes in it.
    """
    meta = Path(root) / TRANSUNET_META
    if not meta.is_file():
        return "LPS"
    try:
        axcodes = json.loads(meta.read_text())["axcodes"]
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(meta, f"is not {{\"axcodes\": \"RAS\"}} or similar ({type(err).__name__}: {err})") from None
    if not (isinstance(axcodes, str) and len(axcodes) == 3 and set(axcodes) <= set("LRAPSI")):
        raise InputError(meta, f"axcodes {axcodes!r} are not three of L/R, A/P, S/I")
    return axcodes


class CheckedDataset(torch.utils.data.Dataset):
    """``transform(items[i])``, failing with an :class:`InputError` that names the bad file.

    Args:
        items: the datalist items.
        transform: applied to each when it is read.
    """

    def __init__(self, items: Sequence[Mapping[str, Any]], transform: Callable[[Mapping[str, Any]], Any]):
        self.items, self.transform = list(items), transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return apply_checked(self.transform, self.items[i])


def _stack_npz_case(item: Mapping[str, Any]) -> dict[str, Any]:
    """A held-out TransUNet training case: its npz slices stacked into image/label [1, X, Y, Z]."""
    loaded = [read_npz_slice(s["image"]) for s in item["slices"]]
    return {key: torch.stack([s[key] for s in loaded], dim=-1) for key in ("image", "label")} | {"case": item["case"]}


def slice_dataset(spec: DatasetSpec, image_size: int | None, augment: str = "samed", keep_empty: float = 1.0,
                  seed: int = 0, crop_size: int | None = None, crop_after_resize: bool = False,
                  split: str = "training") -> torch.utils.data.Dataset:
    """2D training samples of a split: every slice of its volumes, or every image.

    Args:
        spec: from :func:`read_dataset_spec`.
        image_size: S, the network input size.
        augment: see :func:`medsam_ft.transforms.augmentation`.
        keep_empty: the fraction (drawn with ``seed``) of volume slices without any organ kept.
        seed: draws them.
        crop_size: random crops instead of whole images (see :func:`medsam_ft.transforms.slice_transforms`).
        crop_after_resize: crops cut from the image resized to S (GSAM).
        split: ``training``, ``validation`` or ``test``.

    Returns:
        A dataset of ``{"image": float[3, S, S], "label": long[1, S, S]}`` (crop size for crops).
    """
    transform = slice_transforms(image_size, augment, crop_size, crop_after_resize)
    items = spec.splits[split]
    if spec.layout == "folder2d":
        return CheckedDataset(items, Compose([spec.load_transform(), transform]))
    if spec.layout == "transunet" and split == "training":
        if keep_empty < 1:  # one slice per file: read each label once to know which are empty
            has_organ = [bool(read_npz_slice(item["image"])["label"].any()) for item in items]
            items = [items[i] for i in kept_slices(has_organ, keep_empty, np.random.default_rng(seed))]
        return CheckedDataset(items, Compose([LoadTransUNetd(), transform]))
    if spec.layout == "transunet" and split == "validation":
        volumes = [_stack_npz_case(item) for item in items]
    else:
        volumes = load_volumes(items, spec.load_transform())
    return VolumeSliceDataset(volumes, transform, keep_empty=keep_empty, seed=seed)


def evaluation_dataset(spec: DatasetSpec, split: str, allow_empty: bool = False) -> torch.utils.data.Dataset:
    """Whole volumes (or 2D images) of a split, read lazily, for validation and evaluation.

    Args:
        spec: from :func:`read_dataset_spec`.
        split: ``training``, ``validation`` or ``test``.
        allow_empty: an empty split gives an empty dataset (training without validation) instead of an error.

    Returns:
        A dataset of image float[1, X, Y, Z] and label [1, X, Y, Z] volumes; for a 2D data set whole
        images at their own size (image float[1 or 3, H, W], label uint8[1, H, W]).

    Raises:
        ValueError: unknown split.
        InputError: an empty split, unless ``allow_empty``.
    """
    if split not in spec.splits:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(spec.splits)}")
    items = spec.splits[split]
    if not items and not allow_empty:
        raise InputError(spec.root, f"the {split!r} split is empty")
    if spec.layout == "transunet" and split == "validation":
        return CheckedDataset(items, _stack_npz_case)
    return CheckedDataset(items, spec.load_transform())


def check_class_names(spec: DatasetSpec, class_names: Sequence[str], checkpoint: str | os.PathLike) -> None:
    """A checkpoint must be evaluated on data with the classes it was trained for.

    Args:
        spec: the data set.
        class_names: the checkpoint's.
        checkpoint: its path, for the error.

    Raises:
        InputError: the names differ.
    """
    if list(class_names) != spec.class_names:
        raise InputError(checkpoint, f"was trained for classes {list(class_names)}, but {spec.root} has {spec.class_names}")


def check_num_classes(spec: DatasetSpec, num_classes: int) -> None:
    """A network must have one output per class of the data set it trains on.

    Args:
        spec: the data set.
        num_classes: the network's.

    Raises:
        InputError: the numbers differ.
    """
    if num_classes != len(spec.class_names):
        raise InputError(spec.root, f"has {len(spec.class_names)} classes {spec.class_names}, but num_classes is "
                                    f"{num_classes}; change the datalist's labels or leave num_classes to the data set")

"""Data sets in the Medical Segmentation Decathlon / nnU-Net layouts -> medsam_ft datalists.

- Decathlon and nnU-Net v1 (the same ``dataset.json``): ``imagesTr/``, ``labelsTr/``, ``imagesTs/``;
  ``labels`` id -> name, ``modality`` channel -> name, ``training`` image/label pairs (read with
  MONAI's ``load_decathlon_datalist``), ``test`` image paths (unlabelled).
- nnU-Net v2 raw: ``imagesTr/CASE_0000.nii.gz``, ``labelsTr/CASE.nii.gz``, ``dataset.json`` with
  ``channel_names`` and ``labels`` name -> id (region-based labels, lists of ids, are refused).

The labelled cases are split into training, validation (``val_cases``) and test (``test_fraction``)
with ``seed``; the unlabelled test images are not listed (predict them with ``medsam-ft predict``).
Every pair is checked (NIfTI, 3D, same shape); the datalist records the class names and the intensity
handling: CT a HU window, any other single channel (MR...) each volume's percentile range.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import load_decathlon_datalist

from medsam_ft.io import InputError
from medsam_ft.transforms import HU_WINDOW, PERCENTILES, intensity_spec

from .synapse import check_pair


def _read_dataset_json(root: Path) -> dict[str, Any]:
    path = root / "dataset.json"
    if not path.is_file():
        raise InputError(root, "has no dataset.json (the Decathlon / nnU-Net description of the data set)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(path, f"is not readable JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), dict):
        raise InputError(path, "has no 'labels' mapping")
    return meta


def channel_intensity(channels: Mapping[str, Any], path: Path, hu_window: Sequence[float],
                      percentiles: Sequence[float]) -> dict[str, Any]:
    """The intensity handling of a single-channel data set, from its channel's name.

    Args:
        channels: ``modality`` (v1) / ``channel_names`` (v2): channel -> name.
        path: the ``dataset.json``, for errors.
        hu_window: CT's window.
        percentiles: any other scanner's per-volume percentile range (MR has no fixed scale).

    Returns:
        A window for CT, percentiles otherwise (see :func:`~medsam_ft.transforms.intensity_spec`).

    Raises:
        InputError: no channel named, or several (medsam_ft trains on one grey channel).
    """
    names = [str(v) for v in channels.values()]
    if not names:
        raise InputError(path, "names no image channel ('modality' / 'channel_names'): the kind of scan (CT, MR) "
                               "decides the intensity handling")
    if len(names) != 1:
        raise InputError(path, f"describes {len(names)} image channels {names}: medsam_ft trains on single-channel "
                               "volumes; convert one channel per case first")
    if names[0].upper() == "CT":
        return intensity_spec({"kind": "window", "window": list(hu_window)})
    return intensity_spec({"kind": "percentiles", "percentiles": list(percentiles)})


def split_labelled_cases(names: Sequence[str], val_cases: int, test_fraction: float, seed: int,
                         source: str | os.PathLike) -> dict[str, list[str]]:
    """Training, validation and test case names from the labelled cases.

    Args:
        names: the case names.
        val_cases: cases for validation.
        test_fraction: share of the cases held out for testing (rounded, at least 1 when > 0).
        seed: draws both.
        source: the data set, for errors.

    Returns:
        ``{"training", "validation", "test"}`` -> sorted case names.

    Raises:
        InputError: too few cases to leave any for training.
    """
    order = list(np.random.default_rng(seed).permutation(sorted(names)))
    tests = max(1, round(test_fraction * len(order))) if test_fraction > 0 else 0
    if val_cases < 0 or tests + val_cases >= len(order):
        raise InputError(source, f"holds {len(order)} labelled cases: {tests} test and {val_cases} validation cases "
                                 "leave none to train on (lower --test_fraction / --val_cases)")
    return {"test": sorted(order[:tests]), "validation": sorted(order[tests:tests + val_cases]),
            "training": sorted(order[tests + val_cases:])}


def _datalist(name: str, classes: Mapping[int, str], pairs: Mapping[str, tuple[Path, Path]], root: Path,
              val_cases: int, test_fraction: float, seed: int, intensity: dict[str, Any]) -> dict[str, Any]:
    ids = sorted(classes)
    if not ids or ids[0] != 0:
        raise InputError(root / "dataset.json", f"label ids {ids} do not start with 0 (background)")
    for image, label in pairs.values():
        check_pair(image, label)
    split = split_labelled_cases(list(pairs), val_cases, test_fraction, seed, root)
    return {
        "name": name,
        "format": "nifti",
        "labels": {str(i): classes[c] for i, c in enumerate(ids)},
        "label_map": {str(c): i for i, c in enumerate(ids)},
        "allowed_label_ids": ids,
        "intensity": intensity,
        **{s: [{"image": os.path.relpath(pairs[c][0], root), "label": os.path.relpath(pairs[c][1], root), "case": c}
               for c in cases] for s, cases in split.items()},
    }


def _case_name(path: Path) -> str:
    return path.name.removesuffix(".gz").removesuffix(".nii")


def decathlon_datalist(root: str | os.PathLike, val_cases: int = 2, test_fraction: float = 0.2, seed: int = 0,
                       hu_window: Sequence[float] = HU_WINDOW,
                       percentiles: Sequence[float] = PERCENTILES) -> dict[str, Any]:
    """The datalist of a Medical Segmentation Decathlon / nnU-Net v1 data set.

    Args:
        root: the folder holding ``dataset.json``, ``imagesTr/``, ``labelsTr/``.
        val_cases: labelled cases held out for validation.
        test_fraction: share of the labelled cases held out for testing.
        seed: draws both.
        hu_window: the CT window of the data set (CT).
        percentiles: each volume's percentile range scaled to [0, 1] (MR and other scanners).

    Returns:
        The datalist (paths relative to ``root``), as :func:`~medsam_ft.data.write_datalist` writes it.

    Raises:
        InputError: no or invalid ``dataset.json``, not single-channel, a listed file missing or a bad pair.
    """
    root = Path(root)
    meta = _read_dataset_json(root)
    intensity = channel_intensity(meta.get("modality", {}), root / "dataset.json", hu_window, percentiles)
    try:
        classes = {int(k): str(v) for k, v in meta["labels"].items()}
    except ValueError:
        raise InputError(root / "dataset.json", "has 'labels' whose keys are not ids (nnU-Net v2? use "
                                                "python -m data_prep.nnunet)") from None
    try:
        items = load_decathlon_datalist(root / "dataset.json", data_list_key="training", base_dir=root)
    except (KeyError, ValueError) as err:
        raise InputError(root / "dataset.json", f"has no usable 'training' list ({err})") from None
    pairs = {_case_name(Path(item["image"])): (Path(item["image"]), Path(item["label"])) for item in items}
    return _datalist(str(meta.get("name", root.name)), classes, pairs, root, val_cases, test_fraction, seed, intensity)


def nnunet_v2_datalist(root: str | os.PathLike, val_cases: int = 2, test_fraction: float = 0.2, seed: int = 0,
                       hu_window: Sequence[float] = HU_WINDOW,
                       percentiles: Sequence[float] = PERCENTILES) -> dict[str, Any]:
    """The datalist of an nnU-Net v2 raw data set (``DatasetXXX_Name``).

    Args:
        root, val_cases, test_fraction, seed, hu_window, percentiles: as :func:`decathlon_datalist`.

    Returns:
        The datalist (paths relative to ``root``).

    Raises:
        InputError: no or invalid ``dataset.json``, region-based labels, not single-channel, a label
            without its image, or a bad pair.
    """
    root = Path(root)
    meta = _read_dataset_json(root)
    path = root / "dataset.json"
    intensity = channel_intensity(meta.get("channel_names", {}), path, hu_window, percentiles)
    regions = [name for name, value in meta["labels"].items() if not isinstance(value, int)]
    if regions:
        raise InputError(path, f"has region-based labels {regions} (lists of ids): give each class one id")
    classes = {int(v): str(k) for k, v in meta["labels"].items()}
    ending = str(meta.get("file_ending", ".nii.gz"))
    labels = sorted((root / "labelsTr").glob(f"*{ending}"))
    if not labels:
        raise InputError(root / "labelsTr", f"holds no {ending} labels")
    pairs = {}
    for label in labels:
        case = label.name[: -len(ending)]
        image = root / "imagesTr" / f"{case}_0000{ending}"
        if not image.is_file():
            raise InputError(label, f"has no image {image.name} in imagesTr")
        pairs[case] = (image, label)
    return _datalist(str(meta.get("name", root.name)), classes, pairs, root, val_cases, test_fraction, seed, intensity)


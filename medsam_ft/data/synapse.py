"""The Synapse (BTCV) multi-organ CT data set: label map, TransUNet split, datalists."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medsam_ft.io import InputError
from medsam_ft.transforms import HU_WINDOW, intensity_spec

# Raw Synapse ids of the 8 organs that TransUNet / SAMed evaluate, in their class order 1-8.
SYNAPSE_ORGANS: dict[int, str] = {
    1: "spleen",
    2: "right_kidney",
    3: "left_kidney",
    4: "gallbladder",
    6: "liver",
    7: "stomach",
    8: "aorta",
    11: "pancreas",
}
SYNAPSE_RAW_IDS: tuple[int, ...] = tuple(range(14))  # 0 background, 1-13 organs; 5, 9, 10, 12, 13 -> background
SYNAPSE_LABEL_MAP: dict[int, int] = {raw: new for new, raw in enumerate(SYNAPSE_ORGANS, start=1)}
SYNAPSE_CLASS_NAMES: tuple[str, ...] = ("background",) + tuple(SYNAPSE_ORGANS.values())
TRANSUNET_TEST_CASES: tuple[int, ...] = (1, 2, 3, 4, 8, 22, 25, 29, 32, 35, 36, 38)

_CASE_ID = re.compile(r"img(\d+)\.nii(\.gz)?$")


def find_raw_cases(raw_dir: str | os.PathLike) -> dict[int, tuple[Path, Path]]:
    """The cases of a raw Synapse folder.

    Args:
        raw_dir: holding ``img/imgNNNN.nii.gz`` and ``label/labelNNNN.nii.gz``.

    Returns:
        ``{case id: (image, label)}``.

    Raises:
        InputError: a missing folder, an image without its label, or no cases.
    """
    raw_dir = Path(raw_dir)
    img_dir, label_dir = raw_dir / "img", raw_dir / "label"
    if not img_dir.is_dir():
        raise InputError(img_dir, "folder not found (expected the raw Synapse layout img/imgNNNN.nii.gz)")
    cases: dict[int, tuple[Path, Path]] = {}
    for image in sorted(img_dir.iterdir()):
        match = _CASE_ID.match(image.name)
        if not match:
            continue
        label = label_dir / image.name.replace("img", "label", 1)
        if not label.is_file():
            raise InputError(image, f"has no label file (expected {label})")
        cases[int(match.group(1))] = (image, label)
    if not cases:
        raise InputError(img_dir, "holds no imgNNNN.nii.gz files")
    return cases


def check_pair(image: Path, label: Path) -> None:
    """Header-level checks of an image/label pair: both NIfTI, 3D, same shape.

    Args:
        image: the image file.
        label: its label file.

    Raises:
        InputError: a failed check, naming the file.
    """
    shapes = []
    for path in (image, label):
        try:
            shapes.append(tuple(nib.load(path).shape))
        except Exception as err:  # nibabel raises many types for non-NIfTI input
            raise InputError(path, f"not a readable NIfTI image ({type(err).__name__}: {err})") from None
        if len(shapes[-1]) != 3:
            raise InputError(path, f"expected a 3D volume, got shape {shapes[-1]}")
    if shapes[0] != shapes[1]:
        raise InputError(label, f"label shape {shapes[1]} differs from image shape {shapes[0]} ({image})")


def make_datalist(
    raw_dir: str | os.PathLike,
    val_cases: int = 2,
    seed: int = 0,
    test_cases: Sequence[int] = TRANSUNET_TEST_CASES,
) -> dict[str, Any]:
    """A MONAI datalist (paths relative to ``raw_dir``) with the TransUNet split.

    Test: the TransUNet test cases present; validation: ``val_cases`` of the other cases, drawn with
    ``seed`` and removed from training (0: none, SAMed's protocol); training: the rest. A folder of
    test cases only gives a datalist of its test split alone.

    Args:
        raw_dir: the raw Synapse folder.
        val_cases: training cases held out for validation.
        seed: draws them.
        test_cases: the test split's case ids.

    Returns:
        The datalist (``training``, ``validation``, ``test``, class names, label map, HU window).

    Raises:
        InputError: a bad image/label pair, or more validation cases asked for than training cases allow.
    """
    raw_dir = Path(raw_dir)
    cases = find_raw_cases(raw_dir)
    for image, label in cases.values():
        check_pair(image, label)
    test_ids = [c for c in sorted(cases) if c in set(test_cases)]
    train_ids = [c for c in sorted(cases) if c not in set(test_cases)]
    if val_cases < 0 or (train_ids and val_cases >= len(train_ids)):
        raise InputError(raw_dir, f"holds {len(train_ids)} training cases: they cannot give {val_cases} validation "
                                  f"cases and leave some to train on (--val_cases 0 to {max(len(train_ids) - 1, 0)})")
    val_ids = sorted(np.random.default_rng(seed).choice(train_ids, size=val_cases, replace=False).tolist()) \
        if train_ids else []
    train_ids = [c for c in train_ids if c not in val_ids]

    def entries(ids: list[int]) -> list[dict[str, Any]]:
        return [
            {"image": str(cases[c][0].relative_to(raw_dir)), "label": str(cases[c][1].relative_to(raw_dir)), "case": c}
            for c in ids
        ]

    return {
        "name": "Synapse multi-organ CT",
        "format": "nifti",
        "labels": {str(i): name for i, name in enumerate(SYNAPSE_CLASS_NAMES)},
        "label_map": {str(raw): new for raw, new in SYNAPSE_LABEL_MAP.items()},
        "allowed_label_ids": list(SYNAPSE_RAW_IDS),
        "intensity": intensity_spec(HU_WINDOW),
        "training": entries(train_ids),
        "validation": entries(val_ids),
        "test": entries(test_ids),
    }

"""TotalSegmentator's layout -> a medsam_ft datalist with the structures a user picks.

``ROOT/<subject>/ct.nii.gz`` and ``ROOT/<subject>/segmentations/<structure>.nii.gz`` (one binary mask per
structure), ``ROOT/meta.csv`` (``;``-separated, ``image_id`` and ``split``: train / val / test). The
chosen structures' masks are merged into one label volume per subject (class k = the k-th structure;
overlapping masks are refused), written under the datalist's folder; the datalist records the classes
and the CT window.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medsam_ft.io import InputError, write_nifti
from medsam_ft.transforms import HU_WINDOW, intensity_spec

from .nnunet import split_labelled_cases

# The 8 Synapse organs under TotalSegmentator's names, in Synapse's class order
SYNAPSE_PRESET: tuple[str, ...] = ("spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "aorta",
                                   "pancreas")
PRESETS: dict[str, tuple[str, ...]] = {"synapse": SYNAPSE_PRESET}
_SPLITS = {"train": "training", "val": "validation", "test": "test"}


def _subjects(root: Path) -> list[Path]:
    subjects = sorted(p for p in root.iterdir() if (p / "ct.nii.gz").is_file())
    if not subjects:
        raise InputError(root, "holds no subject folders with ct.nii.gz (TotalSegmentator's layout)")
    return subjects


def _read_splits(root: Path) -> dict[str, str] | None:
    """``{subject: split}`` from ``meta.csv``, or None without one."""
    path = root / "meta.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    if not rows or "image_id" not in rows[0] or "split" not in rows[0]:
        raise InputError(path, "has no image_id and split columns (';'-separated)")
    unknown = sorted({r["split"] for r in rows} - set(_SPLITS))
    if unknown:
        raise InputError(path, f"has splits {unknown}; expected train, val, test")
    return {r["image_id"]: _SPLITS[r["split"]] for r in rows}


def merged_label(subject: Path, structures: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """One subject's chosen masks as one label volume.

    Args:
        subject: the subject folder.
        structures: the structures, class k + 1 = ``structures[k]``.

    Returns:
        ``(uint8[X, Y, Z] class ids, affine)`` on the CT's grid.

    Raises:
        InputError: a missing mask, one of another shape than the CT, or two masks sharing voxels.
    """
    ct = nib.load(subject / "ct.nii.gz")
    label = np.zeros(ct.shape, np.uint8)
    for value, structure in enumerate(structures, start=1):
        path = subject / "segmentations" / f"{structure}.nii.gz"
        if not path.is_file():
            raise InputError(path, f"missing: {subject.name} has no mask of {structure!r}")
        mask = np.asarray(nib.load(path).dataobj) > 0
        if mask.shape != ct.shape:
            raise InputError(path, f"has shape {mask.shape}, the CT {ct.shape}")
        overlap = mask & (label > 0)
        if overlap.any():
            other = structures[int(label[overlap][0]) - 1]
            raise InputError(path, f"overlaps {other!r} in {int(overlap.sum())} voxels: choose structures that do not")
        label[mask] = value
    return label, ct.affine


def totalsegmentator_datalist(root: str | os.PathLike, out_dir: str | os.PathLike, structures: Sequence[str],
                              val_cases: int = 2, test_fraction: float = 0.2, seed: int = 0,
                              hu_window: Sequence[float] = HU_WINDOW) -> dict[str, Any]:
    """Merge the chosen structures per subject and list the subjects.

    Args:
        root: the TotalSegmentator folder.
        out_dir: where ``labels/<subject>.nii.gz`` are written (the datalist's folder).
        structures: the structures, in class order (e.g. :data:`SYNAPSE_PRESET`).
        val_cases: without ``meta.csv``: subjects held out for validation.
        test_fraction: without ``meta.csv``: share of the subjects held out for testing.
        seed: draws both.
        hu_window: the CT window.

    Returns:
        The datalist, paths relative to ``out_dir``.

    Raises:
        InputError: no subjects, an invalid ``meta.csv``, or a mask that is missing, misfit or overlapping.
    """
    root, out_dir = Path(root), Path(out_dir)
    if not structures or len(set(structures)) != len(structures):
        raise InputError(root, f"needs distinct structures to merge, got {list(structures)}")
    subjects = _subjects(root)
    splits = _read_splits(root)
    if splits is None:
        drawn = split_labelled_cases([s.name for s in subjects], val_cases, test_fraction, seed, root)
        splits = {name: split for split, names in drawn.items() for name in names}
    datalist: dict[str, Any] = {
        "name": f"TotalSegmentator ({len(structures)} structures)",
        "format": "nifti",
        "labels": {str(i): name for i, name in enumerate(["background", *structures])},
        "intensity": intensity_spec(hu_window),
        "training": [], "validation": [], "test": [],
    }
    for subject in subjects:
        if subject.name not in splits:
            continue  # not in meta.csv: not part of the data set's split
        label, affine = merged_label(subject, structures)
        label_path = out_dir / "labels" / f"{subject.name}.nii.gz"
        write_nifti(label_path, label, affine)
        datalist[splits[subject.name]].append({"image": os.path.relpath(subject / "ct.nii.gz", out_dir),
                                               "label": os.path.relpath(label_path, out_dir), "case": subject.name})
    return datalist

"""Segmentation metrics: 3D volumes (Dice/HD95 per case and organ) and 2D images (IoU, F1, Dice).

Volumes, two protocols:

- ``clinical``: Dice, and HD95 in millimetres from the voxel spacing, HD95 being the larger of the two
  directed 95th-percentile surface distances (MONAI's definition). Empty cases: organ absent from
  both ground truth and prediction -> Dice and HD95 not defined (NaN, left out of the means, count
  shown); present in exactly one -> Dice 0 and HD95 = the volume's diagonal in mm (the worst case).
- ``transunet``: the TransUNet / SAMed test code: medpy's ``dc`` and ``hd95`` in voxels (no spacing;
  HD95 = 95th percentile of both directed surface distances pooled); prediction present and ground
  truth empty -> (1, 0); prediction empty -> (0, 0); mean over cases per organ, then over organs.

2D images (pixels labelled :data:`~medsam_ft.transforms.IGNORE_INDEX` are skipped everywhere):
- mIoU as GSAM reports it: one confusion matrix over every pixel of the data set, IoU per class,
  mean over all classes, background included (``miou``; ``miou_foreground`` without it);
- F1 as SAM-PARSER reports it: per class from the same data-set confusion matrix, mean over all
  classes (``mean_f1``); for a binary task the foreground row is the usual building/road F1;
- Dice and IoU per image as CAD reports them: per image and foreground class, then the mean over
  classes present in the image's ground truth or prediction, then over images (``mean_image_dice``,
  ``mean_image_iou``); an image with no foreground in either is left out (counted in the log).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from medsam_ft.transforms import IGNORE_INDEX

PROTOCOLS = ("clinical", "transunet")


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Distances from every surface voxel of mask ``a`` to the surface of mask ``b``.

    A surface voxel is a foreground voxel with a background face neighbour (erosion with the
    face-connected structure), as in medpy; distances are Euclidean, scaled by ``spacing``.

    Args:
        a: bool[*spatial], non-empty.
        b: bool[*spatial], non-empty, the same shape.
        spacing: voxel size per axis (None: 1).

    Returns:
        float[N], one distance per surface voxel of ``a``.
    """
    # Work inside the masks' joint bounding box plus one voxel: every surface voxel and nearest
    # surface point lies there, and erosion at the volume's own border behaves as before.
    corners = np.argwhere(a | b)
    box = tuple(slice(max(lo - 1, 0), hi + 2) for lo, hi in zip(corners.min(axis=0), corners.max(axis=0)))
    a, b = a[box], b[box]
    footprint = ndimage.generate_binary_structure(a.ndim, 1)
    a_surface = a ^ ndimage.binary_erosion(a, structure=footprint, iterations=1)
    b_surface = b ^ ndimage.binary_erosion(b, structure=footprint, iterations=1)
    distance_to_b = ndimage.distance_transform_edt(~b_surface, sampling=spacing)
    return distance_to_b[a_surface]


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2 |P and G| / (|P| + |G|).

    Args:
        prediction: bool[*spatial].
        truth: bool[*spatial].

    Returns:
        The Dice coefficient; NaN when both masks are empty.
    """
    total = prediction.sum() + truth.sum()
    return float(2.0 * np.logical_and(prediction, truth).sum() / total) if total else math.nan


def organ_metrics(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float], protocol: str) -> tuple[float, float]:
    """Dice and HD95 of one organ under ``protocol`` (see the module docstring for empty masks).

    Args:
        prediction: bool[X, Y, Z], the organ predicted.
        truth: bool[X, Y, Z], the organ in the ground truth.
        spacing: voxel size in mm per axis (``clinical``; ``transunet`` measures in voxels).
        protocol: ``clinical`` or ``transunet``.

    Returns:
        ``(dice, hd95)``.

    Raises:
        ValueError: unknown protocol.
    """
    has_p, has_t = bool(prediction.any()), bool(truth.any())
    if protocol == "transunet":
        if has_p and has_t:
            pooled = np.hstack([surface_distances(prediction, truth), surface_distances(truth, prediction)])
            return dice(prediction, truth), float(np.percentile(pooled, 95))
        return (1.0, 0.0) if has_p else (0.0, 0.0)
    if protocol != "clinical":
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    if not has_p and not has_t:
        return math.nan, math.nan
    if has_p != has_t:
        return 0.0, float(np.linalg.norm(np.asarray(prediction.shape) * np.asarray(spacing)))
    hd95 = max(np.percentile(surface_distances(prediction, truth, spacing), 95),
               np.percentile(surface_distances(truth, prediction, spacing), 95))
    return dice(prediction, truth), float(hd95)


def case_metrics(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float], num_classes: int,
                 protocol: str) -> list[tuple[float, float]]:
    """Dice and HD95 of every organ of one case.

    Args:
        prediction: int[X, Y, Z] class ids.
        truth: int[X, Y, Z] class ids.
        spacing: voxel size in mm per axis.
        num_classes: C, background included.
        protocol: ``clinical`` or ``transunet``.

    Returns:
        ``[(dice, hd95)]`` for classes 1..C-1.

    Raises:
        ValueError: the two volumes differ in shape, or an unknown protocol.
    """
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from ground truth {truth.shape}")
    return [organ_metrics(prediction == c, truth == c, spacing, protocol) for c in range(1, num_classes)]


def class_ids(labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Class ids of a prediction or label, whichever form it has.

    Args:
        labels: ``[1, *spatial]`` ids or ``[C, *spatial]`` scores / one-hot (argmax over C).

    Returns:
        int64[*spatial] class ids.
    """
    labels = torch.as_tensor(labels)
    if labels.shape[0] > 1:
        labels = labels.argmax(0, keepdim=True)
    return labels[0].cpu().numpy().astype(np.int64)


# --- 2D images -------------------------------------------------------------------------------------
def confusion_matrix(prediction: np.ndarray, truth: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Pixel counts of (ground-truth class, predicted class) pairs.

    Args:
        prediction: integer class ids, any shape.
        truth: integer class ids, the same shape; pixels equal to ``ignore_index`` are not counted.
        num_classes: C.
        ignore_index: the truth value of unlabelled pixels.

    Returns:
        int64[C, C], rows = ground-truth class, columns = predicted class.

    Raises:
        ValueError: different sizes, or ids outside 0..C-1.
    """
    prediction, truth = np.asarray(prediction).ravel(), np.asarray(truth).ravel()
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction has {prediction.size} pixels, ground truth {truth.size}")
    keep = truth != ignore_index
    prediction, truth = prediction[keep].astype(np.int64), truth[keep].astype(np.int64)
    for name, ids in (("prediction", prediction), ("ground truth", truth)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(f"{name} holds class ids outside 0..{num_classes - 1}: {np.unique(ids)[:10].tolist()}")
    return np.bincount(truth * num_classes + prediction, minlength=num_classes**2).reshape(num_classes, num_classes)


def class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class scores from a confusion matrix.

    Args:
        matrix: int[C, C] from :func:`confusion_matrix`.

    Returns:
        ``{"iou", "f1" (= Dice), "precision", "recall"}``, each float[C]; NaN where a class is absent
        from both ground truth and prediction.
    """
    tp = np.diag(matrix).astype(np.float64)
    fp, fn = matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "iou": np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan),
            "f1": np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan),
            "precision": np.where(tp + fp > 0, tp / (tp + fp), np.nan),
            "recall": np.where(tp + fn > 0, tp / (tp + fn), np.nan),
        }



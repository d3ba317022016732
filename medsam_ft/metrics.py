"""Volume metrics in two protocols, and the Ignite handler that tabulates them per case and organ.

- ``clinical``: Dice, and HD95 in millimetres from the voxel spacing, HD95 being the larger of the two
  directed 95th-percentile surface distances (MONAI's definition). Empty cases: organ absent from
  both ground truth and prediction -> Dice and HD95 not defined (NaN, left out of the means, count
  shown); present in exactly one -> Dice 0 and HD95 = the volume's diagonal in mm (the worst case).
- ``transunet``: the TransUNet / SAMed test code: medpy's ``dc`` and ``hd95`` in voxels (no spacing;
  HD95 = 95th percentile of both directed surface distances pooled); prediction present and ground
  truth empty -> (1, 0); prediction empty -> (0, 0); mean over cases per organ, then over organs.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data.utils import affine_to_spacing
from scipy import ndimage

from medsam_ft.io import atomic_path, volume_stem

logger = logging.getLogger(__name__)

PROTOCOLS = ("clinical", "transunet")


def surface_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Distances from every surface voxel of mask ``a`` to the surface of mask ``b`` (both non-empty).

    A surface voxel is a foreground voxel with a background face neighbour (erosion with the
    face-connected structure), as in medpy; distances are Euclidean, scaled by ``spacing``.
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
    """2 |P and G| / (|P| + |G|) of two boolean masks (NaN when both are empty)."""
    total = prediction.sum() + truth.sum()
    return float(2.0 * np.logical_and(prediction, truth).sum() / total) if total else math.nan


def organ_metrics(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float], protocol: str) -> tuple[float, float]:
    """``(dice, hd95)`` of one organ's boolean masks under ``protocol`` (see the module docstring)."""
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
    """``[(dice, hd95)]`` for classes 1..C-1 of integer label volumes ``prediction`` and ``truth`` [X, Y, Z]."""
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from ground truth {truth.shape}")
    return [organ_metrics(prediction == c, truth == c, spacing, protocol) for c in range(1, num_classes)]


def format_table(rows: dict[str, list[float]], columns: Sequence[str], title: str) -> str:
    """A fixed-width text table: one row per case, one column per organ, then the mean row and column."""
    width = max(9, max(len(c) for c in columns) + 1)
    lines = [title, "case".ljust(10) + "".join(c.rjust(width) for c in columns) + "mean".rjust(width)]
    for name, values in rows.items():
        lines.append(name.ljust(10) + "".join(f"{v:{width}.4f}" for v in values) + f"{np.nanmean(values):{width}.4f}")
    return "\n".join(lines)


class VolumeMetrics:
    """Ignite handler: per-case, per-organ Dice/HD95 of a volume evaluator in both protocols.

    Reads ``engine.state.output`` items with ``pred`` [1, X, Y, Z] (class ids or C-channel
    probabilities), ``label`` [1, X, Y, Z] and the voxel spacing from the label's affine (1 without one).
    At the end it writes ``{output_dir}/metrics_{protocol}.csv`` (rows: cases, then the mean; columns:
    ``{organ}_dice``, ``{organ}_hd95``), logs the tables, and sets
    ``engine.state.metrics["mean_dice_{protocol}"]`` and ``["mean_hd95_{protocol}"]``.
    """

    def __init__(self, class_names: Sequence[str], output_dir: str | os.PathLike | None = None,
                 protocols: Sequence[str] = PROTOCOLS):
        self.organs = list(class_names)[1:]
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.protocols = list(protocols)
        self.results: dict[str, dict[str, list[tuple[float, float]]]] = {p: {} for p in self.protocols}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.complete)

    def reset(self, engine: Engine | None = None) -> None:
        self.results = {p: {} for p in self.protocols}

    def update(self, engine: Engine) -> None:
        for item in engine.state.output:
            pred, label = item["pred"], item["label"]
            if pred.shape[0] > 1:
                pred = pred.argmax(0, keepdim=True)
            meta = getattr(label, "meta", {})
            # Spacing of the array as it is now (after reorientation): from its affine, not the header's pixdim.
            affine = getattr(label, "affine", None)
            spacing = affine_to_spacing(affine, r=3).tolist() if affine is not None else [1.0, 1.0, 1.0]
            name = volume_stem(meta.get("filename_or_obj", f"case{len(self.results[self.protocols[0]])}"))
            p = torch.as_tensor(pred)[0].cpu().numpy().astype(np.int64)
            t = torch.as_tensor(label)[0].cpu().numpy().astype(np.int64)
            for protocol in self.protocols:
                self.results[protocol][name] = case_metrics(p, t, spacing, len(self.organs) + 1, protocol)

    def summary(self, protocol: str) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
        """Per-case Dice and HD95 rows (organ order), each plus a ``mean`` row over cases (NaN skipped)."""
        cases = self.results[protocol]
        dice_rows = {n: [m[0] for m in v] for n, v in cases.items()}
        hd_rows = {n: [m[1] for m in v] for n, v in cases.items()}
        for rows in (dice_rows, hd_rows):
            if rows:
                rows["mean"] = np.nanmean(np.asarray(list(rows.values()), dtype=float), axis=0).tolist()
        return dice_rows, hd_rows

    def complete(self, engine: Engine) -> None:
        for protocol in self.protocols:
            dice_rows, hd_rows = self.summary(protocol)
            if not dice_rows:
                continue
            mean_dice, mean_hd = float(np.nanmean(dice_rows["mean"])), float(np.nanmean(hd_rows["mean"]))
            engine.state.metrics[f"mean_dice_{protocol}"] = mean_dice
            engine.state.metrics[f"mean_hd95_{protocol}"] = mean_hd
            unit = "mm" if protocol == "clinical" else "voxels"
            logger.info("\n%s", format_table(dice_rows, self.organs, f"Dice ({protocol}) - mean {mean_dice:.4f}"))
            logger.info("\n%s", format_table(hd_rows, self.organs, f"HD95 in {unit} ({protocol}) - mean {mean_hd:.2f}"))
            if self.output_dir is not None:
                self.write_csv(self.output_dir / f"metrics_{protocol}.csv", dice_rows, hd_rows)

    def write_csv(self, path: Path, dice_rows: dict[str, list[float]], hd_rows: dict[str, list[float]]) -> None:
        header = ["case"] + [f"{o}_dice" for o in self.organs] + [f"{o}_hd95" for o in self.organs] + ["mean_dice", "mean_hd95"]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for name in dice_rows:
                d, h = dice_rows[name], hd_rows[name]
                writer.writerow([name] + [f"{v:.6f}" for v in d + h] + [f"{np.nanmean(d):.6f}", f"{np.nanmean(h):.6f}"])
        logger.info("wrote %s", path)

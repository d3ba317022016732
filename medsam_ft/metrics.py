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

import csv
import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.data.utils import affine_to_spacing
from scipy import ndimage

from medsam_ft.io import atomic_path, volume_stem
from medsam_ft.transforms import IGNORE_INDEX

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


def class_ids(labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """int64[*spatial] class ids from ``[1, *spatial]`` ids or ``[C, *spatial]`` scores (argmax)."""
    labels = torch.as_tensor(labels)
    if labels.shape[0] > 1:
        labels = labels.argmax(0, keepdim=True)
    return labels[0].cpu().numpy().astype(np.int64)


def case_name(item: Mapping[str, Any], meta: Mapping[str, Any], index: int) -> str:
    """A case's name in metric tables: its file's stem (NIfTI metadata, or a TransUNet h5 volume's
    ``image_path``), else ``caseNNNN`` from its ``case`` id (TransUNet npz slices stacked into a
    volume), else its position."""
    source = meta.get("filename_or_obj") or item.get("image_path")
    if source:
        return volume_stem(source)
    return f"case{int(item['case']):04d}" if item.get("case") is not None else f"case{index}"


def _write_rows(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A CSV file written atomically; floats with 6 decimals."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([f"{v:.6f}" if isinstance(v, float) else v for v in row] for row in rows)
    logger.info("wrote %s", path)


def format_table(rows: dict[str, list[float]], columns: Sequence[str], title: str, first: str = "case",
                 row_means: bool = True) -> str:
    """A fixed-width text table: one row per item (cases, classes), one column per value, and with
    ``row_means`` a last column with each row's mean."""
    width = max(9, max(len(c) for c in columns) + 1)
    label_width = max([10, len(first) + 1] + [len(name) + 1 for name in rows])
    tail = "mean".rjust(width) if row_means else ""
    lines = [title, first.ljust(label_width) + "".join(c.rjust(width) for c in columns) + tail]
    for name, values in rows.items():
        tail = f"{np.nanmean(values):{width}.4f}" if row_means else ""
        lines.append(name.ljust(label_width) + "".join(f"{v:{width}.4f}" for v in values) + tail)
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
            meta = getattr(label, "meta", {})
            # Spacing of the array as it is now (after reorientation): from its affine, not the header's pixdim.
            affine = getattr(label, "affine", None)
            spacing = affine_to_spacing(affine, r=3).tolist() if affine is not None else [1.0, 1.0, 1.0]
            name = case_name(item, meta, len(self.results[self.protocols[0]]))
            p, t = class_ids(pred), class_ids(label)
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
        rows = [[name] + dice_rows[name] + hd_rows[name] + [float(np.nanmean(dice_rows[name])), float(np.nanmean(hd_rows[name]))]
                for name in dice_rows]
        _write_rows(path, header, rows)


# --- 2D images -------------------------------------------------------------------------------------
def confusion_matrix(prediction: np.ndarray, truth: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """int64[C, C] pixel counts, rows = ground-truth class, columns = predicted class.

    ``prediction`` and ``truth`` are integer class-id arrays of one shape; pixels whose truth is
    ``ignore_index`` are not counted. Ids outside 0..C-1 are an error.
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
    """Per-class ``iou``, ``f1`` (= Dice), ``precision``, ``recall`` float[C] from a confusion matrix
    (NaN where a class is absent from both ground truth and prediction)."""
    tp = np.diag(matrix).astype(np.float64)
    fp, fn = matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "iou": np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan),
            "f1": np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan),
            "precision": np.where(tp + fp > 0, tp / (tp + fp), np.nan),
            "recall": np.where(tp + fn > 0, tp / (tp + fn), np.nan),
        }


class MeanIoU(Metric):
    """Ignite metric: data-set-level mIoU (GSAM), background included, over (pred, label) batches.

    ``pred``: [C, H, W] scores or [1, H, W] ids per image, ``label``: [1, H, W] ids (lists, as
    ``monai.handlers.from_engine(["pred", "label"])`` gives them). Summed over DDP ranks.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 output_transform: Callable[[Any], Any] = lambda x: x):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, output: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]) -> None:
        for pred, label in zip(*output):
            self.matrix += confusion_matrix(class_ids(pred), class_ids(label), self.num_classes, self.ignore_index)

    def compute(self) -> float:
        matrix = idist.all_reduce(torch.as_tensor(self.matrix)).numpy()
        return float(np.nanmean(class_scores(matrix)["iou"]))


class ImageMetrics:
    """Ignite handler: the 2D metrics of the module docstring over an evaluator's images.

    Reads ``engine.state.output`` items with ``pred`` ([C, H, W] scores or [1, H, W] ids) and
    ``label`` [1, H, W]. At the end it logs a per-class table and writes
    ``{output_dir}/metrics_classes.csv`` (per class: data-set IoU, F1, precision, recall, mean
    image Dice and IoU; then the mean row) and ``metrics_images.csv`` (per image and foreground
    class: Dice and IoU), and sets ``engine.state.metrics`` ``miou``, ``miou_foreground``,
    ``mean_f1``, ``mean_image_dice``, ``mean_image_iou``.
    """

    def __init__(self, class_names: Sequence[str], output_dir: str | os.PathLike | None = None,
                 ignore_index: int = IGNORE_INDEX):
        self.class_names = list(class_names)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.ignore_index = ignore_index
        self.reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.complete)

    def reset(self, engine: Engine | None = None) -> None:
        num_classes = len(self.class_names)
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.images: dict[str, dict[str, np.ndarray]] = {}

    def update(self, engine: Engine) -> None:
        for item in engine.state.output:
            label = item["label"]
            name = volume_stem(getattr(label, "meta", {}).get("filename_or_obj", f"image{len(self.images)}"))
            matrix = confusion_matrix(class_ids(item["pred"]), class_ids(label), len(self.class_names), self.ignore_index)
            self.matrix += matrix
            self.images[name] = class_scores(matrix)

    def summary(self) -> dict[str, float]:
        """The data-set numbers of the module docstring (NaN when there is nothing to average)."""
        scores = class_scores(self.matrix)
        image_dice = [np.nanmean(s["f1"][1:]) for s in self.images.values() if not np.isnan(s["f1"][1:]).all()]
        image_iou = [np.nanmean(s["iou"][1:]) for s in self.images.values() if not np.isnan(s["iou"][1:]).all()]
        return {
            "miou": float(np.nanmean(scores["iou"])),
            "miou_foreground": float(np.nanmean(scores["iou"][1:])),
            "mean_f1": float(np.nanmean(scores["f1"])),
            "mean_image_dice": float(np.mean(image_dice)) if image_dice else math.nan,
            "mean_image_iou": float(np.mean(image_iou)) if image_iou else math.nan,
        }

    def complete(self, engine: Engine) -> None:
        if not self.images:
            return
        summary = self.summary()
        engine.state.metrics.update(summary)
        scores = class_scores(self.matrix)
        per_image = {key: np.asarray([s[key] for s in self.images.values()]) for key in ("f1", "iou")}
        with warnings.catch_warnings():  # a class absent from every image: NaN, as documented
            warnings.simplefilter("ignore", RuntimeWarning)
            image_dice, image_iou = np.nanmean(per_image["f1"], axis=0), np.nanmean(per_image["iou"], axis=0)
        columns = ["iou", "f1", "precision", "recall", "image_dice", "image_iou"]
        rows = [[name, *(float(v) for v in (scores["iou"][c], scores["f1"][c], scores["precision"][c],
                                             scores["recall"][c], image_dice[c], image_iou[c]))]
                for c, name in enumerate(self.class_names)]
        skipped = sum(np.isnan(s["f1"][1:]).all() for s in self.images.values())
        table = format_table({r[0]: r[1:] for r in rows}, columns, f"{len(self.images)} images ({skipped} without "
                             "foreground in truth or prediction)", first="class", row_means=False)
        logger.info("\n%s\n%s", table, "  ".join(f"{k} {v:.4f}" for k, v in summary.items()))
        if self.output_dir is not None:
            _write_rows(self.output_dir / "metrics_classes.csv", ["class", *columns],
                        rows + [["mean", summary["miou"], summary["mean_f1"], float(np.nanmean(scores["precision"])),
                                 float(np.nanmean(scores["recall"])), summary["mean_image_dice"], summary["mean_image_iou"]]])
            foreground = self.class_names[1:]
            _write_rows(self.output_dir / "metrics_images.csv",
                        ["image", *(f"{c}_dice" for c in foreground), *(f"{c}_iou" for c in foreground)],
                        [[name, *(float(v) for v in s["f1"][1:]), *(float(v) for v in s["iou"][1:])]
                         for name, s in self.images.items()])


class BoxDice:
    """Ignite handler: Dice of each box-prompted prediction, averaged per object class (SAM-PARSER's DSC).

    Reads ``pred`` ([2, H, W] scores or [1, H, W] ids) and ``label`` [1, H, W] (1 inside) from
    ``engine.state.output`` and the class id from ``engine.state.batch`` ``organ``. Logs the table,
    writes ``{output_dir}/metrics_boxes.csv`` (class, boxes, mean Dice; then the mean over classes),
    sets ``engine.state.metrics["mean_box_dice"]``.
    """

    def __init__(self, class_names: Sequence[str], output_dir: str | os.PathLike | None = None,
                 ignore_index: int = IGNORE_INDEX):
        self.class_names = list(class_names)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.ignore_index = ignore_index
        self.scores: dict[int, list[float]] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.scores.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.complete)

    def update(self, engine: Engine) -> None:
        for item, sample in zip(engine.state.output, engine.state.batch):
            matrix = confusion_matrix(class_ids(item["pred"]), class_ids(item["label"]), 2, self.ignore_index)
            self.scores.setdefault(int(sample["organ"]), []).append(float(class_scores(matrix)["f1"][1]))

    def complete(self, engine: Engine) -> None:
        rows = [[self.class_names[c], len(v), float(np.nanmean(v))] for c, v in sorted(self.scores.items())]
        if not rows:
            return
        mean = float(np.mean([r[2] for r in rows]))
        engine.state.metrics["mean_box_dice"] = mean
        logger.info("\n%s", format_table({r[0]: [float(r[1]), r[2]] for r in rows}, ["boxes", "dice"],
                                          f"Dice per box, by class - mean {mean:.4f}", first="class", row_means=False))
        if self.output_dir is not None:
            _write_rows(self.output_dir / "metrics_boxes.csv", ["class", "boxes", "mean_dice"],
                        rows + [["mean", sum(r[1] for r in rows), mean]])

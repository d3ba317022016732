"""Ignite handlers of the trainers and evaluators: metric reports, resume state, epoch log lines."""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from ignite.metrics import Metric
from monai.data.utils import affine_to_spacing

from medsam_ft.distributed import is_distributed, is_main_process, world_size
from medsam_ft.io import InputError, atomic_path, volume_stem
from medsam_ft.metrics import PROTOCOLS, case_metrics, class_ids, class_scores, confusion_matrix
from medsam_ft.reports import case_name, format_table, write_csv
from medsam_ft.transforms import IGNORE_INDEX

logger = logging.getLogger(__name__)


class EpochMetricsHandler:
    """Base of the metric-report handlers: measure each item, report when the epoch completes.

    ``collected`` maps an item's name (case, image) to its measurements; subclasses implement
    ``measure(engine)`` (yield ``(name, measurements)`` for ``engine.state.output``) and
    ``report(engine, collected)`` (log, write CSVs under ``output_dir``, set ``engine.state.metrics``).
    Under DDP each rank measures its share; at the end the ranks' results are gathered (an item
    measured by two ranks, as uneven sharding repeats some, counts once), ordered by name, and rank 0
    reports.

    Args:
        class_names: C names, background first.
        output_dir: where the CSV files go (None: only logged).
        ignore_index: the label of pixels no metric counts.
    """

    def __init__(self, class_names: Sequence[str], output_dir: str | os.PathLike | None = None,
                 ignore_index: int = IGNORE_INDEX):
        self.class_names = list(class_names)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.ignore_index = ignore_index
        self.collected: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.complete)

    def reset(self) -> None:
        self.collected = {}

    def update(self, engine: Engine) -> None:
        self.collected.update(list(self.measure(engine)))  # names count what was collected before this batch

    def complete(self, engine: Engine) -> None:
        collected = self.collected
        if is_distributed():
            parts: list[dict[str, Any]] = [{} for _ in range(world_size())]
            torch.distributed.all_gather_object(parts, collected)
            # rows by name, however the items were sharded (one process: the data set's order)
            collected = dict(sorted(((name, value) for part in parts for name, value in part.items()),
                                    key=lambda item: item[0]))
        if collected and is_main_process():
            self.report(engine, collected)

    def measure(self, engine: Engine) -> Iterable[tuple[str, Any]]:
        raise NotImplementedError

    def report(self, engine: Engine, collected: Mapping[str, Any]) -> None:
        raise NotImplementedError


class VolumeMetricsHandler(EpochMetricsHandler):
    """Ignite handler: per-case, per-organ Dice/HD95 of a volume evaluator in both protocols.

    Reads ``engine.state.output`` items with ``pred`` [1, X, Y, Z] (class ids or C-channel
    probabilities), ``label`` [1, X, Y, Z] and the voxel spacing from the label's affine (1 without one).
    At the end it writes ``{output_dir}/metrics_{protocol}.csv`` (rows: cases, then the mean; columns:
    ``{organ}_dice``, ``{organ}_hd95``), logs the tables, and sets
    ``engine.state.metrics["mean_dice_{protocol}"]`` and ``["mean_hd95_{protocol}"]``.
    ``collected[case][protocol]``: ``[(dice, hd95)]`` per organ.

    Args:
        class_names: C names, background first.
        output_dir: where the CSV files go (None: only logged).
        protocols: ``clinical`` and / or ``transunet`` (see :mod:`medsam_ft.metrics`).
    """

    def __init__(self, class_names: Sequence[str], output_dir: str | os.PathLike | None = None,
                 protocols: Sequence[str] = PROTOCOLS):
        super().__init__(class_names, output_dir)
        self.organs = list(class_names)[1:]
        self.protocols = list(protocols)

    def measure(self, engine: Engine) -> Iterable[tuple[str, Any]]:
        for item in engine.state.output:
            pred, label = item["pred"], item["label"]
            meta = getattr(label, "meta", {})
            # Spacing of the array as it is now (after reorientation): from its affine, not the header's pixdim.
            affine = getattr(label, "affine", None)
            spacing = affine_to_spacing(affine, r=3).tolist() if affine is not None else [1.0, 1.0, 1.0]
            name = case_name(item, meta, len(self.collected))
            p, t = class_ids(pred), class_ids(label)
            yield name, {protocol: case_metrics(p, t, spacing, len(self.organs) + 1, protocol)
                         for protocol in self.protocols}

    @staticmethod
    def summary(cases: Mapping[str, list[tuple[float, float]]]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
        """Per-case Dice and HD95 rows (organ order), each plus a ``mean`` row over cases (NaN skipped)."""
        dice_rows = {n: [m[0] for m in v] for n, v in cases.items()}
        hd_rows = {n: [m[1] for m in v] for n, v in cases.items()}
        for rows in (dice_rows, hd_rows):
            if rows:
                rows["mean"] = np.nanmean(np.asarray(list(rows.values()), dtype=float), axis=0).tolist()
        return dice_rows, hd_rows

    def report(self, engine: Engine, collected: Mapping[str, Any]) -> None:
        for protocol in self.protocols:
            dice_rows, hd_rows = self.summary({name: case[protocol] for name, case in collected.items()})
            mean_dice, mean_hd = float(np.nanmean(dice_rows["mean"])), float(np.nanmean(hd_rows["mean"]))
            engine.state.metrics[f"mean_dice_{protocol}"] = mean_dice
            engine.state.metrics[f"mean_hd95_{protocol}"] = mean_hd
            unit = "mm" if protocol == "clinical" else "voxels"
            logger.info("\n%s", format_table(dice_rows, self.organs, f"Dice ({protocol}) - mean {mean_dice:.4f}"))
            logger.info("\n%s", format_table(hd_rows, self.organs, f"HD95 in {unit} ({protocol}) - mean {mean_hd:.2f}"))
            if self.output_dir is not None:
                self.write_csv(self.output_dir / f"metrics_{protocol}.csv", dice_rows, hd_rows)

    def write_csv(self, path: Path, dice_rows: dict[str, list[float]], hd_rows: dict[str, list[float]]) -> None:
        """One protocol's table: a row per case (then the mean), Dice and HD95 per organ and their means."""
        header = ["case"] + [f"{o}_dice" for o in self.organs] + [f"{o}_hd95" for o in self.organs] + ["mean_dice", "mean_hd95"]
        rows = [[name] + dice_rows[name] + hd_rows[name] + [float(np.nanmean(dice_rows[name])), float(np.nanmean(hd_rows[name]))]
                for name in dice_rows]
        write_csv(path, header, rows)


class ConfusionMatrixMeanIoU(Metric):
    """Ignite metric: data-set-level mIoU (GSAM), background included, over (pred, label) batches.

    IoU per class from one confusion matrix summed over every pixel of the data set, then the mean over
    classes (``monai.metrics.MeanIoU`` instead averages per-image IoUs: another number).

    ``pred``: [C, H, W] scores or [1, H, W] ids per image, ``label``: [1, H, W] ids (lists, as
    ``monai.handlers.from_engine(["pred", "label"])`` gives them). Summed over DDP ranks.

    Args:
        num_classes: C.
        ignore_index: the label of pixels not counted.
        output_transform: engine output -> ``(preds, labels)``.
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



class ImageMetricsHandler(EpochMetricsHandler):
    """Ignite handler: the 2D metrics of :mod:`medsam_ft.metrics` over an evaluator's images.

    Reads ``engine.state.output`` items with ``pred`` ([C, H, W] scores or [1, H, W] ids) and
    ``label`` [1, H, W]. At the end it logs a per-class table and writes
    ``{output_dir}/metrics_classes.csv`` (per class: data-set IoU, F1, precision, recall, mean
    image Dice and IoU; then the mean row) and ``metrics_images.csv`` (per image and foreground
    class: Dice and IoU), and sets ``engine.state.metrics`` ``miou``, ``miou_foreground``,
    ``mean_f1``, ``mean_image_dice``, ``mean_image_iou``. ``collected[image]``: its confusion matrix.

    Args:
        class_names, output_dir, ignore_index: see :class:`EpochMetricsHandler`.
    """

    def measure(self, engine: Engine) -> Iterable[tuple[str, Any]]:
        for item in engine.state.output:
            label = item["label"]
            name = volume_stem(getattr(label, "meta", {}).get("filename_or_obj", f"image{len(self.collected)}"))
            yield name, confusion_matrix(class_ids(item["pred"]), class_ids(label), len(self.class_names),
                                         self.ignore_index)

    @staticmethod
    def summary(matrix: np.ndarray, images: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, float]:
        """The data-set numbers (NaN when there is nothing to average) from the summed confusion matrix
        and each image's class scores."""
        scores = class_scores(matrix)
        image_dice = [np.nanmean(s["f1"][1:]) for s in images.values() if not np.isnan(s["f1"][1:]).all()]
        image_iou = [np.nanmean(s["iou"][1:]) for s in images.values() if not np.isnan(s["iou"][1:]).all()]
        return {
            "miou": float(np.nanmean(scores["iou"])),
            "miou_foreground": float(np.nanmean(scores["iou"][1:])),
            "mean_f1": float(np.nanmean(scores["f1"])),
            "mean_image_dice": float(np.mean(image_dice)) if image_dice else math.nan,
            "mean_image_iou": float(np.mean(image_iou)) if image_iou else math.nan,
        }

    def report(self, engine: Engine, collected: Mapping[str, Any]) -> None:
        matrix = sum(collected.values())
        images = {name: class_scores(m) for name, m in collected.items()}
        summary = self.summary(matrix, images)
        engine.state.metrics.update(summary)
        scores = class_scores(matrix)
        per_image = {key: np.asarray([s[key] for s in images.values()]) for key in ("f1", "iou")}
        with warnings.catch_warnings():  # a class absent from every image: NaN, as documented
            warnings.simplefilter("ignore", RuntimeWarning)
            image_dice, image_iou = np.nanmean(per_image["f1"], axis=0), np.nanmean(per_image["iou"], axis=0)
        columns = ["iou", "f1", "precision", "recall", "image_dice", "image_iou"]
        rows = [[name, *(float(v) for v in (scores["iou"][c], scores["f1"][c], scores["precision"][c],
                                             scores["recall"][c], image_dice[c], image_iou[c]))]
                for c, name in enumerate(self.class_names)]
        skipped = sum(np.isnan(s["f1"][1:]).all() for s in images.values())
        table = format_table({r[0]: r[1:] for r in rows}, columns, f"{len(images)} images ({skipped} without "
                             "foreground in truth or prediction)", first="class", row_means=False)
        logger.info("\n%s\n%s", table, "  ".join(f"{k} {v:.4f}" for k, v in summary.items()))
        if self.output_dir is not None:
            write_csv(self.output_dir / "metrics_classes.csv", ["class", *columns],
                      rows + [["mean", summary["miou"], summary["mean_f1"], float(np.nanmean(scores["precision"])),
                               float(np.nanmean(scores["recall"])), summary["mean_image_dice"], summary["mean_image_iou"]]])
            foreground = self.class_names[1:]
            write_csv(self.output_dir / "metrics_images.csv",
                      ["image", *(f"{c}_dice" for c in foreground), *(f"{c}_iou" for c in foreground)],
                      [[name, *(float(v) for v in s["f1"][1:]), *(float(v) for v in s["iou"][1:])]
                       for name, s in images.items()])


class BoxDiceHandler(EpochMetricsHandler):
    """Ignite handler: Dice of each box-prompted prediction, averaged per object class (SAM-PARSER's DSC).

    Reads ``pred`` ([2, H, W] scores or [1, H, W] ids) and ``label`` [1, H, W] (1 inside) from
    ``engine.state.output`` and the class id from ``engine.state.batch`` ``organ``. Logs the table,
    writes ``{output_dir}/metrics_boxes.csv`` (class, boxes, mean Dice; then the mean over classes),
    sets ``engine.state.metrics["mean_box_dice"]``. ``collected["rank:n"]``: ``(class id, dice)``.

    Args:
        class_names, output_dir, ignore_index: see :class:`EpochMetricsHandler` (the boxes' object
            classes are 1..C-1).
    """

    def measure(self, engine: Engine) -> Iterable[tuple[str, Any]]:
        for n, (item, sample) in enumerate(zip(engine.state.output, engine.state.batch)):
            matrix = confusion_matrix(class_ids(item["pred"]), class_ids(item["label"]), 2, self.ignore_index)
            yield f"{idist.get_rank()}:{len(self.collected) + n}", (int(sample["organ"]), float(class_scores(matrix)["f1"][1]))

    def report(self, engine: Engine, collected: Mapping[str, Any]) -> None:
        scores: dict[int, list[float]] = {}
        for organ, dice in collected.values():
            scores.setdefault(organ, []).append(dice)
        rows = [[self.class_names[c], len(v), float(np.nanmean(v))] for c, v in sorted(scores.items())]
        mean = float(np.mean([r[2] for r in rows]))
        engine.state.metrics["mean_box_dice"] = mean
        logger.info("\n%s", format_table({r[0]: [float(r[1]), r[2]] for r in rows}, ["boxes", "dice"],
                                          f"Dice per box, by class - mean {mean:.4f}", first="class", row_means=False))
        if self.output_dir is not None:
            write_csv(self.output_dir / "metrics_boxes.csv", ["class", "boxes", "mean_dice"],
                      rows + [["mean", sum(r[1] for r in rows), mean]])


class LastCheckpoint:
    """Ignite handler: after every epoch, write what ``--resume`` needs to ``path``.

    ``objects``' states (network, optimizer, LR schedule, best-metric record...) and the trainer's
    own (``"trainer"``, ``Engine.state_dict()``), laid out as Ignite's ``Checkpoint`` lays them out,
    so MONAI's ``CheckpointLoader`` resumes from the file. Written atomically (temp + rename) by rank
    0 alone. Not Ignite's ``Checkpoint`` nor MONAI's ``CheckpointSaver``: both delete the previous
    file before writing the next one (a crash in between leaves nothing to resume from), and the
    saver names interval files by epoch where ``--resume`` needs one known path.

    Args:
        path: the resume file (the bundles' ``last.pt``).
        objects: name -> object with ``state_dict()``, the same names the loader's ``load_dict`` uses.
    """

    def __init__(self, path: str | os.PathLike, objects: Mapping[str, Any]):
        self.path = Path(path)
        self.objects = dict(objects)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def save(self, engine: Engine) -> None:
        if not is_main_process():
            return
        state = {name: obj.state_dict() for name, obj in self.objects.items()}
        state["trainer"] = engine.state_dict()
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        logger.info("epoch %d: saved %s", engine.state.epoch, self.path)


def resume_file(path: str | os.PathLike, resume: bool) -> Path:
    """The resume file, checked to exist when resuming is asked for (the bundles' ``CheckpointLoader``).

    Args:
        path: ``last.pt``.
        resume: whether the run resumes.

    Returns:
        ``path``.

    Raises:
        InputError: ``resume`` and no file at ``path``.
    """
    if resume and not Path(path).is_file():
        raise InputError(path, "cannot resume: no checkpoint from an earlier run here")
    return Path(path)


class BestMetricState:
    """What ``--resume`` must restore of validation: the evaluator's best key metric (and its epoch),
    and the best-checkpoint savers' record of it, so the first validation after resuming replaces
    ``best.pt`` (and ``model.pt``) only when it beats the best of the earlier run. Give it to
    :class:`LastCheckpoint` and to the ``CheckpointLoader`` under the same name.

    Args:
        evaluator: the MONAI evaluator whose ``state.best_metric`` tracks the key metric.
        savers: the MONAI ``CheckpointSaver`` s writing key-metric checkpoints (``key_metric_filename``).
    """

    def __init__(self, evaluator: Engine, savers: Sequence[Any]):
        self.evaluator, self.savers = evaluator, list(savers)

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric": float(self.evaluator.state.best_metric),
                "best_metric_epoch": int(self.evaluator.state.best_metric_epoch)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.evaluator.state.best_metric = state["best_metric"]
        self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        if state["best_metric_epoch"] > 0:  # best checkpoints were written: the savers replace them only when beaten
            # Ignite Checkpoint's state: its "_saved" list of (priority, filename); the saver writes its fixed
            # key_metric_filename whatever name the record holds
            for saver in self.savers:
                saver.load_state_dict({"_saved": [(state["best_metric"], "restored_best")]})


class EpochSummary:
    """Ignite handler: a progress bar over iterations (optional) and one readable log line per epoch.

    The line has the epoch's mean loss, the learning rate and the wall time. MONAI's ``StatsHandler``
    logs each iteration's loss or the engine's metrics, not this line; the bar is Ignite's ``ProgressBar``.

    Args:
        optimizer: whose learning rate is logged.
        progress: show the progress bar.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, progress: bool = True):
        self.optimizer = optimizer
        self.progress = progress
        self.losses: list[float] = []
        self.started = 0.0

    def attach(self, engine: Engine) -> None:
        if self.progress:
            ProgressBar(persist=False).attach(engine, output_transform=lambda output: {"loss": _loss_of(output)})
        engine.add_event_handler(Events.EPOCH_STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: self.losses.append(_loss_of(e.state.output)))
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.log)

    def start(self, engine: Engine) -> None:
        self.losses, self.started = [], time.perf_counter()

    def log(self, engine: Engine) -> None:
        logger.info(
            "epoch %d/%d: mean loss %.4f over %d iterations, lr %.3g, %.1f s",
            engine.state.epoch, engine.state.max_epochs, float(np.mean(self.losses)), len(self.losses),
            self.optimizer.param_groups[0]["lr"], time.perf_counter() - self.started,
        )


def _loss_of(output: Any) -> float:
    """The loss from a MONAI trainer's output (a dict, or a list of per-sample dicts)."""
    first = output[0] if isinstance(output, list) else output
    return float(first["loss"])

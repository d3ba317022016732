"""Predicting patient scans with a trained checkpoint: label volumes in the patient's own geometry, and the
files viewers open (3D Slicer .seg.nrrd + colour table, DICOM SEG, PNG overlays). ``medsam-ft predict``
and the volume bundles' ``inference.json`` both run :func:`predict_scans`."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Orientation
from torch import nn
from tqdm.auto import tqdm

import medsam_ft
from medsam_ft.checkpoint import load_checkpoint
from medsam_ft.distributed import resolve_device
from medsam_ft.inference import SlicePredictor
from medsam_ft.io import InputError, atomic_paths, file_sha256, nifti_image
from medsam_ft.scans import Scan, ScanSource, read_scan
from medsam_ft.transforms import intensity_spec, intensity_transform
from medsam_ft.writers import (
    label_colors,
    write_color_table,
    write_dicom_seg,
    write_overlay_montage,
    write_seg_nrrd,
)

logger = logging.getLogger(__name__)
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # axis codes of RAS affines (nibabel's), said explicitly


@dataclass
class VolumePrediction:
    """``labels`` uint8[I, J, K] in the scan's own voxel order; ``ras_image`` float[X, Y, Z] in [0, 1] and
    ``ras_labels`` uint8[X, Y, Z]: what the network saw and predicted, oriented RAS, with ``ras_spacing``
    (mm along X and Y) (for overlays)."""

    labels: np.ndarray
    ras_image: torch.Tensor
    ras_labels: torch.Tensor
    ras_spacing: list[float]


class VolumePredictor:
    """A trained 2D network over CT volumes: every axial slice, ``slice_batch_size`` at a time.

    The scan is oriented ``axcodes`` (MONAI ``Orientation``; the orientation the network was trained
    in, RAS for NIfTI training), scaled to [0, 1] as ``intensity`` says; slices ``[1, X, Y]``
    go to the device in batches (the volume stays in host memory), and the class ids are oriented
    back to the scan's own voxel order. bf16 autocast on CUDA.
    Calling it on a :class:`~medsam_ft.scans.Scan` returns a :class:`VolumePrediction`.

    Args:
        network: the trained network.
        class_names: C names, background first.
        intensity: how training scaled the voxels (:func:`~medsam_ft.transforms.intensity_spec`; a pair
            is a CT window); scans already in [0, 1] (TransUNet arrays) are used as they are.
        resize_to: see :class:`~medsam_ft.inference.SlicePredictor`.
        slice_batch_size: slices per network call.
        device: where the network runs (None: CUDA when present).
        checkpoint_info: path, SHA-256 and config, written into the outputs.
        class_colors: [r, g, b] per class (None: standard organ colours).
        axcodes: the orientation the network was trained in.
    """

    def __init__(self, network: nn.Module, class_names: list[str], intensity: Mapping[str, Any] | Sequence[float],
                 resize_to: int | None = None, slice_batch_size: int = 32, device: str | torch.device | None = None,
                 checkpoint_info: dict[str, Any] | None = None, class_colors: list[list[int]] | None = None,
                 axcodes: str = "RAS"):
        self.axcodes = axcodes
        self.device = resolve_device(device) if not isinstance(device, torch.device) else device
        self.slice_predictor = SlicePredictor(network, resize_to=resize_to).to(self.device).eval()
        self.class_names = list(class_names)
        self.intensity = intensity_spec(intensity)
        self.slice_batch_size = slice_batch_size
        self.checkpoint_info = dict(checkpoint_info or {})
        self.class_colors = class_colors

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, sam_checkpoint: str | os.PathLike | None = None,
                        device: str | None = None, slice_batch_size: int = 32) -> VolumePredictor:
        """Rebuild a trained volume model; refuse checkpoints that cannot predict CT volumes prompt-free
        (2D-image models, box-prompted models, class names that do not match the network)."""
        torch_device = resolve_device(device)
        network, checkpoint = load_checkpoint(path, sam_checkpoint, torch_device)
        class_names, num_classes = checkpoint.get("class_names"), network.config.get("num_classes")
        if checkpoint.get("prompt", "none") != "none":
            raise InputError(path, f"was trained with {checkpoint['prompt']} prompts: it predicts only with them, "
                                   "not whole volumes")
        if class_names is None or len(class_names) != num_classes:
            raise InputError(path, f"names {0 if class_names is None else len(class_names)} classes "
                                   f"for a network with {num_classes} outputs")
        if checkpoint["intensity"] is None:
            raise InputError(path, "was trained on 2D images (it has no volume intensity handling): predict images "
                                   "with its bundle's inference.json, not volumes")
        info = {"path": str(Path(path).resolve()), "sha256": file_sha256(path), "config": checkpoint["config"],
                "trained_with": checkpoint.get("medsam_ft_version")}
        return cls(network, class_names, checkpoint["intensity"], checkpoint.get("resize_to"), slice_batch_size,
                   torch_device, info, checkpoint.get("class_colors"), checkpoint["axcodes"])

    @torch.inference_mode()
    def __call__(self, scan: Scan, progress: bool = False) -> VolumePrediction:
        orientation = Orientation(axcodes=self.axcodes, labels=RAS_LABELS)
        oriented = orientation(MetaTensor(torch.from_numpy(scan.voxels)[None], affine=torch.as_tensor(scan.affine)))
        image = oriented.as_tensor()
        if scan.intensity == "raw":
            image = intensity_transform(self.intensity)({"image": image})["image"]
        image = torch.as_tensor(image, dtype=torch.float32)[0]
        labels = torch.empty(image.shape, dtype=torch.uint8)
        depth = image.shape[-1]
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else contextlib.nullcontext()
        with tqdm(total=depth, unit="slice", desc=scan.source.name, disable=not progress, leave=False) as bar:
            for start in range(0, depth, self.slice_batch_size):
                stop = min(start + self.slice_batch_size, depth)
                slices = image[:, :, start:stop].permute(2, 0, 1)[:, None].to(self.device)  # [b, 1, X, Y]
                with autocast:
                    logits = self.slice_predictor(slices)
                labels[:, :, start:stop] = logits.argmax(1).to(torch.uint8).permute(1, 2, 0).cpu()
                bar.update(stop - start)
        oriented_labels = MetaTensor(labels[None], meta=oriented.meta, applied_operations=oriented.applied_operations)
        restored = orientation.inverse(oriented_labels).as_tensor()[0].numpy()
        if restored.shape != scan.voxels.shape:
            raise RuntimeError(f"{scan.source.path}: labels {restored.shape} not restored to the scan's {scan.voxels.shape}")
        to_ras = Orientation(axcodes="RAS", labels=RAS_LABELS)  # the overlays' convention, whatever the network's
        ras_image = to_ras(MetaTensor(image[None], affine=oriented.affine))
        ras_labels = to_ras(MetaTensor(labels[None], affine=oriented.affine)).as_tensor()[0]
        spacing = np.linalg.norm(np.asarray(ras_image.affine)[:3, :3], axis=0)[:2].tolist()
        return VolumePrediction(np.ascontiguousarray(restored, dtype=np.uint8), ras_image.as_tensor()[0], ras_labels,
                                spacing)


@dataclass(frozen=True)
class OutputOptions:
    """Which files to write besides the label NIfTI and its JSON summary.

    Args:
        slicer: a 3D Slicer segmentation (.seg.nrrd) and colour table.
        dicom_seg: a DICOM SEG (DICOM input only).
        overlay: a PNG montage.
    """

    slicer: bool = False
    dicom_seg: bool = False
    overlay: bool = False

    def files(self, source: ScanSource, output_dir: str | os.PathLike) -> dict[str, Path]:
        """``{kind: path}`` of the outputs for ``source``; the summary last (it marks a finished volume)."""
        out = Path(output_dir)
        name = source.name
        files = {"labels": out / f"{name}_seg.nii.gz"}
        if self.slicer:
            files |= {"slicer": out / f"{name}_seg.seg.nrrd", "color_table": out / f"{name}_seg.ctbl"}
        if self.dicom_seg:
            files["dicom_seg"] = out / f"{name}_seg.dcm"
        if self.overlay:
            files["overlay"] = out / f"{name}_overlay.png"
        files["summary"] = out / f"{name}_seg.json"
        return files


@dataclass
class PredictionReport:
    """What :func:`predict_scans` did: files written per scan, scans skipped (already done), failures."""

    written: dict[str, list[Path]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _finished(files: dict[str, Path], checkpoint_sha256: str) -> bool:
    """True when ``files`` are all there and the summary says this checkpoint wrote exactly them."""
    try:
        record = json.loads(files["summary"].read_text())
    except (OSError, ValueError):
        return False
    expected = {kind: path.name for kind, path in files.items() if kind != "summary"}
    return (record.get("checkpoint", {}).get("sha256") == checkpoint_sha256 and record.get("outputs") == expected
            and all(path.is_file() for path in files.values()))


def predict_scans(predictor: VolumePredictor, sources: list[ScanSource], output_dir: str | os.PathLike,
                  options: OutputOptions = OutputOptions(), overwrite: bool = False,
                  progress: bool = True) -> PredictionReport:
    """Predict every scan of ``sources`` into ``output_dir``.

    Per scan ``{name}_seg.nii.gz`` (uint8 class ids, the scan's shape and affine; a NIfTI source's
    header copied), the chosen extra files, and ``{name}_seg.json`` (class names and values, organ
    volumes in mL, checkpoint path/SHA-256/config, software versions). A scan's files are written to
    temporary names and renamed together, the summary last. Scans whose files were finished by this
    checkpoint with these options are skipped (an interrupted batch resumes); any other existing
    output file is refused before anything is predicted, unless ``overwrite``. A scan that cannot be
    read is reported in ``failed`` and the others go on (a single scan raises).

    Args:
        predictor: the trained network and its preprocessing.
        sources: from :func:`~medsam_ft.scans.find_scans`.
        output_dir: where the files go.
        options: which extra files.
        overwrite: replace existing outputs.
        progress: show a progress bar over the scans.

    Returns:
        Which scans were written, skipped and failed.

    Raises:
        InputError: existing outputs (without ``overwrite``), two scans that would write the same
            files, or the only scan unreadable.
    """
    if options.dicom_seg:
        for source in sources:
            if source.format != "dicom":
                raise InputError(source.path, "--dicom_seg needs a DICOM series as input (a DICOM SEG references "
                                              f"its source images); this is a {source.format} file")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise InputError(output_dir, f"two inputs would write the same outputs: {repeated}")
    report = PredictionReport()
    sha = predictor.checkpoint_info.get("sha256", "")
    plans, conflicts = [], []
    for source in sources:
        files = options.files(source, output_dir)
        if not overwrite and _finished(files, sha):
            logger.info("%s: already predicted with this checkpoint (%s), skipped", source.path, files["summary"])
            report.skipped.append(source.name)
            continue
        conflicts += [path for path in files.values() if path.exists()] if not overwrite else []
        plans.append((source, files))
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise InputError(conflicts[0], f"already exists{more}; pass --overwrite to replace existing outputs")
    for source, files in tqdm(plans, unit="volume", disable=not progress or len(plans) < 2):
        try:
            scan = read_scan(source)
            prediction = predictor(scan, progress=progress)
            _write_outputs(predictor, scan, prediction, files)
        except InputError as err:
            if len(sources) == 1:
                raise
            logger.error("%s", err)
            report.failed[source.name] = str(err)
            continue
        report.written[source.name] = list(files.values())
        logger.info("%s -> %s", source.path, files["labels"])
    return report


def _write_outputs(predictor: VolumePredictor, scan: Scan, prediction: VolumePrediction, files: dict[str, Path]) -> None:
    names = predictor.class_names
    colors = label_colors(names, predictor.class_colors)
    labels = prediction.labels
    with atomic_paths(*files.values()) as temporaries:
        tmp = dict(zip(files, temporaries))
        nib.save(nifti_image(labels, scan.affine, like=scan.nifti), tmp["labels"])
        if "slicer" in files:
            write_seg_nrrd(tmp["slicer"], labels, scan.affine, names, colors)
            write_color_table(tmp["color_table"], names, colors)
        if "dicom_seg" in files:
            write_dicom_seg(tmp["dicom_seg"], labels, scan.dicom_files, names, colors, _algorithm_name(predictor))
        if "overlay" in files:
            write_overlay_montage(tmp["overlay"], prediction.ras_image.numpy(), prediction.ras_labels.numpy(), names,
                                  colors, prediction.ras_spacing)
        tmp["summary"].write_text(json.dumps(_summary(predictor, scan, labels, files), indent=2) + "\n")


def _algorithm_name(predictor: VolumePredictor) -> str:
    config = predictor.checkpoint_info.get("config", {})
    return f"medsam_ft {config.get('method', '')} {config.get('backbone', '')}".strip()


def _summary(predictor: VolumePredictor, scan: Scan, labels: np.ndarray, files: dict[str, Path]) -> dict[str, Any]:
    counts = np.bincount(labels.ravel(), minlength=len(predictor.class_names))
    source = scan.source
    return {
        "source": str(source.path.resolve()),
        "input_format": source.format,
        **({"series_instance_uid": source.series_uid, "dicom_files": len(scan.dicom_files)} if source.format == "dicom" else {}),
        "shape": list(labels.shape),
        "affine": np.round(scan.affine, 6).tolist(),
        "labels": {str(i): name for i, name in enumerate(predictor.class_names)},
        "volumes_ml": {name: round(float(counts[i]) * scan.voxel_volume_ml, 3)
                       for i, name in enumerate(predictor.class_names) if i > 0},
        "voxel_volume_ml": scan.voxel_volume_ml,
        "outputs": {kind: path.name for kind, path in files.items() if kind != "summary"},
        "checkpoint": predictor.checkpoint_info,
        "intensity": predictor.intensity,
        "medsam_ft_version": medsam_ft.__version__,
        "torch_version": torch.__version__,
        "device": str(predictor.device),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


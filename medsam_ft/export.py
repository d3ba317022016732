"""Writing predictions: label NIfTI volumes in the patient's own geometry, 2D label PNGs with overlays."""

from __future__ import annotations

import colorsys
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform
from PIL import Image

import medsam_ft
from medsam_ft.data.folder2d import IMAGE_SUFFIXES
from medsam_ft.io import InputError, atomic_path, files_by_stem, volume_stem, write_json, write_nifti
from medsam_ft.transforms import three_channels

NIFTI_SUFFIXES = (".nii.gz", ".nii")
INPUT_KINDS = {"volume": (NIFTI_SUFFIXES, "NIfTI volumes (*.nii, *.nii.gz)"),
               "image": (IMAGE_SUFFIXES, f"images ({', '.join(IMAGE_SUFFIXES)})")}


def list_inputs(input_dir: str | os.PathLike, kind: str = "volume") -> list[dict[str, str]]:
    """``[{"image": path}]`` for every input file of ``kind`` (``volume`` or ``image``) in ``input_dir``,
    sorted; other files are ignored; none at all is an error."""
    suffixes, what = INPUT_KINDS[kind]
    files = files_by_stem(input_dir, suffixes)
    if not files:
        raise InputError(input_dir, f"holds no {what}")
    return [{"image": str(p)} for p in files.values()]


class SaveLabelNiftid(MapTransform):
    """Write ``data[key]`` (class ids [1, X, Y, Z], already inverted to the input's orientation) as uint8 NIfTI.

    The file is ``{output_dir}/{input stem}_{postfix}.nii.gz`` with the input file's own affine
    (``original_affine`` from the loader) and shape, written atomically; ``{stem}_{postfix}.json``
    beside it names the classes of the label values.
    """

    def __init__(self, keys: str, output_dir: str | os.PathLike, class_names: Sequence[str], postfix: str = "seg",
                 image_key: str = "image", info: Mapping[str, Any] | None = None):
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.postfix, self.image_key = postfix, image_key
        self.info = dict(info or {})

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            meta = pred.meta
            source = str(meta["filename_or_obj"])
            labels = torch.as_tensor(pred)[0].cpu().numpy()
            expected = tuple(int(s) for s in np.asarray(meta["spatial_shape"]))
            if labels.shape != expected:
                raise RuntimeError(f"{source}: prediction shape {labels.shape} was not restored to the input's {expected}")
            stem = volume_stem(source)
            out = self.output_dir / f"{stem}_{self.postfix}.nii.gz"
            write_nifti(out, labels.round().astype(np.uint8), np.asarray(meta["original_affine"], dtype=np.float64))
            write_json(out.with_name(f"{stem}_{self.postfix}.json"), {
                "source": source,
                "labels": {str(i): name for i, name in enumerate(self.class_names)},
                "medsam_ft_version": medsam_ft.__version__,
                **self.info,
            })
            d[f"{key}_file"] = str(out)
        return d


def label_colors(num_classes: int, class_colors: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """uint8[C, 3]: the given colours, else black background and well-separated hues (golden-ratio steps)."""
    if class_colors is not None:
        if len(class_colors) != num_classes:
            raise ValueError(f"{len(class_colors)} class colours for {num_classes} classes")
        return np.asarray(class_colors, dtype=np.uint8)
    colors = [(0.0, 0.0, 0.0)] + [colorsys.hsv_to_rgb((0.1 + c * 0.618034) % 1.0, 0.8, 1.0) for c in range(1, num_classes)]
    return np.round(np.asarray(colors) * 255).astype(np.uint8)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


class SaveLabelPNGd(MapTransform):
    """Write 2D predictions ``data[key]`` (class ids [1, H, W] at the input's size) as PNG files.

    ``{output_dir}/{stem}_{postfix}.png``: uint8 class ids (the masks' ``ids`` format);
    ``{stem}_overlay.png``: the input image with the classes drawn in colour (half opacity,
    background left clear), for looking at. ``{output_dir}/labels.json`` names each id and its colour.
    Files are written atomically.
    """

    def __init__(self, keys: str, output_dir: str | os.PathLike, class_names: Sequence[str],
                 class_colors: Sequence[Sequence[int]] | None = None, postfix: str = "seg", image_key: str = "image",
                 info: Mapping[str, Any] | None = None):
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.colors = label_colors(len(self.class_names), class_colors)
        self.postfix, self.image_key = postfix, image_key
        self.info = dict(info or {})
        self.labels_written = False

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not self.labels_written:
            write_json(self.output_dir / "labels.json", {
                "labels": {str(i): {"name": n, "color": self.colors[i].tolist()} for i, n in enumerate(self.class_names)},
                "medsam_ft_version": medsam_ft.__version__, **self.info})
            self.labels_written = True
        for key in self.key_iterator(d):
            pred = d[key]
            source = str(pred.meta["filename_or_obj"])
            labels = torch.as_tensor(pred)[0].cpu().numpy().round().astype(np.uint8)
            image = three_channels(torch.as_tensor(d[self.image_key]).float().cpu()).numpy().transpose(1, 2, 0)
            if labels.shape != image.shape[:2]:
                raise RuntimeError(f"{source}: prediction size {labels.shape} differs from the image's {image.shape[:2]}")
            stem = Path(source).stem
            _write_png(self.output_dir / f"{stem}_{self.postfix}.png", labels)
            overlay = np.round(np.clip(image, 0.0, 1.0) * 255.0)
            drawn = labels > 0
            overlay[drawn] = 0.5 * overlay[drawn] + 0.5 * self.colors[labels[drawn]]
            _write_png(self.output_dir / f"{stem}_overlay.png", overlay.round().astype(np.uint8))
            d[f"{key}_file"] = str(self.output_dir / f"{stem}_{self.postfix}.png")
        return d

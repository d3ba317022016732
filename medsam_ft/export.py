"""Writing predictions: label NIfTI volumes in the patient's own geometry, with their class names."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform

import medsam_ft
from medsam_ft.io import InputError, volume_stem, write_json, write_nifti

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def list_volumes(input_dir: str | os.PathLike) -> list[dict[str, str]]:
    """``[{"image": path}]`` for every NIfTI file in ``input_dir`` (sorted); an error if there is none."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError(input_dir, "input folder not found")
    files = sorted(p for p in input_dir.iterdir() if p.name.endswith(NIFTI_SUFFIXES))
    if not files:
        raise InputError(input_dir, "holds no NIfTI volumes (*.nii, *.nii.gz)")
    return [{"image": str(p)} for p in files]


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

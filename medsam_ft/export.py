"""Trained networks for other runtimes: TorchScript and ONNX files, each checked against PyTorch.

The exported model is the network as the project runs it: ``float[B, 3, S, S]`` pixels in [0, 1] ->
logits ``float[B, C, H/s, W/s]`` (normalisation inside), for the B it was exported with (tracing fixes it:
LiteMedSAM's TinyViT reshapes with the batch size as a number) and S x S, except ONNX files of networks
that take any input size (GSAM), whose H and W are any multiples of 16, with LoRA and SVD coefficients merged into
plain weights where the method allows (:meth:`~medsam_ft.networks.SemanticSAM.merge`). Before the
file is kept, TorchScript (``torch.jit.load``) or ONNX (``onnxruntime``) must give PyTorch's logits
on test inputs within :data:`TOLERANCE`; otherwise nothing is written.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medsam_ft.io import atomic_path
from medsam_ft.networks import SemanticSAM

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
TOLERANCE = 1e-3  # largest absolute logit difference accepted (float32 kernels differ between runtimes)


@dataclass
class ExportReport:
    """What was written and how closely it reproduces PyTorch."""

    path: Path
    format: str
    input_shape: tuple[int | str, ...]
    max_abs_difference: float


def deployable(network: SemanticSAM) -> nn.Module:
    """The network as it is exported: merged into plain SAM modules where the method allows, in eval mode.

    Args:
        network: a trained network.

    Returns:
        The module to export.

    Raises:
        ValueError: a box-prompted network (it needs boxes as a second input; export the class-mask one).
    """
    if network.prompt == "box":
        raise ValueError("a box-prompted network takes boxes as a second input: export is for class-mask networks")
    merge = getattr(network, "merge", None)
    return (merge() if merge is not None else network).eval()


def _run_onnx(path: Path, image: torch.Tensor) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image.numpy()})[0]


def export_network(network: SemanticSAM, path: str | os.PathLike, fmt: str, image_size: int | None = None,
                   batch_size: int = 1) -> ExportReport:
    """Export a trained network and check the file against PyTorch.

    Args:
        network: a trained network (on the CPU).
        path: the file to write (``.ts`` / ``.pt`` for TorchScript, ``.onnx``).
        fmt: ``torchscript`` or ``onnx``.
        image_size: S of the exported input (default: the network's own input size; a multiple of 16 for
            networks of any input size, whose ONNX height and width are multiples of 16).
        batch_size: B of the exported input.

    Returns:
        The report: the file and the largest logit difference found.

    Raises:
        ValueError: unknown format, a box-prompted network, ONNX packages missing, or a file that does
            not reproduce PyTorch within :data:`TOLERANCE` (then nothing is written).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    if fmt == "onnx" and (importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None):
        raise ValueError("ONNX export needs onnxscript and onnxruntime: pip install 'medsam-ft[export]'")
    module = deployable(network)
    size = image_size or network.image_size
    generator = torch.Generator().manual_seed(0)
    shape = (batch_size, 3, size, size)
    example = torch.rand(shape, generator=generator)
    dynamic = fmt == "onnx" and network.any_input_size
    # an input the export did not see; of another size where the file takes any
    checks = [example, torch.rand((batch_size, 3, size + 16, size + 32) if dynamic else shape, generator=generator)]
    with torch.no_grad():
        expected = [module(image) for image in checks]
    path = Path(path)
    with atomic_path(path) as tmp:
        if fmt == "torchscript":
            with torch.no_grad():
                torch.jit.save(torch.jit.trace(module, example, check_trace=False), str(tmp))
            loaded = torch.jit.load(str(tmp))
            with torch.no_grad():
                outputs = [loaded(image).numpy() for image in checks]
        else:
            sides = {2: 16 * torch.export.Dim("height_16", min=1), 3: 16 * torch.export.Dim("width_16", min=1)}
            torch.onnx.export(module, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                              dynamic_shapes={"image": sides} if dynamic else None, dynamo=True, verbose=False)
            outputs = [_run_onnx(tmp, image) for image in checks]
        difference = max(float(np.abs(out - ref.numpy()).max()) for out, ref in zip(outputs, expected))
        if not difference <= TOLERANCE:
            raise ValueError(f"the {fmt} export gives logits up to {difference:.2e} away from PyTorch's "
                             f"(tolerance {TOLERANCE}); nothing written to {path}")
    input_shape = (batch_size, 3, "16*h", "16*w") if dynamic else shape
    logger.info("exported %s (%s, input %s); largest logit difference to PyTorch %.2e", path, fmt, list(input_shape),
                difference)
    return ExportReport(path, fmt, input_shape, difference)

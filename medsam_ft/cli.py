"""``medsam-ft``: command-line entry point (``medsam-ft info``, ``predict``, ``export``)."""

from __future__ import annotations

import argparse
import logging
import platform
import sys

import torch

import medsam_ft
from medsam_ft.arguments import HelpFormatter, add_option, argument_parser
from medsam_ft.checkpoint import load_checkpoint
from medsam_ft.export import FORMATS, export_network
from medsam_ft.io import InputError
from medsam_ft.predict import OutputOptions, VolumePredictor, predict_scans
from medsam_ft.scans import find_scans

PREDICT_HELP = """Predict CT scans with a trained checkpoint. INPUT: a NIfTI file (.nii, .nii.gz), a TransUNet
.npy.h5 volume, a folder of those (batch), or a folder holding a DICOM series (--series UID when it holds
several). Per scan OUTPUT gets NAME_seg.nii.gz (uint8 class ids in the scan's own shape and geometry) and
NAME_seg.json (class names, organ volumes in mL, checkpoint and versions), plus what the flags ask for.
Outputs that exist are refused unless --overwrite; scans this checkpoint already finished are skipped, so an
interrupted batch resumes. Exit status 0: all written or skipped; 1: an input was refused (message on stderr)."""


EXPORT_HELP = """Export a trained network for other runtimes: float[B, 3, S, S] pixels in [0, 1] -> logits
float[B, C, S/s, S/s] (C classes; argmax for labels), normalisation inside, LoRA / SVD coefficients merged.
B and S are fixed by the export (GSAM's ONNX: any H, W multiples of 16). The file is kept only if
TorchScript (torch.jit.load) or ONNX (onnxruntime) reproduces PyTorch's logits on test inputs (largest
difference printed)."""


def info() -> str:
    """Versions, devices, and what can be built."""
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    return "\n".join(
        [
            f"medsam-ft {medsam_ft.__version__}",
            f"python {platform.python_version()}, torch {torch.__version__}, device {device}",
            f"backbones: {', '.join(medsam_ft.list_backbones())}",
            f"methods: {', '.join(medsam_ft.list_networks())}",
        ]
    )


def predict(args: argparse.Namespace) -> int:
    """Run ``medsam-ft predict``.

    Args:
        args: the parsed command line.

    Returns:
        The exit status (1 when a scan failed).
    """
    sources = find_scans(args.input, args.series)
    predictor = VolumePredictor.from_checkpoint(args.checkpoint, args.sam_checkpoint, args.device, args.slice_batch_size)
    options = OutputOptions(slicer=args.slicer, dicom_seg=args.dicom_seg, overlay=args.overlay)
    report = predict_scans(predictor, sources, args.output, options, overwrite=args.overwrite,
                           progress=not args.quiet)
    print(f"{len(report.written)} written, {len(report.skipped)} skipped (already done), "
          f"{len(report.failed)} failed: {args.output}")
    for name, problem in report.failed.items():
        print(f"failed: {problem}", file=sys.stderr)
    return 1 if report.failed else 0


def export(args: argparse.Namespace) -> int:
    """Run ``medsam-ft export``.

    Args:
        args: the parsed command line.

    Returns:
        The exit status (0: written and checked).
    """
    network, _ = load_checkpoint(args.checkpoint, args.sam_checkpoint, "cpu")
    report = export_network(network, args.output, args.format, args.image_size, args.batch_size)
    print(f"{report.format} written to {report.path}: input float{list(report.input_shape)} in [0, 1], logits within "
          f"{report.max_abs_difference:.1e} of PyTorch's")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``medsam-ft`` command.

    Args:
        argv: the arguments (None: ``sys.argv``).

    Returns:
        The exit status: 0, or 1 when a scan failed or the input is bad (its one-line error printed).
    """
    parser = argument_parser("medsam-ft", medsam_ft.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, device, available backbones and methods", formatter_class=HelpFormatter)
    p = commands.add_parser("predict", help="predict CT scans (NIfTI, DICOM) into label volumes",
                            description=PREDICT_HELP, formatter_class=HelpFormatter)
    add_option(p, "checkpoint", required=True, help="a trained checkpoint (best.pt of a volume bundle)")
    add_option(p, "input", "-i", required=True, help="NIfTI / .npy.h5 file, folder of them, or DICOM series folder")
    add_option(p, "output", "-o", required=True, help="output folder")
    add_option(p, "series", help="SeriesInstanceUID to predict when the DICOM folder holds several series")
    add_option(p, "slicer", action="store_true", help="also NAME_seg.seg.nrrd (3D Slicer segmentation) + NAME_seg.ctbl")
    add_option(p, "dicom_seg", action="store_true", help="also NAME_seg.dcm, a DICOM SEG of the source series")
    add_option(p, "overlay", action="store_true", help="also NAME_overlay.png, slices with the prediction outlined")
    add_option(p, "device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1")
    add_option(p, "slice_batch_size", type=int, default=32, help="slices per forward pass (bounds device memory)")
    add_option(p, "sam_checkpoint", help="where the SAM ViT weights the model was trained on are now (ViT backbones)")
    add_option(p, "overwrite", action="store_true", help="replace existing outputs (and redo finished scans)")
    add_option(p, "quiet", action="store_true", help="no progress bars or log lines")
    e = commands.add_parser("export", help="a trained network as TorchScript or ONNX, checked against PyTorch",
                            description=EXPORT_HELP, formatter_class=HelpFormatter)
    add_option(e, "checkpoint", required=True, help="a trained checkpoint (best.pt)")
    add_option(e, "format", required=True, choices=FORMATS, help="the file's format")
    add_option(e, "output", "-o", required=True, help="the file to write (.ts for TorchScript, .onnx)")
    add_option(e, "image_size", type=int, default=None, help="input side S (default: the network's input size)")
    add_option(e, "batch_size", type=int, default=1, help="input batch size B (fixed by the export)")
    add_option(e, "sam_checkpoint", help="where the SAM ViT weights the model was trained on are now (ViT backbones)")
    add_option(e, "quiet", action="store_true", help="no log lines")
    args = parser.parse_args(argv)
    if args.command == "info":
        print(info())
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("medsam_ft").setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        return predict(args) if args.command == "predict" else export(args)
    except (InputError, ValueError) as err:  # bad input, or a device that is not there
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

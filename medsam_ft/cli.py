"""``medsam-ft``: command-line entry point (``medsam-ft info``)."""

from __future__ import annotations

import argparse
import platform

import torch

import medsam_ft


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="medsam-ft", description=medsam_ft.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, device, available backbones and methods")
    args = parser.parse_args(argv)
    if args.command == "info":
        print(info())


if __name__ == "__main__":
    main()

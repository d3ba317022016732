"""FLOPs of one forward pass of a network at several input sizes (``torch.utils.flop_counter``).

``python -m benchmarks.flops --method gsam --backbone vit_b --sizes 128 256 [--num-classes 2 --image-size 256]``

Counts the matrix multiplications and convolutions of one forward of batch 1 (an FFT is not
counted) and prints GFLOPs per size and each size's share of the largest.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

import medsam_ft


def forward_flops(network: torch.nn.Module, size: int) -> int:
    """FLOPs of ``network(float[1, 3, size, size])``. Autograd stays on: torch's module tracker fails
    under ``no_grad`` on expanded parameter views, and a forward counts the same either way."""
    with FlopCounterMode(display=False) as counter:
        network(torch.rand(1, 3, size, size))
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="gsam")
    parser.add_argument("--backbone", default="vit_b")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=256, help="size the network is built for")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    network = medsam_ft.build_network(args.method, backbone=args.backbone, num_classes=args.num_classes,
                                      image_size=args.image_size).eval()
    flops = {size: forward_flops(network, size) for size in args.sizes}
    largest = flops[max(flops)]
    for size, count in flops.items():
        print(f"{args.method} {args.backbone} {size} px: {count / 1e9:.2f} GFLOPs ({100 * count / largest:.1f} %)")


if __name__ == "__main__":
    main()

"""Synthetic 2D segmentation data: textured images with discs and rectangles, in the folder layout.

``python -m data_prep.shapes2d --out DIR [--count 40 --seed 0 --classes 3]``

Writes ``DIR/images/shape_NNN.png`` (RGB, sizes 96-192 px, any aspect ratio) and
``DIR/masks/shape_NNN.png`` (class ids: 0 background, 1 disc, 2 rectangle with ``--classes 3``;
``--classes 2``: discs only). For demos and tests of the 2D pipeline; deterministic per (seed, index).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medsam_ft.arguments import add_option, argument_parser
from medsam_ft.io import atomic_path


def make_sample(seed: int, index: int, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``(image uint8[H, W, 3], mask uint8[H, W])`` of sample ``index``."""
    rng = np.random.default_rng([seed, index])
    height, width = (int(v) for v in rng.integers(96, 193, size=2))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    tint = rng.uniform(0.3, 0.6, size=3)
    gradient = (xx / width * rng.uniform(-0.2, 0.2) + yy / height * rng.uniform(-0.2, 0.2))[..., None]
    image = tint + gradient + rng.normal(0.0, 0.06, size=(height, width, 3))
    mask = np.zeros((height, width), dtype=np.uint8)
    if classes >= 3:
        for _ in range(rng.integers(0, 3)):
            y0, x0 = rng.integers(0, height - 20), rng.integers(0, width - 20)
            y1, x1 = y0 + rng.integers(12, 40), x0 + rng.integers(12, 40)
            region = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
            mask[region] = 2
            image[region] = np.array([0.15, 0.2, 0.55]) + rng.normal(0.0, 0.05, size=(int(region.sum()), 3))
    for _ in range(rng.integers(1, 4)):
        cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(8, min(height, width) / 4)
        region = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
        mask[region] = 1
        shade = 1.0 - 0.3 * np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)[region] / radius
        image[region] = np.array([0.85, 0.45, 0.35]) * shade[:, None] + rng.normal(0.0, 0.04, size=(int(region.sum()), 3))
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8), mask


def generate(out: str | Path, count: int = 40, seed: int = 0, classes: int = 3) -> None:
    """Write ``count`` samples to ``out/images`` and ``out/masks``."""
    out = Path(out)
    for index in range(count):
        image, mask = make_sample(seed, index, classes)
        for folder, pixels in (("images", image), ("masks", mask)):
            with atomic_path(out / folder / f"shape_{index:03d}.png") as tmp:
                Image.fromarray(pixels).save(tmp, format="PNG")


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser("python -m data_prep.shapes2d", __doc__.splitlines()[0])
    add_option(parser, "out", type=Path, required=True, help="folder to write images/ and masks/ into")
    add_option(parser, "count", type=int, default=40, help="number of images")
    add_option(parser, "seed", type=int, default=0, help="random seed")
    add_option(parser, "classes", type=int, choices=(2, 3), default=3, help="classes incl. background")
    args = parser.parse_args(argv)
    generate(args.out, args.count, args.seed, args.classes)
    print(f"wrote {args.count} images and masks to {args.out}")


if __name__ == "__main__":
    main()

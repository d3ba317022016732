"""Medical Segmentation Decathlon / nnU-Net v1 data set -> MONAI datalist JSON (training, validation, test).

``python -m data_prep.decathlon --root DIR [--out DIR/datalist.json] [--val_cases 2] [--test_fraction 0.2]
[--seed 0] [--hu_window -125 275] [--percentiles 0.5 99.5]``

Reads ``DIR/dataset.json`` (``labels``, ``modality``, ``training``) with MONAI's ``load_decathlon_datalist``;
every image/label pair is checked. The labelled cases are split with ``--seed``; ``imagesTs`` (no labels)
is predicted with ``medsam-ft predict -i DIR/imagesTs``. The datalist records the class names and the
intensity handling (CT: the HU window; MR and others: each volume's percentiles): train with any volume
bundle (``--dataset_dir DIR``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from medsam_ft.arguments import add_option, argument_parser
from medsam_ft.data import decathlon_datalist, write_datalist
from medsam_ft.io import InputError
from medsam_ft.transforms import HU_WINDOW, PERCENTILES


def convert(prog: str, description: str, build: Callable[..., dict[str, Any]], argv: list[str] | None) -> None:
    """The command line of the Decathlon / nnU-Net converters.

    Args:
        prog: the command as users type it.
        description: its ``--help`` text.
        build: ``build(root, val_cases=, test_fraction=, seed=, hu_window=, percentiles=)`` -> datalist.
        argv: the arguments (None: ``sys.argv``).
    """
    parser = argument_parser(prog, description)
    add_option(parser, "root", type=Path, required=True, help="the data set folder (dataset.json, imagesTr, labelsTr)")
    add_option(parser, "out", type=Path, default=None, help="datalist JSON to write (default ROOT/datalist.json)")
    add_option(parser, "val_cases", type=int, default=2, help="labelled cases held out for validation")
    add_option(parser, "test_fraction", type=float, default=0.2, help="share of labelled cases held out for testing")
    add_option(parser, "seed", type=int, default=0, help="seed of the split")
    add_option(parser, "hu_window", type=float, nargs=2, default=list(HU_WINDOW), metavar=("LOW", "HIGH"),
               help="CT: the HU window scaled to [0, 1]")
    add_option(parser, "percentiles", type=float, nargs=2, default=list(PERCENTILES), metavar=("LOW", "HIGH"),
               help="MR and other scanners: each volume's percentile range scaled to [0, 1]")
    args = parser.parse_args(argv)
    out = args.out or args.root / "datalist.json"
    try:
        datalist = build(args.root, val_cases=args.val_cases, test_fraction=args.test_fraction, seed=args.seed,
                         hu_window=args.hu_window, percentiles=args.percentiles)
    except InputError as err:
        parser.exit(1, f"error: {err}\n")
    write_datalist(datalist, out, args.root)
    classes = ", ".join(datalist["labels"].values())
    counts = ", ".join(f"{len(datalist[s])} {s}" for s in ("training", "validation", "test"))
    print(f"wrote {out}: {len(datalist['labels'])} classes ({classes}); {counts}")


def main(argv: list[str] | None = None) -> None:
    convert("python -m data_prep.decathlon", __doc__.splitlines()[0], decathlon_datalist, argv)


if __name__ == "__main__":
    main()

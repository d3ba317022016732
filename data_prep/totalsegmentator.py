"""TotalSegmentator data set -> MONAI datalist JSON with the structures you pick, merged into one label map.

``python -m data_prep.totalsegmentator --root DIR --out OUT/datalist.json (--structures a,b,... | --preset synapse)
[--val_cases 2] [--test_fraction 0.2] [--seed 0] [--hu_window -125 275]``

Per subject the chosen ``segmentations/<structure>.nii.gz`` masks become ``OUT/labels/<subject>.nii.gz``
(class k = the k-th structure; overlapping masks are refused). The split is ``meta.csv``'s when present.
"""

from __future__ import annotations

from pathlib import Path

from medsam_ft.arguments import add_option, argument_parser
from medsam_ft.data.datalist import write_datalist
from medsam_ft.data.totalsegmentator import PRESETS, totalsegmentator_datalist
from medsam_ft.io import InputError
from medsam_ft.transforms import HU_WINDOW


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser("python -m data_prep.totalsegmentator", __doc__.splitlines()[0])
    add_option(parser, "root", type=Path, required=True, help="the TotalSegmentator folder (subject folders, meta.csv)")
    add_option(parser, "out", type=Path, required=True, help="datalist JSON to write; merged labels go beside it")
    chosen = parser.add_mutually_exclusive_group(required=True)
    add_option(chosen, "structures", help="comma-separated structure names, in class order")
    add_option(chosen, "preset", choices=sorted(PRESETS), help="a named list of structures (synapse: its 8 organs)")
    add_option(parser, "val_cases", type=int, default=2, help="without meta.csv: subjects held out for validation")
    add_option(parser, "test_fraction", type=float, default=0.2, help="without meta.csv: share held out for testing")
    add_option(parser, "seed", type=int, default=0, help="seed of the split without meta.csv")
    add_option(parser, "hu_window", type=float, nargs=2, default=list(HU_WINDOW), metavar=("LOW", "HIGH"),
               help="the HU window scaled to [0, 1]")
    args = parser.parse_args(argv)
    structures = PRESETS[args.preset] if args.preset else [s.strip() for s in args.structures.split(",") if s.strip()]
    try:
        datalist = totalsegmentator_datalist(args.root, args.out.parent, structures, val_cases=args.val_cases,
                                             test_fraction=args.test_fraction, seed=args.seed, hu_window=args.hu_window)
    except InputError as err:
        parser.exit(1, f"error: {err}\n")
    write_datalist(datalist, args.out, args.out.parent)
    counts = ", ".join(f"{len(datalist[s])} {s}" for s in ("training", "validation", "test"))
    print(f"wrote {args.out}: {len(structures)} structures ({', '.join(structures)}); {counts}")


if __name__ == "__main__":
    main()

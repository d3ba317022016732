"""Raw Synapse/BTCV layout -> MONAI datalist JSON with the TransUNet split (and optionally the TransUNet layout).

``python -m data_prep.synapse --raw DIR --out DIR/datalist.json [--val_cases 2 --seed 0] [--transunet OUTDIR]``

The datalist holds ``training`` / ``validation`` / ``test`` lists of ``{"image", "label", "case"}``
(paths relative to the datalist's folder when it lies inside ``--raw``), the 8-organ label map,
class names and the HU window. ``--transunet OUTDIR`` also writes ``OUTDIR/train_npz`` (every
slice of the training and validation cases), ``OUTDIR/test_vol_h5`` and ``OUTDIR/lists/lists_Synapse``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medsam_ft.arguments import add_option, argument_parser
from medsam_ft.data import load_volumes, make_datalist, read_datalist, write_datalist, write_h5_volume, write_npz_slice
from medsam_ft.data.datasets import TRANSUNET_META
from medsam_ft.io import InputError
from medsam_ft.transforms import volume_transforms


def write_transunet_layout(datalist: dict[str, Any], out_dir: str | os.PathLike) -> None:
    """Write the TransUNet layout for a datalist whose paths are absolute (see ``read_datalist``)."""
    out_dir = Path(out_dir)
    transform = volume_transforms(
        datalist["intensity"], {int(k): v for k, v in datalist["label_map"].items()}, datalist["allowed_label_ids"]
    )
    train_names: list[str] = []
    for item in datalist["training"] + datalist["validation"]:
        volume = load_volumes([item], transform)[0]
        image, label = volume["image"][0].numpy(), volume["label"][0].numpy()
        for z in range(image.shape[-1]):
            name = f"case{item['case']:04d}_slice{z:03d}"
            write_npz_slice(out_dir / "train_npz" / f"{name}.npz", image[..., z], label[..., z])
            train_names.append(name)
    test_names: list[str] = []
    for item in datalist["test"]:
        volume = load_volumes([item], transform)[0]
        name = f"case{item['case']:04d}"
        write_h5_volume(out_dir / "test_vol_h5" / f"{name}.npy.h5", volume["image"][0].numpy(), volume["label"][0].numpy())
        test_names.append(name)
    lists = out_dir / "lists" / "lists_Synapse"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.txt").write_text("".join(f"{n}\n" for n in train_names))
    (lists / "test_vol.txt").write_text("".join(f"{n}\n" for n in test_names))
    (out_dir / TRANSUNET_META).write_text(json.dumps({"axcodes": "RAS"}) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser("python -m data_prep.synapse", __doc__.splitlines()[0])
    add_option(parser, "raw", type=Path, required=True, help="folder with img/imgNNNN.nii.gz and label/labelNNNN.nii.gz")
    add_option(parser, "out", type=Path, required=True, help="datalist JSON to write (e.g. RAW/datalist.json)")
    add_option(parser, "val_cases", type=int, default=2,
                        help="validation cases taken out of the training cases (0: none, SAMed's protocol)")
    add_option(parser, "seed", type=int, default=0, help="seed choosing the validation cases")
    add_option(parser, "transunet", type=Path, default=None, help="also write the TransUNet npz/h5 layout here")
    args = parser.parse_args(argv)

    try:
        datalist = make_datalist(args.raw, val_cases=args.val_cases, seed=args.seed)
    except InputError as err:
        parser.exit(1, f"error: {err}\n")
    write_datalist(datalist, args.out, args.raw)
    counts = ", ".join(f"{len(datalist[s])} {s}" for s in ("training", "validation", "test"))
    print(f"wrote {args.out}: {counts}")
    if args.transunet is not None:
        write_transunet_layout(read_datalist(args.out), args.transunet)
        print(f"wrote the TransUNet layout to {args.transunet}")


if __name__ == "__main__":
    main()

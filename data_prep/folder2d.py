"""A folder of 2D images and masks -> MONAI datalist JSON (splits, class names, mask format).

``python -m data_prep.folder2d --root DIR [--out DIR/datalist.json] [--val_fraction 0.2 --seed 0] [--palette palette.json]``

Layouts: ``DIR/images`` + ``DIR/masks`` (names set by ``--images`` / ``--masks``), or split folders
``DIR/{train,val,test}/images`` + ``.../masks``. Images and masks pair by file stem (a mask may add
``--mask_suffix``, e.g. ``_mask``); any of png, jpg, jpeg, tif, tiff, bmp. Splits: the split folders,
else the user's lists (``--train_list`` / ``--val_list`` / ``--test_list``, one name per line; images
in no list train, unless a training list is given); a training set without validation gives
``--val_fraction`` of its images, drawn with ``--seed``. Every file is read once and checked (sizes, mask values,
palette colours).

``--unstack IMAGES.tif MASKS.tif`` first writes the frames of two multi-page TIFF stacks (ISBI 2012's
``train-volume.tif`` / ``train-labels.tif``) as ``DIR/images/NAME_NN.png`` and ``DIR/masks/NAME_NN.png``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from medsam_ft.arguments import add_option, argument_parser
from medsam_ft.data.datalist import write_datalist
from medsam_ft.data.folder2d import (
    assign_splits,
    check_sizes,
    find_split_folders,
    pair_files,
    read_name_list,
    scan_masks,
)
from medsam_ft.io import InputError, atomic_path


def unstack(images_tif: Path, masks_tif: Path, root: Path, images: str = "images", masks: str = "masks") -> int:
    """Write the frames of two multi-page TIFFs as PNG pairs ``root/images/STEM_NN.png``; returns the count."""
    frames = []
    for path in (images_tif, masks_tif):
        try:
            with Image.open(path) as stack:
                frames.append([np.asarray(frame) for frame in ImageSequence.Iterator(stack)])
        except (UnidentifiedImageError, OSError) as err:
            raise InputError(path, f"not a readable TIFF stack ({type(err).__name__}: {err})") from None
    if len(frames[0]) != len(frames[1]):
        raise InputError(masks_tif, f"has {len(frames[1])} frames, but {images_tif} has {len(frames[0])}")
    stem = images_tif.name.split(".")[0]
    for i, (image, mask) in enumerate(zip(*frames)):
        for folder, pixels in ((images, image), (masks, mask)):
            with atomic_path(root / folder / f"{stem}_{i:02d}.png") as tmp:
                Image.fromarray(pixels).save(tmp, format="PNG")
    return len(frames[0])


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser("python -m data_prep.folder2d", __doc__.splitlines()[0])
    add_option(parser, "root", type=Path, required=True, help="data set folder (images/ + masks/, or split folders)")
    add_option(parser, "out", type=Path, default=None, help="datalist JSON to write (default ROOT/datalist.json)")
    add_option(parser, "images", default="images", help="image folder name")
    add_option(parser, "masks", default="masks", help="mask folder name")
    add_option(parser, "mask_suffix", default="", help="mask stem = image stem + this (e.g. _mask)")
    add_option(parser, "mask_mode", choices=("auto", "ids", "binary", "palette"), default="auto",
                        help="class ids, binary 0/255 (thresholded), or RGB palette "
                             "(auto: binary for 0/255 or JPEG masks, else ids)")
    add_option(parser, "palette", type=Path, default=None,
                        help="palette JSON {'classes': {name: [r,g,b]}, 'ignore': [[r,g,b]]} or CSV name,r,g,b")
    add_option(parser, "ignore_value", type=int, default=None, help="mask value skipped by losses and metrics (e.g. 255)")
    add_option(parser, "num_classes", type=int, default=None,
                        help="number of classes incl. background (ids masks; default: largest id + 1)")
    add_option(parser, "class_names", default=None, help="comma-separated class names, background first")
    add_option(parser, "val_fraction", type=float, default=0.2, help="fraction of training images drawn for validation")
    add_option(parser, "seed", type=int, default=0, help="seed of the validation draw")
    for split in ("train", "val", "test"):
        add_option(parser, f"{split}_list", type=Path, default=None, help=f"file naming the {split} images, one per line")
    add_option(parser, "unstack", type=Path, nargs=2, metavar=("IMAGES_TIF", "MASKS_TIF"), default=None,
                        help="first write the frames of two multi-page TIFFs into ROOT/images and ROOT/masks")
    add_option(parser, "name", default=None, help="data set name stored in the datalist")
    args = parser.parse_args(argv)

    if args.unstack is not None:
        count = unstack(*args.unstack, args.root, args.images, args.masks)
        print(f"wrote {count} image/mask pairs to {args.root / args.images} and {args.root / args.masks}")
    folders = find_split_folders(args.root, args.images, args.masks)
    found = {split: pair_files(images, masks, args.mask_suffix) for split, (images, masks) in folders.items()}
    pairs = [p for items in found.values() for p in items]
    for pair in pairs:
        check_sizes(pair["image"], pair["label"])

    if (args.palette is not None) != (args.mask_mode == "palette") and args.mask_mode != "auto":
        parser.error("--palette goes with --mask_mode palette (or auto), and palette masks need --palette")
    mask_format = scan_masks([p["label"] for p in pairs], args.mask_mode, args.ignore_value, args.num_classes, args.palette)

    if args.class_names is not None:
        class_names = [n.strip() for n in args.class_names.split(",")]
    elif mask_format.palette:
        class_names = list(mask_format.palette)
    elif mask_format.mode == "binary":
        class_names = ["background", "foreground"]
    else:
        class_names = ["background"] + [f"class_{i}" for i in range(1, mask_format.num_classes)]
    if len(class_names) != mask_format.num_classes:
        parser.error(f"{len(class_names)} class names for {mask_format.num_classes} classes ({mask_format.mode} masks)")

    if "all" in found:
        named = (("training", args.train_list), ("validation", args.val_list), ("test", args.test_list))
        list_files = {s: f for s, f in named if f}
        splits = assign_splits(found["all"], {s: read_name_list(f) for s, f in list_files.items()},
                               args.val_fraction, args.seed, list_files)
    else:
        splits = {split: found.get(split, []) for split in ("training", "validation", "test")}
        if not splits["validation"]:
            drawn = assign_splits(splits["training"], {}, args.val_fraction, args.seed)
            splits |= {k: v for k, v in drawn.items() if k != "test"}
    if not splits["training"]:
        raise InputError(args.root, "no training images")

    root = args.root.resolve()
    out = args.out if args.out is not None else args.root / "datalist.json"
    datalist = {
        "name": args.name or root.name,
        "format": "folder2d",
        "labels": {str(i): name for i, name in enumerate(class_names)},
        "mask_format": mask_format.to_json(),
        **{split: [{"image": os.path.relpath(Path(p["image"]).resolve(), root),
                    "label": os.path.relpath(Path(p["label"]).resolve(), root), "name": p["name"]} for p in items]
           for split, items in splits.items()},
    }
    write_datalist(datalist, out, root)
    counts = ", ".join(f"{len(splits[s])} {s}" for s in ("training", "validation", "test"))
    print(f"wrote {out}: {mask_format.mode} masks, {len(class_names)} classes ({', '.join(class_names)}); {counts}")


if __name__ == "__main__":
    main()

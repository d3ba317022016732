"""2D folder data sets: pairing, mask formats, image scaling, bad input, splits, the datalist CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from data_prep.folder2d import main as folder2d_main
from data_prep.shapes2d import generate, make_sample
from medsam_ft.data import (
    LoadImage2Dd,
    MaskFormat,
    check_num_classes,
    read_dataset_spec,
    read_image,
    read_mask,
    slice_dataset,
)
from medsam_ft.data.folder2d import check_sizes, pair_files, read_palette
from medsam_ft.io import InputError
from medsam_ft.transforms import IGNORE_INDEX, ThreeChanneld

PALETTE = {"classes": {"void_free_background": [0, 0, 0], "road": [128, 64, 128], "car": [64, 0, 128]},
           "ignore": [[255, 255, 255]]}


def _save(path, pixels, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)
    return path


def _ids_folder(root, count=6, seed=0):
    generate(root, count=count, seed=seed)
    return root


def test_pairs_by_stem_not_sort_order(tmp_path):
    # masks carry a value that identifies their image; extensions differ so sort orders differ
    names = {"b10": (".png", ".bmp"), "b9": (".jpg", ".png"), "a": (".tif", ".png")}
    for value, (stem, (image_ext, mask_ext)) in enumerate(names.items(), start=1):
        _save(tmp_path / "images" / f"{stem}{image_ext}", np.full((8, 10, 3), value * 20, np.uint8))
        _save(tmp_path / "masks" / f"{stem}_mask{mask_ext}", np.full((8, 10), value, np.uint8))
    pairs = pair_files(tmp_path / "images", tmp_path / "masks", mask_suffix="_mask")
    assert sorted(p["name"] for p in pairs) == ["a", "b10", "b9"]
    load = LoadImage2Dd(MaskFormat("ids", num_classes=4))
    for pair in pairs:
        item = load(pair)
        value = int(item["label"].max())
        assert int(round(float(item["image"].max()) * 255)) == value * 20
        assert item["label"].meta["filename_or_obj"] == pair["label"]


def test_image_without_mask_and_mask_without_image(tmp_path):
    _save(tmp_path / "images" / "a.png", np.zeros((4, 4), np.uint8))
    _save(tmp_path / "masks" / "b.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match=r"a\.png: has no mask a\.\*"):
        pair_files(tmp_path / "images", tmp_path / "masks")
    _save(tmp_path / "masks" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match=r"b\.png: is a mask without an image"):
        pair_files(tmp_path / "images", tmp_path / "masks")
    _save(tmp_path / "images" / "a.jpg", np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="same stem"):
        pair_files(tmp_path / "images", tmp_path / "masks")


def test_size_mismatch_and_unreadable_files(tmp_path):
    image = _save(tmp_path / "i.png", np.zeros((10, 12, 3), np.uint8))
    mask = _save(tmp_path / "m.png", np.zeros((10, 11), np.uint8))
    with pytest.raises(InputError, match=r"m\.png: mask size 11x10 differs from its image's 12x10"):
        check_sizes(image, mask)
    with pytest.raises(InputError, match=r"m\.png: mask size 11x10 differs"):
        LoadImage2Dd(MaskFormat())({"image": str(image), "label": str(mask)})
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    with pytest.raises(InputError, match=r"broken\.png: not a readable image file"):
        read_image(broken)
    stack = tmp_path / "stack.tif"
    second_page = Image.fromarray(np.ones((4, 4), np.uint8))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(stack, save_all=True, append_images=[second_page])
    with pytest.raises(InputError, match="holds 2 frames.*--unstack"):
        read_image(stack)


def test_images_grey_rgba_and_16_bit(tmp_path):
    grey = read_image(_save(tmp_path / "g.png", np.array([[0, 255], [51, 102]], np.uint8)))
    assert grey.shape == (1, 2, 2) and grey.dtype == np.float32
    np.testing.assert_allclose(grey[0], [[0, 1], [0.2, 0.4]], atol=1e-6)
    three = ThreeChanneld("image")({"image": torch.from_numpy(grey)})["image"]
    assert three.shape == (3, 2, 2) and torch.equal(three[0], three[2])
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 7
    assert read_image(_save(tmp_path / "a.png", rgba)).shape == (3, 3, 4)
    # a 12-bit microscopy image in a 16-bit file: scaled by its own range, not by 65535
    deep = np.linspace(1000, 4000, 64 * 64).reshape(64, 64).astype(np.uint16)
    scaled = read_image(_save(tmp_path / "d.tif", deep))
    assert scaled.shape == (1, 64, 64) and scaled.min() == 0.0 and scaled.max() == 1.0
    assert 0.45 < float(scaled[0, 32, 0]) < 0.55


def test_mask_formats(tmp_path):
    ids = np.array([[0, 1, 2], [255, 1, 0]], np.uint8)
    path = _save(tmp_path / "ids.png", ids)
    label = read_mask(path, MaskFormat("ids", num_classes=3, ignore_value=255))
    assert label.shape == (1, 2, 3) and label[0, 1, 0] == IGNORE_INDEX and label[0, 0, 2] == 2
    with pytest.raises(InputError, match=r"ids\.png: mask values \[255\] are not class ids 0\.\.2"):
        read_mask(path, MaskFormat("ids", num_classes=3))
    # PASCAL VOC style palette PNG: the indices are the class ids
    voc = Image.fromarray(ids, mode="P")
    voc.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
    voc.save(tmp_path / "voc.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "voc.png", MaskFormat("ids", 3, 255))[0], label[0])
    # binary JPEG masks (Kvasir-SEG): RGB, values scattered around 0 and 255
    truth = np.zeros((64, 64), np.uint8)
    truth[16:48, 20:40] = 1
    jpeg = _save(tmp_path / "k.jpg", np.repeat(truth[..., None] * 255, 3, axis=-1), quality=75)
    assert len(np.unique(np.asarray(Image.open(jpeg)))) > 2
    binary = read_mask(jpeg, MaskFormat("binary"))[0]
    assert (binary != truth).mean() < 0.01
    # RGB palette (CamVid style), with an ignore colour; JSON and CSV palettes
    colours = np.array([[[0, 0, 0], [128, 64, 128]], [[64, 0, 128], [255, 255, 255]]], np.uint8)
    rgb = _save(tmp_path / "rgb.png", colours)
    palette_json = tmp_path / "palette.json"
    palette_json.write_text(json.dumps(PALETTE))
    classes, ignore = read_palette(palette_json)
    fmt = MaskFormat("palette", num_classes=3, palette=classes, ignore_colors=ignore)
    np.testing.assert_array_equal(read_mask(rgb, fmt)[0], [[0, 1], [2, IGNORE_INDEX]])
    csv_palette = tmp_path / "class_dict.csv"
    csv_palette.write_text("name,r,g,b\nsky,0,0,0\nroad,128,64,128\ncar,64,0,128\n")
    classes_csv, _ = read_palette(csv_palette)
    assert list(classes_csv) == ["sky", "road", "car"]
    with pytest.raises(InputError, match=r"rgb\.png: 1 colours are not in the palette, e.g. \[\[255, 255, 255\]\]"):
        read_mask(rgb, MaskFormat("palette", num_classes=3, palette=classes_csv))
    with pytest.raises(InputError, match=r"rgb\.png: is a colour mask.*--palette"):
        read_mask(rgb, MaskFormat("ids", num_classes=3))


def test_datalist_cli_detects_formats_and_keeps_user_splits(tmp_path):
    root = _ids_folder(tmp_path / "shapes", count=10)
    lists = {"train": ["shape_000", "shape_001", "shape_002", "shape_003"], "val": ["shape_004.png"], "test": ["shape_005"]}
    for split, names in lists.items():
        (tmp_path / f"{split}.txt").write_text("\n".join(names) + "\n")
    folder2d_main(["--root", str(root), "--class_names", "background,disc,rectangle",
                   *[a for s in lists for a in (f"--{s}-list", str(tmp_path / f"{s}.txt"))]])
    datalist = json.loads((root / "datalist.json").read_text())
    assert datalist["format"] == "folder2d" and datalist["mask_format"]["mode"] == "ids"
    assert datalist["labels"] == {"0": "background", "1": "disc", "2": "rectangle"}
    assert [i["name"] for i in datalist["training"]] == lists["train"]  # unlisted images left out
    assert [i["name"] for i in datalist["validation"]] == ["shape_004"]
    assert datalist["training"][0]["image"] == "images/shape_000.png"  # relative: the folder can move
    # no lists: a seeded validation fraction, the same every time
    out_a, out_b = tmp_path / "a.json", tmp_path / "b.json"
    for out in (out_a, out_b):
        folder2d_main(["--root", str(root), "--out", str(out), "--val_fraction", "0.3", "--seed", "3"])
    a = json.loads(out_a.read_text())
    assert a == json.loads(out_b.read_text()) and len(a["validation"]) == 3 and len(a["training"]) == 7
    assert a["labels"]["2"] == "class_2"
    assert all(i["image"].startswith("shapes/images/shape_") for i in a["training"])  # relative to a.json
    datalist["mask_format"]["mode"] = "rgb"
    (root / "datalist.json").write_text(json.dumps(datalist))
    with pytest.raises(InputError, match=r"datalist\.json: has no valid mask_format \(ValueError: unknown mask mode 'rgb'"):
        read_dataset_spec(root)


def test_datalist_cli_binary_jpeg_split_folders_and_unstack(tmp_path):
    # Kvasir-SEG-like JPEG masks in split folders
    for split, count in (("train", 4), ("val", 2)):
        for i in range(count):
            image, mask = make_sample(0, i, classes=2)
            _save(tmp_path / "kvasir" / split / "images" / f"{split}{i}.jpg", image)
            _save(tmp_path / "kvasir" / split / "masks" / f"{split}{i}.jpg", np.repeat(mask[..., None] * 255, 3, -1))
    folder2d_main(["--root", str(tmp_path / "kvasir"), "--class_names", "background,polyp"])
    spec = read_dataset_spec(tmp_path / "kvasir")
    assert spec.layout == "folder2d" and spec.mask_format.mode == "binary" and spec.class_names == ["background", "polyp"]
    assert len(spec.splits["training"]) == 4 and len(spec.splits["validation"]) == 2
    sample = slice_dataset(spec, image_size=32, augment="flip_rotate")[0]
    assert sample["image"].shape == (3, 32, 32) and sample["label"].shape == (1, 32, 32)
    assert set(sample["label"].unique().tolist()) <= {0, 1}
    check_num_classes(spec, 2)
    with pytest.raises(InputError, match=r"has 2 classes \['background', 'polyp'\], but num_classes is 3"):
        check_num_classes(spec, 3)
    # ISBI 2012: multi-page TIFF stacks
    frames = [Image.fromarray(np.full((16, 16), 10 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "train-volume.tif", save_all=True, append_images=frames[1:])
    labels = [Image.fromarray(np.where(np.eye(16, dtype=bool), 0, 255).astype(np.uint8)) for _ in range(3)]
    labels[0].save(tmp_path / "train-labels.tif", save_all=True, append_images=labels[1:])
    (tmp_path / "isbi_test.txt").write_text("train-volume_02\n")
    folder2d_main(["--unstack", str(tmp_path / "train-volume.tif"), str(tmp_path / "train-labels.tif"),
                   "--root", str(tmp_path / "isbi"), "--class_names", "membrane,cell", "--val_fraction", "0.5",
                   "--test_list", str(tmp_path / "isbi_test.txt")])
    isbi = read_dataset_spec(tmp_path / "isbi")
    assert isbi.mask_format.mode == "binary"
    assert [len(isbi.splits[s]) for s in ("training", "validation", "test")] == [1, 1, 1]
    assert isbi.splits["test"][0]["name"] == "train-volume_02"
    assert sorted(p.name for p in (tmp_path / "isbi" / "images").iterdir()) == [f"train-volume_0{i}.png" for i in range(3)]


def test_datalist_cli_refuses_bad_masks(tmp_path):
    root = tmp_path / "camvid"
    _save(root / "images" / "f1.png", np.zeros((2, 2, 3), np.uint8))
    _save(root / "masks" / "f1.png", np.array([[[0, 0, 0], [1, 2, 3]], [[0, 0, 0], [0, 0, 0]]], np.uint8))
    (tmp_path / "palette.json").write_text(json.dumps(PALETTE))
    with pytest.raises(InputError, match=r"masks/f1\.png: 1 colours are not in the palette"):
        folder2d_main(["--root", str(root), "--palette", str(tmp_path / "palette.json")])
    assert not (root / "datalist.json").exists()
    with pytest.raises(InputError, match=r"masks/f1\.png: is a colour mask.*--palette"):
        folder2d_main(["--root", str(root)])
    _save(root / "masks" / "f1.png", np.array([[0, 1], [2, 3]], np.uint8))
    with pytest.raises(InputError, match=r"masks/f1\.png: mask values \[3\] are not class ids 0\.\.2"):
        folder2d_main(["--root", str(root), "--num_classes", "3"])
    assert not (root / "datalist.json").exists()


def test_random_crops_pad_small_images_and_keep_ignore(tmp_path):
    _save(tmp_path / "images" / "small.png", np.full((20, 30, 3), 200, np.uint8))
    _save(tmp_path / "masks" / "small.png", np.full((20, 30), 255, np.uint8))
    folder2d_main(["--root", str(tmp_path), "--mask_mode", "ids", "--num_classes", "2", "--ignore_value", "255",
                   "--val_fraction", "0"])
    spec = read_dataset_spec(tmp_path)
    sample = slice_dataset(spec, image_size=16, augment="none", crop_size=40)[0]
    assert sample["image"].shape == (3, 16, 16)
    # padding is background (0), the image's own pixels keep the ignore value through crop and resize
    assert set(sample["label"].unique().tolist()) == {0, IGNORE_INDEX}
    # GSAM: the image resized to 64 first, then a 16 px crop of it is the sample, not resized again
    gsam_sample = slice_dataset(spec, image_size=64, augment="none", crop_size=16, crop_after_resize=True)[0]
    assert gsam_sample["image"].shape == (3, 16, 16) and gsam_sample["label"].shape == (1, 16, 16)
    assert gsam_sample["label"].unique().tolist() == [IGNORE_INDEX]  # 64 x 64 resize of 20 x 30: no padding left

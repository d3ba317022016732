import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose

from data_prep.phantom import SYNAPSE_CASE_IDS, make_case
from data_prep.synapse import main as synapse_main
from medsam_ft.data import (
    SYNAPSE_CLASS_NAMES,
    SYNAPSE_LABEL_MAP,
    LoadTransUNetd,
    VolumeSliceDataset,
    load_volumes,
    make_datalist,
    read_datalist,
    read_dataset_spec,
    read_h5_volume,
    read_npz_slice,
    slice_dataset,
    write_npz_slice,
)
from medsam_ft.io import InputError, write_nifti
from medsam_ft.reports import case_name
from medsam_ft.transforms import augmentation, samed_augmentation, slice_transforms, volume_transforms

ROOT = Path(__file__).resolve().parents[1]


def _synapse_transform():
    return volume_transforms((-125, 275), SYNAPSE_LABEL_MAP, range(14))


def test_phantom_is_deterministic_and_plausible():
    image, label, affine = make_case(5, seed=0)
    again, again_label, _ = make_case(5, seed=0)
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(label, again_label)
    assert not np.array_equal(make_case(5, seed=1)[0], image)
    assert image.dtype == np.int16 and label.dtype == np.uint8
    x, y, z = image.shape
    assert x == y and 160 <= x <= 256 and 24 <= z <= 64
    spacing = np.abs(np.diag(affine)[:3])
    assert 0.7 <= spacing[0] <= 0.9 and 2.5 <= spacing[2] <= 5.0
    assert not np.allclose(affine, np.eye(4))
    assert set(SYNAPSE_LABEL_MAP) <= set(np.unique(label).tolist())  # all 8 organs present
    # several organs close in HU: liver, spleen and pancreas means within 30 HU of each other
    means = {k: image[label == k].mean() for k in (6, 1, 11)}
    assert max(means.values()) - min(means.values()) < 30
    assert image[label == 8].mean() > 150  # contrast-enhanced aorta
    assert SYNAPSE_CASE_IDS[:10] == tuple(range(1, 11)) and SYNAPSE_CASE_IDS[10] == 21


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    write_nifti(tmp_path / "a.nii.gz", np.zeros((2, 2, 2), dtype=np.uint8), np.eye(4))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.nii.gz").stat().st_mode & 0o777 == 0o666 & ~umask


def test_phantom_cli_writes_synapse_layout(tmp_path):
    subprocess.run([sys.executable, "-m", "data_prep.phantom", "--out", str(tmp_path), "--cases", "2", "--seed", "3"],
                   check=True, cwd=ROOT)
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == ["img0001.nii.gz", "img0002.nii.gz"]
    image = nib.load(tmp_path / "img" / "img0002.nii.gz")
    label = nib.load(tmp_path / "label" / "label0002.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), make_case(2, seed=3)[0])
    np.testing.assert_allclose(image.affine, label.affine)


def test_datalist_transunet_split(phantom_dir, tmp_path):
    datalist = make_datalist(phantom_dir, val_cases=1, seed=0)
    assert [i["case"] for i in datalist["test"]] == [1, 2, 3, 4]
    assert len(datalist["training"]) == 1 and len(datalist["validation"]) == 1
    assert {i["case"] for i in datalist["training"] + datalist["validation"]} == {5, 6}
    assert datalist["labels"]["1"] == "spleen" and datalist["labels"]["8"] == "pancreas"
    assert datalist["label_map"] == {"1": 1, "2": 2, "3": 3, "4": 4, "6": 5, "7": 6, "8": 7, "11": 8}
    assert datalist["intensity"] == {"kind": "window", "window": [-125.0, 275.0]}
    out = tmp_path / "lists" / "datalist.json"
    synapse_main(["--raw", str(phantom_dir), "--out", str(out), "--val_cases", "1"])
    on_disk = json.loads(out.read_text())
    assert not Path(on_disk["test"][0]["image"]).is_absolute()
    resolved = read_datalist(out)
    assert Path(resolved["test"][0]["image"]).samefile(phantom_dir / "img" / "img0001.nii.gz")


def test_volume_transforms_window_remap_orientation(phantom_dir):
    volume = load_volumes([{"image": str(phantom_dir / "img" / "img0005.nii.gz"),
                            "label": str(phantom_dir / "label" / "label0005.nii.gz")}], _synapse_transform())[0]
    raw_image, raw_label, affine = make_case(5, seed=0)
    # the phantom stores axes 0 and 1 flipped (negative spacing); RAS orientation flips them back
    assert affine[0, 0] < 0 and affine[1, 1] < 0
    expected = np.clip((raw_image[::-1, ::-1].astype(np.float32) + 125) / 400, 0, 1)
    np.testing.assert_allclose(volume["image"][0].numpy(), expected, atol=1e-6)
    lut = np.zeros(14, dtype=np.int64)
    for raw, new in SYNAPSE_LABEL_MAP.items():
        lut[raw] = new
    np.testing.assert_array_equal(volume["label"][0].numpy(), lut[raw_label[::-1, ::-1]])
    assert volume["label"].max() == 8 and len(SYNAPSE_CLASS_NAMES) == 9


def _write_pair(root, image, label, affine=np.diag([-0.8, -0.8, 3.0, 1.0])):
    write_nifti(root / "img" / "img0001.nii.gz", image, affine)
    write_nifti(root / "label" / "label0001.nii.gz", label, affine)
    return {"image": str(root / "img" / "img0001.nii.gz"), "label": str(root / "label" / "label0001.nii.gz")}


def test_bad_data_names_the_file(tmp_path):
    image = np.zeros((16, 16, 4), dtype=np.float32)
    label = np.zeros((16, 16, 4), dtype=np.uint8)
    transform = _synapse_transform()

    (tmp_path / "a" / "img").mkdir(parents=True)
    write_nifti(tmp_path / "a" / "img" / "img0001.nii.gz", image, np.eye(4))
    with pytest.raises(InputError, match=r"img0001.nii.gz: has no label file"):
        make_datalist(tmp_path / "a")

    item = _write_pair(tmp_path / "b", image, np.zeros((16, 12, 4), dtype=np.uint8))
    with pytest.raises(InputError, match=r"label0001.nii.gz: label shape \(16, 12, 4\) differs"):
        load_volumes([item], transform)
    with pytest.raises(InputError, match=r"label shape"):
        make_datalist(tmp_path / "b", val_cases=0)

    bad_label = label.copy()
    bad_label[0, 0, 0] = 20
    item = _write_pair(tmp_path / "c", image, bad_label)
    with pytest.raises(InputError, match=r"label0001.nii.gz: label ids \[20\] outside the expected"):
        load_volumes([item], transform)

    nan_image = image.copy()
    nan_image[1, 2, 3] = np.nan
    item = _write_pair(tmp_path / "d", nan_image, label)
    with pytest.raises(InputError, match=r"img0001.nii.gz: 1 voxels are NaN or infinite"):
        load_volumes([item], transform)

    item = _write_pair(tmp_path / "e", image, label)
    Path(item["image"]).write_bytes(b"not a nifti file at all")
    with pytest.raises(InputError, match=r"img0001.nii.gz: could not be loaded"):
        load_volumes([item], transform)
    with pytest.raises(InputError, match=r"img0001.nii.gz: not a readable NIfTI image"):
        make_datalist(tmp_path / "e", val_cases=0)


def test_truncated_volume_is_refused_by_name(tmp_path):
    label = np.zeros((16, 16, 4), dtype=np.uint8)
    item = _write_pair(tmp_path, np.random.rand(16, 16, 4).astype(np.float32), label)
    data = Path(item["image"]).read_bytes()
    Path(item["image"]).write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"img0001.nii.gz: could not be loaded"):
        load_volumes([item], _synapse_transform())
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == ["img0001.nii.gz"]  # no temp files left


def test_every_slice_becomes_a_training_sample(phantom_dir):
    items = [{"image": str(phantom_dir / "img" / f"img000{c}.nii.gz"),
              "label": str(phantom_dir / "label" / f"label000{c}.nii.gz"), "case": c} for c in (5, 6)]
    volumes = load_volumes(items, _synapse_transform())
    dataset = VolumeSliceDataset(volumes, slice_transforms(image_size=64, augment="samed"))
    assert len(dataset) == sum(v["image"].shape[-1] for v in volumes)
    sample = dataset[len(dataset) - 1]
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
    assert sample["label"].shape == (1, 64, 64) and sample["label"].dtype == torch.long
    assert sample["case"] == 6 and sample["slice"] == volumes[1]["image"].shape[-1] - 1
    assert 0.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    assert torch.equal(sample["image"][0], sample["image"][2])  # grey -> 3 identical channels
    plain = VolumeSliceDataset(volumes)[3]
    assert torch.equal(plain["image"], volumes[0]["image"][..., 3])


def test_samed_augmentation_keeps_image_and_label_aligned():
    label = torch.zeros(1, 32, 32)
    label[0, 4:12, 6:20] = 3
    label[0, 20:28, 2:9] = 5
    aug = samed_augmentation(image_mode="nearest")
    aug.set_random_state(0)
    seen_changed = 0
    for _ in range(40):
        out = aug({"image": label.clone(), "label": label.clone()})
        assert torch.equal(torch.as_tensor(out["image"]), torch.as_tensor(out["label"]))
        assert set(torch.unique(torch.as_tensor(out["label"])).tolist()) <= {0.0, 3.0, 5.0}
        seen_changed += not torch.equal(torch.as_tensor(out["label"]), label)
    assert 10 < seen_changed < 40  # about a quarter of the draws leave the slice unchanged


def test_samed_augmentation_draws_samed_distribution():
    """SAMed's augmentation as MONAI's OneOf: unchanged 1/4, each of the 4 mirror images 1/8 (rot90 k + flip),
    a small rotation 1/4, counted over 4000 draws on an image whose every pixel differs."""
    image = torch.arange(256, dtype=torch.float32).reshape(1, 16, 16)
    mirrors = [image.flip(-1).rot90(k, dims=(1, 2)) for k in range(4)]
    aug = samed_augmentation()
    aug.set_random_state(0)
    counts = {"unchanged": 0, "rotated": 0, **{f"mirror{k}": 0 for k in range(4)}}
    draws = 4000
    for _ in range(draws):
        out = torch.as_tensor(aug({"image": image.clone(), "label": image.clone()})["image"])
        match = [k for k, m in enumerate(mirrors) if torch.equal(out, m)]
        counts["unchanged" if torch.equal(out, image) else f"mirror{match[0]}" if match else "rotated"] += 1
    expected = {"unchanged": 0.25, "rotated": 0.25, **{f"mirror{k}": 0.125 for k in range(4)}}
    for outcome, share in expected.items():
        assert abs(counts[outcome] / draws - share) < 0.03, counts  # > 4 standard deviations


def test_2d_augmentations_keep_image_and_label_aligned():
    label = torch.zeros(1, 32, 32)
    label[0, 4:12, 6:20] = 3
    label[0, 20:28, 2:9] = 5
    flip = Compose(augmentation("flip"))
    flip.set_random_state(0)
    outcomes = set()
    for _ in range(20):
        out = torch.as_tensor(flip({"image": label.clone(), "label": label.clone()})["label"])
        assert torch.equal(out, label) or torch.equal(out, label.flip(-1))  # left-right only: the scene keeps its up
        outcomes.add(torch.equal(out, label))
    assert outcomes == {True, False}
    flip_rotate = Compose(augmentation("flip_rotate"))
    flip_rotate.set_random_state(1)
    for _ in range(20):
        out = flip_rotate({"image": label.repeat(3, 1, 1), "label": label.clone()})
        image, moved = torch.as_tensor(out["image"]), torch.as_tensor(out["label"])
        assert set(moved.unique().tolist()) <= {0.0, 3.0, 5.0}
        assert (image[0].round() == moved[0]).float().mean() > 0.9  # bilinear image and nearest label agree
    with pytest.raises(ValueError, match="unknown augmentation"):
        augmentation("mixup")


def test_transunet_layout_round_trip(phantom_dir, tmp_path):
    datalist_path = tmp_path / "datalist.json"
    out = tmp_path / "transunet"
    synapse_main(["--raw", str(phantom_dir), "--out", str(datalist_path), "--val_cases", "1", "--transunet", str(out)])
    datalist = read_datalist(datalist_path)
    test_item = datalist["test"][0]
    volume = load_volumes([test_item], _synapse_transform())[0]
    h5 = read_h5_volume(out / "test_vol_h5" / "case0001.npy.h5")
    torch.testing.assert_close(h5["image"], volume["image"].as_tensor().float())
    assert torch.equal(h5["label"], volume["label"].as_tensor().long())
    train_names = (out / "lists" / "lists_Synapse" / "train.txt").read_text().split()
    n_train_slices = sum(nib.load(i["image"]).shape[2] for i in datalist["training"] + datalist["validation"])
    assert len(train_names) == n_train_slices
    assert (out / "lists" / "lists_Synapse" / "test_vol.txt").read_text().split() == [
        "case0001", "case0002", "case0003", "case0004"]
    # an npz slice enters the same 2D chain as a NIfTI slice
    first = train_names[0]
    loaded = LoadTransUNetd()({"image": str(out / "train_npz" / f"{first}.npz")})
    sample = slice_transforms(image_size=32, augment="none")(loaded)
    assert sample["image"].shape == (3, 32, 32) and sample["label"].shape == (1, 32, 32)
    npz = read_npz_slice(out / "train_npz" / f"{first}.npz")
    case = int(first[4:8])
    raw_item = next(i for i in datalist["training"] + datalist["validation"] if i["case"] == case)
    raw_volume = load_volumes([raw_item], _synapse_transform())[0]
    torch.testing.assert_close(npz["image"], raw_volume["image"][..., 0].as_tensor().float())
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((4, 4)))
    with pytest.raises(InputError, match="bad.npz: not a TransUNet npz slice"):
        read_npz_slice(bad)
    # the layout says its orientation (RAS, as written); organ-free slices can be left out of training
    empty = "case0005_slice999"  # the phantoms have organs in every slice: add one without
    write_npz_slice(out / "train_npz" / f"{empty}.npz", np.zeros((8, 8)), np.zeros((8, 8)))
    (out / "lists" / "lists_Synapse" / "train.txt").write_text("\n".join(train_names + [empty]) + "\n")
    spec = read_dataset_spec(out, val_cases=0)
    assert spec.axcodes == "RAS" and (out / "transunet.json").is_file()
    assert len(slice_dataset(spec, None, augment="none", keep_empty=1.0)) == len(train_names) + 1
    kept = slice_dataset(spec, None, augment="none", keep_empty=0.0)
    assert len(kept) == len(train_names) and all(sample["label"].any() for sample in kept)
    with pytest.raises(InputError, match="oriented RAS"):
        read_dataset_spec(out, axcodes="LPS")


def test_case_names_in_metric_tables():
    assert case_name({}, {"filename_or_obj": "/d/img0003.nii.gz"}, 0) == "img0003"
    assert case_name({"image_path": "/d/test_vol_h5/case0022.npy.h5"}, {}, 0) == "case0022"  # TransUNet h5
    assert case_name({"case": torch.tensor(25)}, {}, 0) == "case0025"  # npz slices stacked into a volume
    assert case_name({}, {}, 4) == "case4"


def test_synapse_datalist_for_test_cases_only_and_impossible_splits(phantom_dir, tmp_path, capsys):
    only_test = tmp_path / "test_only"
    for sub in ("img", "label"):
        (only_test / sub).mkdir(parents=True)
        for case in (1, 2):
            name = f"{sub}{case:04d}.nii.gz"
            (only_test / sub / name).symlink_to(phantom_dir / sub / name)
    synapse_main(["--raw", str(only_test), "--out", str(only_test / "datalist.json")])
    listed = json.loads((only_test / "datalist.json").read_text())
    assert [len(listed[s]) for s in ("training", "validation", "test")] == [0, 0, 2]
    with pytest.raises(SystemExit) as exit_info:
        synapse_main(["--raw", str(phantom_dir), "--out", str(tmp_path / "x.json"), "--val_cases", "2"])
    assert exit_info.value.code == 1
    message = capsys.readouterr().err
    assert "holds 2 training cases: they cannot give 2 validation cases" in message and "Traceback" not in message
    assert not (tmp_path / "x.json").exists()


def test_read_dataset_spec_in_both_layouts(phantom_dir, tmp_path):
    from medsam_ft.data import evaluation_dataset, read_dataset_spec, slice_dataset

    datalist_path = tmp_path / "raw" / "datalist.json"
    (tmp_path / "raw").mkdir()
    for sub in ("img", "label"):
        (tmp_path / "raw" / sub).symlink_to(phantom_dir / sub)
    synapse_main(["--raw", str(tmp_path / "raw"), "--out", str(datalist_path), "--val_cases", "1",
                  "--transunet", str(tmp_path / "tu")])
    nifti = read_dataset_spec(tmp_path / "raw")
    assert nifti.layout == "nifti" and nifti.class_names == list(SYNAPSE_CLASS_NAMES)
    assert [len(nifti.splits[s]) for s in ("training", "validation", "test")] == [1, 1, 4]
    sample = slice_dataset(nifti, 32, augment="none")[0]
    assert sample["image"].shape == (3, 32, 32)

    transunet = read_dataset_spec(tmp_path / "tu", val_cases=1, seed=0)
    assert transunet.layout == "transunet" and transunet.class_names == nifti.class_names
    val_case = transunet.splits["validation"][0]["case"]
    assert val_case in (5, 6) and all(s["case"] != val_case for s in transunet.splits["training"])
    sample = slice_dataset(transunet, 32, augment="samed")[0]
    assert sample["image"].shape == (3, 32, 32) and sample["label"].dtype == torch.long
    stacked = evaluation_dataset(transunet, "validation")[0]
    raw_item = next(i for i in nifti.splits["training"] + nifti.splits["validation"] if i["case"] == val_case)
    raw = load_volumes([raw_item], _synapse_transform())[0]
    torch.testing.assert_close(stacked["image"], raw["image"].as_tensor().float())
    assert evaluation_dataset(transunet, "test")[0]["image"].ndim == 4

    with pytest.raises(InputError, match="holds neither datalist.json"):
        read_dataset_spec(tmp_path)
    with pytest.raises(InputError, match="dataset folder not found"):
        read_dataset_spec(tmp_path / "nowhere")

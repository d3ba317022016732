"""Users' data set layouts -> datalists: Medical Segmentation Decathlon / nnU-Net v1 and nnU-Net v2."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from data_prep.decathlon import main as decathlon_main
from data_prep.nnunet import main as nnunet_main
from data_prep.totalsegmentator import main as totalsegmentator_main
from medsam_ft.cli import main
from medsam_ft.data import read_dataset_spec
from medsam_ft.io import InputError

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {1: "spleen", 6: "liver"}  # phantom raw ids kept, as classes 1 and 2
TINY_TRAINING = ["--max_epochs", "1", "--image_size", "32", "--batch_size", "4", "--warmup_iters", "2",
                 "--keep_empty_slices", "0.0", "--num_workers", "0", "--progress", "False", "--slice_batch_size", "64"]


def _relabelled(label_path: Path) -> nib.Nifti1Image:
    raw = nib.load(label_path)
    data = np.asarray(raw.dataobj)
    out = np.zeros(data.shape, np.uint8)
    for new, old in enumerate(CLASSES, start=1):
        out[data == old] = new
    return nib.Nifti1Image(out, raw.affine)


def _case(path: Path) -> str:
    return path.name.removesuffix(".nii.gz")


def _decathlon(phantom_dir: Path, root: Path, modality: dict | None = None, mr: bool = False) -> Path:
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    training = []
    for image in sorted((phantom_dir / "img").glob("img*.nii.gz")):
        case = image.name.replace("img", "case_")
        if mr:  # MR-like: positive, an arbitrary scale that differs per volume, no HU meaning
            ct = nib.load(image)
            scale = 1.5 + 0.5 * len(training)
            signal = (np.asarray(ct.dataobj, np.float32) + 1024.0) * scale + 300.0
            nib.save(nib.Nifti1Image(signal, ct.affine), root / "imagesTr" / case)
        else:
            (root / "imagesTr" / case).symlink_to(image)
        nib.save(_relabelled(phantom_dir / "label" / image.name.replace("img", "label")), root / "labelsTr" / case)
        training.append({"image": f"./imagesTr/{case}", "label": f"./labelsTr/{case}"})
    meta = {"name": "Phantom", "modality": modality or {"0": "CT"}, "labels": {"0": "background", "1": "spleen", "2": "liver"},
            "numTraining": len(training), "training": training, "test": ["./imagesTs/case_9999.nii.gz"]}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _train_evaluate_predict(dataset_dir: Path, scan: Path, tmp_path: Path, run_bundle, organs: list[str]) -> None:
    """One short samed_synapse training on a converted data set, its evaluation, and medsam-ft predict on a scan."""
    out = tmp_path / "run"
    run_bundle(ROOT / "bundles" / "samed_synapse" / "train.json", "--dataset_dir", str(dataset_dir), "--output_dir",
               str(out), *TINY_TRAINING)
    run_bundle(ROOT / "bundles" / "samed_synapse" / "evaluate.json", "--dataset_dir", str(dataset_dir), "--checkpoint",
               str(out / "best.pt"), "--output_dir", str(tmp_path / "eval"), "--slice_batch_size", "64")
    header = (tmp_path / "eval" / "metrics_clinical.csv").read_text().splitlines()[0]
    assert header.startswith(",".join(["case", *(f"{o}_dice" for o in organs), *(f"{o}_hd95" for o in organs)]))
    assert main(["predict", "--checkpoint", str(out / "best.pt"), "-i", str(scan), "-o", str(tmp_path / "pred"),
                 "--quiet"]) == 0
    name = scan.name.removesuffix(".nii.gz") if scan.is_file() else scan.name
    assert nib.load(tmp_path / "pred" / f"{name}_seg.nii.gz").shape == nib.load(scan).shape


def test_decathlon_layout_trains_evaluates_and_predicts(phantom_dir, tmp_path, run_bundle):
    root = _decathlon(phantom_dir, tmp_path / "Task09_Phantom")
    decathlon_main(["--root", str(root), "--val_cases", "1", "--test_fraction", "0.34", "--hu_window", "-150", "250"])
    spec = read_dataset_spec(root)
    assert spec.class_names == ["background", "spleen", "liver"]
    assert spec.intensity == {"kind": "window", "window": [-150.0, 250.0]}
    assert [len(spec.splits[s]) for s in ("training", "validation", "test")] == [3, 1, 2]  # 6 labelled cases
    _train_evaluate_predict(root, root / "imagesTr" / "case_0001.nii.gz", tmp_path, run_bundle, ["spleen", "liver"])


def test_decathlon_layouts_that_cannot_be_read_are_refused(phantom_dir, tmp_path, capsys):
    two_channels = _decathlon(phantom_dir, tmp_path / "two", modality={"0": "T1", "1": "T2"})
    with pytest.raises(SystemExit):
        decathlon_main(["--root", str(two_channels)])
    assert "describes 2 image channels ['T1', 'T2']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        decathlon_main(["--root", str(tmp_path)])
    assert "has no dataset.json" in capsys.readouterr().err


def test_mr_volumes_train_evaluate_and_predict_with_their_percentiles(phantom_dir, tmp_path, run_bundle):
    """An MR-like data set (no HU, an arbitrary scale per volume): the datalist, the checkpoint and
    medsam-ft predict all scale each volume by its own percentiles."""
    root = _decathlon(phantom_dir, tmp_path / "Task99_MR", modality={"0": "MRI"}, mr=True)
    decathlon_main(["--root", str(root), "--val_cases", "1", "--test_fraction", "0.34"])
    percentiles = {"kind": "percentiles", "percentiles": [0.5, 99.5]}
    assert read_dataset_spec(root).intensity == percentiles
    scan = root / "imagesTr" / "case_0001.nii.gz"
    _train_evaluate_predict(root, scan, tmp_path, run_bundle, ["spleen", "liver"])
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["intensity"] == percentiles
    assert json.loads((tmp_path / "pred" / f"{_case(scan)}_seg.json").read_text())["intensity"] == percentiles


def _nnunet_v2(phantom_dir: Path, root: Path, labels: dict) -> Path:
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    for image in sorted((phantom_dir / "img").glob("img*.nii.gz")):
        case = image.name.removesuffix(".nii.gz").replace("img", "Phantom_")
        (root / "imagesTr" / f"{case}_0000.nii.gz").symlink_to(image)
        nib.save(_relabelled(phantom_dir / "label" / image.name.replace("img", "label")),
                 root / "labelsTr" / f"{case}.nii.gz")
    meta = {"name": "Phantom", "channel_names": {"0": "CT"}, "labels": labels, "numTraining": 6,
            "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_nnunet_v2_layout_trains_evaluates_predicts_and_refuses_regions(phantom_dir, tmp_path, capsys, run_bundle):
    root = _nnunet_v2(phantom_dir, tmp_path / "Dataset009_Phantom", {"background": 0, "spleen": 1, "liver": 2})
    nnunet_main(["--root", str(root), "--val_cases", "1"])
    spec = read_dataset_spec(root)
    assert spec.class_names == ["background", "spleen", "liver"]
    assert spec.intensity == {"kind": "window", "window": [-125.0, 275.0]}
    cases = {item["case"] for split in spec.splits.values() for item in split}
    assert cases == {f"Phantom_{i:04d}" for i in range(1, 7)}
    _train_evaluate_predict(root, root / "imagesTr" / "Phantom_0001_0000.nii.gz", tmp_path, run_bundle,
                            ["spleen", "liver"])
    regions = _nnunet_v2(phantom_dir, tmp_path / "regions", {"background": 0, "organ": [1, 2], "spleen": 1})
    with pytest.raises(SystemExit):
        nnunet_main(["--root", str(regions)])
    assert "region-based labels ['organ']" in capsys.readouterr().err
    (root / "imagesTr" / "Phantom_0003_0000.nii.gz").unlink()
    with pytest.raises(SystemExit):
        nnunet_main(["--root", str(root)])
    assert "Phantom_0003.nii.gz: has no image Phantom_0003_0000.nii.gz" in capsys.readouterr().err


def test_a_datalist_must_name_its_classes_and_intensity(synapse_dataset):
    """Never Synapse's class names or abdominal window by default: a hand-written datalist says both."""
    listed = json.loads((synapse_dataset / "datalist.json").read_text())
    for missing, says in (("labels", "must name its classes"), ("intensity", "must say how intensities are scaled")):
        datalist = {k: v for k, v in listed.items() if k != missing}
        path = synapse_dataset / f"without_{missing}.json"  # beside the files its relative paths name
        path.write_text(json.dumps(datalist))
        try:
            with pytest.raises(InputError, match=says):
                read_dataset_spec(synapse_dataset, datalist=path)
        finally:
            path.unlink()


def _totalsegmentator(phantom_dir: Path, root: Path) -> Path:
    rows = ["image_id;age;split"]
    for n, image in enumerate(sorted((phantom_dir / "img").glob("img*.nii.gz"))[:4]):
        subject = root / f"s{n:04d}"
        (subject / "segmentations").mkdir(parents=True)
        (subject / "ct.nii.gz").symlink_to(image)
        raw = nib.load(phantom_dir / "label" / image.name.replace("img", "label"))
        data = np.asarray(raw.dataobj)
        for structure, raw_id in (("spleen", 1), ("liver", 6), ("aorta", 8)):
            nib.save(nib.Nifti1Image((data == raw_id).astype(np.uint8), raw.affine),
                     subject / "segmentations" / f"{structure}.nii.gz")
        rows.append(f"{subject.name};60;{['train', 'train', 'val', 'test'][n]}")
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    return root


def test_totalsegmentator_structures_merge_train_evaluate_and_predict(phantom_dir, tmp_path, capsys, run_bundle):
    root = _totalsegmentator(phantom_dir, tmp_path / "Totalsegmentator_dataset")
    out = tmp_path / "converted" / "datalist.json"
    totalsegmentator_main(["--root", str(root), "--out", str(out), "--structures", "liver,spleen"])
    spec = read_dataset_spec(out.parent)
    assert spec.class_names == ["background", "liver", "spleen"]
    assert [len(spec.splits[s]) for s in ("training", "validation", "test")] == [2, 1, 1]  # meta.csv's split
    item = spec.splits["validation"][0]
    merged = np.asarray(nib.load(item["label"]).dataobj)
    raw = np.asarray(nib.load(phantom_dir / "label" / "label0003.nii.gz").dataobj)  # s0002 = the third case
    np.testing.assert_array_equal(merged, np.select([raw == 6, raw == 1], [1, 2], 0))
    _train_evaluate_predict(out.parent, root / "s0000" / "ct.nii.gz", tmp_path, run_bundle, ["liver", "spleen"])
    liver = root / "s0001" / "segmentations" / "liver.nii.gz"
    spleen = nib.load(root / "s0001" / "segmentations" / "spleen.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(nib.load(liver).dataobj) | np.asarray(spleen.dataobj), spleen.affine), liver)
    with pytest.raises(SystemExit):
        totalsegmentator_main(["--root", str(root), "--out", str(out), "--structures", "liver,spleen"])
    assert "spleen.nii.gz: overlaps 'liver' in" in capsys.readouterr().err  # liver (class 1) came first

"""Users' data set layouts -> datalists: Medical Segmentation Decathlon / nnU-Net v1 and nnU-Net v2."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_prep.decathlon import main as decathlon_main
from data_prep.nnunet import main as nnunet_main
from medsam_ft.data import read_dataset_spec
from medsam_ft.io import InputError

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {1: "spleen", 6: "liver"}  # phantom raw ids kept, as classes 1 and 2


def _relabelled(label_path: Path) -> nib.Nifti1Image:
    raw = nib.load(label_path)
    data = np.asarray(raw.dataobj)
    out = np.zeros(data.shape, np.uint8)
    for new, old in enumerate(CLASSES, start=1):
        out[data == old] = new
    return nib.Nifti1Image(out, raw.affine)


def _decathlon(phantom_dir: Path, root: Path, modality: str = "CT") -> Path:
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    training = []
    for image in sorted((phantom_dir / "img").glob("img*.nii.gz")):
        case = image.name.replace("img", "case_")
        (root / "imagesTr" / case).symlink_to(image)
        nib.save(_relabelled(phantom_dir / "label" / image.name.replace("img", "label")), root / "labelsTr" / case)
        training.append({"image": f"./imagesTr/{case}", "label": f"./labelsTr/{case}"})
    meta = {"name": "Phantom", "modality": {"0": modality}, "labels": {"0": "background", "1": "spleen", "2": "liver"},
            "numTraining": len(training), "training": training, "test": ["./imagesTs/case_9999.nii.gz"]}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_decathlon_layout_trains_and_evaluates_with_a_volume_bundle(phantom_dir, tmp_path, run_bundle):
    root = _decathlon(phantom_dir, tmp_path / "Task09_Phantom")
    decathlon_main(["--root", str(root), "--val_cases", "1", "--test_fraction", "0.34", "--hu_window", "-150", "250"])
    spec = read_dataset_spec(root)
    assert spec.class_names == ["background", "spleen", "liver"] and spec.hu_window == [-150.0, 250.0]
    assert [len(spec.splits[s]) for s in ("training", "validation", "test")] == [3, 1, 2]  # 6 labelled cases
    out = tmp_path / "run"
    run_bundle(ROOT / "bundles" / "samed_synapse" / "train.json", "--dataset_dir", str(root), "--output_dir", str(out),
               "--max_epochs", "1", "--image_size", "32", "--batch_size", "4", "--warmup_iters", "2",
               "--keep_empty_slices", "0.0", "--num_workers", "0", "--progress", "False", "--slice_batch_size", "64")
    run_bundle(ROOT / "bundles" / "samed_synapse" / "evaluate.json", "--dataset_dir", str(root), "--checkpoint",
               str(out / "best.pt"), "--output_dir", str(tmp_path / "eval"), "--slice_batch_size", "64")
    header = (tmp_path / "eval" / "metrics_clinical.csv").read_text().splitlines()[0]
    assert header.startswith("case,spleen_dice,liver_dice,spleen_hd95,liver_hd95")


def test_decathlon_layouts_that_cannot_be_read_are_refused(phantom_dir, tmp_path, capsys):
    mr = _decathlon(phantom_dir, tmp_path / "mr", modality="MRI")
    with pytest.raises(SystemExit):
        decathlon_main(["--root", str(mr)])
    assert "describes 'MRI' images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        decathlon_main(["--root", str(tmp_path)])
    assert "has no dataset.json" in capsys.readouterr().err


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


def test_nnunet_v2_layout_converts_and_refuses_regions(phantom_dir, tmp_path, capsys):
    root = _nnunet_v2(phantom_dir, tmp_path / "Dataset009_Phantom", {"background": 0, "spleen": 1, "liver": 2})
    nnunet_main(["--root", str(root), "--val_cases", "1"])
    spec = read_dataset_spec(root)
    assert spec.class_names == ["background", "spleen", "liver"] and spec.hu_window == [-125.0, 275.0]
    cases = {item["case"] for split in spec.splits.values() for item in split}
    assert cases == {f"Phantom_{i:04d}" for i in range(1, 7)}
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
    for missing, says in (("labels", "must name its classes"), ("hu_window", "must say how intensities are scaled")):
        datalist = {k: v for k, v in listed.items() if k != missing}
        path = synapse_dataset / f"without_{missing}.json"  # beside the files its relative paths name
        path.write_text(json.dumps(datalist))
        try:
            with pytest.raises(InputError, match=says):
                read_dataset_spec(synapse_dataset, datalist=path)
        finally:
            path.unlink()

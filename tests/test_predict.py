"""``medsam-ft predict``: patient geometry kept, Slicer / DICOM SEG / overlay outputs, and every bad input refused."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest
import slicerio
import torch
from PIL import Image
from torch import nn

import medsam_ft.predict
from data_prep.phantom import write_dicom_series
from medsam_ft.checkpoint import TrainableCheckpoint
from medsam_ft.cli import main
from medsam_ft.data import SYNAPSE_CLASS_NAMES
from medsam_ft.io import write_nifti
from medsam_ft.networks import build_network
from medsam_ft.predict import OutputOptions, VolumePredictor, predict_scans
from medsam_ft.scans import LPS_TO_RAS, find_scans, read_scan
from medsam_ft.transforms import HU_WINDOW, volume_transforms

SHAPE = (40, 36, 6)


def _rotation(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def _affine(linear: np.ndarray, origin=(12.0, -40.0, 7.5)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = linear, origin
    return affine


AFFINES = {
    "LPS": _affine(np.diag([-0.8, -0.7, 3.0])),
    "LAS": _affine(np.diag([-0.8, 0.7, 3.0])),
    "RAS": _affine(np.diag([0.8, 0.7, 3.0])),
    "permuted (PLS)": _affine(np.array([[0, -0.8, 0], [-0.7, 0, 0], [0, 0, 3.0]])),
    "oblique": _affine(_rotation(20) @ np.array([[0, -0.8, 0], [-0.7, 0, 0], [0, 0, 3.5]]) @ _rotation(7).T),
}


def _volume(seed: int = 0, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """int16 HU with no voxel at the threshold network's boundary (50 HU)."""
    return np.random.default_rng(seed).choice([-100, 0, 20, 80, 200], size=shape).astype(np.int16)


class ThresholdNet(nn.Module):
    """Logits of "brighter than the middle of the window": labels must equal ``HU > 50`` voxel for voxel."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image[:, :1]
        return torch.cat([0.5 - x, x - 0.5], dim=1)


def threshold_predictor() -> VolumePredictor:
    return VolumePredictor(ThresholdNet(), ["background", "bright"], [0.0, 100.0], device="cpu",
                           checkpoint_info={"sha256": "threshold"})


def _save_checkpoint(path: Path, num_classes: int = 9, class_names=SYNAPSE_CLASS_NAMES, intensity=HU_WINDOW,
                     **fields) -> Path:
    network = build_network("decoder_only", backbone="vit_tiny", num_classes=num_classes, image_size=32)
    torch.save(TrainableCheckpoint(network, class_names, intensity, **fields).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A (randomly initialised) 9-class Synapse checkpoint of the tiny test network."""
    return _save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


def _predict(*args: str) -> int:
    return main(["predict", "--quiet", "--device", "cpu", *args])


def _refused(capsys, *args: str, names: str | Path, says: str) -> None:
    assert _predict(*args) == 1
    err = capsys.readouterr().err
    assert "error:" in err and str(names) in err and says in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("axes", list(AFFINES))
def test_labels_lie_on_the_scan_voxel_for_voxel(axes, tmp_path):
    affine = AFFINES[axes]
    volume = _volume()
    write_nifti(tmp_path / "in" / "scan.nii.gz", volume, affine)
    predict_scans(threshold_predictor(), find_scans(tmp_path / "in"), tmp_path / "out", progress=False)
    source, label = nib.load(tmp_path / "in" / "scan.nii.gz"), nib.load(tmp_path / "out" / "scan_seg.nii.gz")
    assert label.shape == SHAPE and label.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(label.affine, source.affine)
    assert nib.aff2axcodes(label.affine) == nib.aff2axcodes(affine)
    assert label.header["qform_code"] == source.header["qform_code"] and label.header["sform_code"] == source.header["sform_code"]
    np.testing.assert_array_equal(np.asarray(label.dataobj), (volume > 50).astype(np.uint8))


@pytest.mark.parametrize("intensity", [list(HU_WINDOW), {"kind": "percentiles", "percentiles": [1.0, 99.0]}])
def test_network_sees_the_slices_it_was_trained_on(tmp_path, intensity):
    """The predictor's RAS image equals what the training/evaluation transforms make of the same file,
    for a CT window and for MR's per-volume percentiles."""
    mr_like = isinstance(intensity, dict)  # MR-like signal: no HU, an arbitrary offset and scale
    write_nifti(tmp_path / "scan.nii.gz", _volume(1) * 3.0 + 700.0 if mr_like else _volume(1), AFFINES["oblique"])
    predictor = VolumePredictor(ThresholdNet(), ["background", "bright"], intensity, device="cpu")
    prediction = predictor(read_scan(find_scans(tmp_path / "scan.nii.gz")[0]))
    expected = volume_transforms(intensity, with_label=False)({"image": str(tmp_path / "scan.nii.gz")})["image"][0]
    torch.testing.assert_close(prediction.ras_image, torch.as_tensor(expected).float())
    assert 0.0 <= float(prediction.ras_image.min()) < float(prediction.ras_image.max()) <= 1.0


def test_storage_order_does_not_change_the_prediction(checkpoint, tmp_path):
    """The same scan stored flipped and permuted gives the same labels per physical voxel (real network)."""
    volume, affine = _volume(2), AFFINES["LPS"]
    # b[j, i, k] = volume[X-1-i, j, k]: a permuted, flipped copy, placed by its affine exactly where volume is
    stored = np.ascontiguousarray(volume[::-1].transpose(1, 0, 2))
    to_a = np.array([[0, -1, 0, SHAPE[0] - 1], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    write_nifti(tmp_path / "in" / "a.nii.gz", volume, affine)
    write_nifti(tmp_path / "in" / "b.nii.gz", stored, affine @ to_a)
    predictor = VolumePredictor.from_checkpoint(checkpoint, device="cpu")
    predict_scans(predictor, find_scans(tmp_path / "in"), tmp_path / "out", progress=False)
    a = np.asarray(nib.load(tmp_path / "out" / "a_seg.nii.gz").dataobj)
    b = np.asarray(nib.load(tmp_path / "out" / "b_seg.nii.gz").dataobj)
    assert len(np.unique(a)) > 1
    np.testing.assert_array_equal(b, a[::-1].transpose(1, 0, 2))


def test_summary_slicer_files_and_overlay(checkpoint, tmp_path):
    affine = AFFINES["oblique"]
    write_nifti(tmp_path / "scan.nii.gz", _volume(3), affine)
    assert _predict("--checkpoint", str(checkpoint), "--input", str(tmp_path / "scan.nii.gz"), "--output",
                    str(tmp_path / "out"), "--slicer", "--overlay") == 0
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "scan_overlay.png", "scan_seg.ctbl", "scan_seg.json", "scan_seg.nii.gz", "scan_seg.seg.nrrd"]
    labels = np.asarray(nib.load(out / "scan_seg.nii.gz").dataobj)

    summary = json.loads((out / "scan_seg.json").read_text())
    assert summary["labels"] == {str(i): n for i, n in enumerate(SYNAPSE_CLASS_NAMES)}
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000
    for value, name in enumerate(SYNAPSE_CLASS_NAMES[1:], start=1):
        assert summary["volumes_ml"][name] == pytest.approx(float((labels == value).sum()) * voxel_ml, abs=1e-3)
    assert summary["checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert summary["checkpoint"]["config"]["method"] == "decoder_only" and summary["medsam_ft_version"]

    segmentation = slicerio.read_segmentation(str(out / "scan_seg.seg.nrrd"))
    np.testing.assert_allclose(segmentation["ijkToLPS"], LPS_TO_RAS @ affine, atol=1e-6)
    np.testing.assert_array_equal(segmentation["voxels"], labels)
    segments = {s["name"]: s for s in segmentation["segments"]}
    assert list(segments) == list(SYNAPSE_CLASS_NAMES[1:])
    assert [s["labelValue"] for s in segmentation["segments"]] == list(range(1, 9))
    np.testing.assert_allclose(segments["spleen"]["color"], np.array([157, 108, 162]) / 255, atol=1e-5)
    assert segments["right_kidney"]["terminology"]["type"] == ["SCT", "64033007", "Kidney"]
    assert segments["right_kidney"]["terminology"]["typeModifier"] == ["SCT", "24028007", "Right"]
    header = nrrd.read_header(str(out / "scan_seg.seg.nrrd"))
    assert header["Segment0_Name"] == "spleen" and header["Segment0_LabelValue"] == "1" and header["Segment0_Layer"] == "0"

    table = (out / "scan_seg.ctbl").read_text().splitlines()
    assert "0 background 0 0 0 0" in table and "1 spleen 157 108 162 255" in table
    overlay = np.asarray(Image.open(out / "scan_overlay.png"))
    assert overlay.ndim == 3 and overlay.shape[2] == 3 and overlay.shape[1] == 3 * 192


def _series(folder: Path, volume: np.ndarray, affine: np.ndarray, description: str) -> str:
    return write_dicom_series(folder, volume, affine, patient_id="P1", series_description=description)


def test_dicom_series_in_dicom_seg_out(checkpoint, tmp_path):
    affine = AFFINES["LPS"]
    volume = _volume(4)
    uid = _series(tmp_path / "series", volume, affine, "abdomen")
    scan = read_scan(find_scans(tmp_path / "series")[0])
    np.testing.assert_array_equal(scan.voxels, volume)
    np.testing.assert_allclose(scan.affine, affine, atol=1e-4)

    assert _predict("--checkpoint", str(checkpoint), "--input", str(tmp_path / "series"), "--output",
                    str(tmp_path / "out"), "--dicom_seg") == 0
    labels = np.asarray(nib.load(tmp_path / "out" / "series_seg.nii.gz").dataobj)
    np.testing.assert_allclose(nib.load(tmp_path / "out" / "series_seg.nii.gz").affine, affine, atol=1e-4)
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(tmp_path / "out" / "series_seg.dcm"))
    sources = [pydicom.dcmread(f) for f in sorted((tmp_path / "series").iterdir())]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uid
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID and seg.PatientID == "P1"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == list(SYNAPSE_CLASS_NAMES[1:])
    kidney = seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0]
    assert (kidney.CodeValue, kidney.SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning) == ("64033007", "Right")
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[s.SOPInstanceUID for s in sources], combine_segments=True,
        segment_numbers=list(range(1, 9)), ignore_spatial_locations=True)
    np.testing.assert_array_equal(pixels, labels.transpose(2, 1, 0))


def test_mixed_dicom_series_are_listed_and_one_is_chosen(checkpoint, tmp_path, capsys):
    folder = tmp_path / "mixed"
    uids = []
    for n, description in enumerate(["arterial", "venous"]):
        uids.append(_series(tmp_path / description, _volume(n), AFFINES["LPS"], description))
        for f in (tmp_path / description).iterdir():
            folder.mkdir(exist_ok=True)
            shutil.move(f, folder / f"{description}_{f.name}")
    _refused(capsys, "--checkpoint", str(checkpoint), "--input", str(folder), "--output", str(tmp_path / "out"),
             names=folder, says="holds 2 DICOM series; choose one with --series")
    assert not (tmp_path / "out").exists()
    assert _predict("--checkpoint", str(checkpoint), "--input", str(folder), "--output", str(tmp_path / "out"),
                    "--series", uids[1]) == 0
    assert nib.load(tmp_path / "out" / "mixed_seg.nii.gz").shape == SHAPE


def _bad_nifti(kind: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "not an image":
        path.write_text("patient notes, not an image")
    elif kind == "truncated":
        write_nifti(path, _volume(), AFFINES["LPS"])
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "2D":
        write_nifti(path, _volume()[:, :, 0], np.eye(4))
    elif kind == "4D":
        write_nifti(path, np.stack([_volume(), _volume(1)], axis=-1), np.eye(4))
    elif kind == "NaN":
        volume = _volume().astype(np.float32)
        volume[3, 4, 2], volume[5, 5, 5] = np.nan, np.inf
        write_nifti(path, volume, np.eye(4))
    elif kind == "constant":
        write_nifti(path, np.full(SHAPE, -1000, dtype=np.int16), np.eye(4))
    return path


BAD_NIFTI = {"not an image": "not a readable NIfTI", "truncated": "truncated or corrupt", "2D": "expected a 3D volume",
             "4D": "expected a 3D volume", "NaN": "2 voxels are NaN or infinite", "constant": "every voxel has the value"}


@pytest.mark.parametrize("kind", list(BAD_NIFTI))
def test_bad_scans_are_refused_with_nothing_written(kind, checkpoint, tmp_path, capsys):
    path = _bad_nifti(kind, tmp_path / "in" / "scan.nii.gz")
    _refused(capsys, "--checkpoint", str(checkpoint), "--input", str(path), "--output", str(tmp_path / "out"),
             names=path, says=BAD_NIFTI[kind])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_missing_empty_and_unknown_inputs(checkpoint, tmp_path, capsys):
    args = ("--checkpoint", str(checkpoint), "--output", str(tmp_path / "out"))
    _refused(capsys, *args, "--input", str(tmp_path / "nowhere"), names=tmp_path / "nowhere", says="not found")
    (tmp_path / "empty").mkdir()
    _refused(capsys, *args, "--input", str(tmp_path / "empty"), names=tmp_path / "empty", says="holds no NIfTI")
    (tmp_path / "notes.txt").write_text("x")
    _refused(capsys, *args, "--input", str(tmp_path / "notes.txt"), names=tmp_path / "notes.txt",
             says="not a NIfTI (.nii, .nii.gz) or TransUNet .npy.h5 file")
    write_nifti(tmp_path / "scan.nii.gz", _volume(), np.eye(4))
    _refused(capsys, *args, "--input", str(tmp_path / "scan.nii.gz"), "--dicom_seg", names=tmp_path / "scan.nii.gz",
             says="--dicom_seg needs a DICOM series")
    if not torch.cuda.is_available():
        _refused(capsys, *args, "--input", str(tmp_path / "scan.nii.gz"), "--device", "cuda", names="'cuda'",
                 says="CUDA is not available")


def _checkpoint_with(path: Path, **changes) -> Path:
    state = torch.load(_save_checkpoint(path, num_classes=changes.pop("num_classes", 9)), weights_only=True)
    for key, value in changes.items():
        if key == "config":
            state["config"] = {**state["config"], **value}
        else:
            state[key] = value
    torch.save(state, path)
    return path


def test_checkpoints_that_cannot_predict_volumes_are_refused(tmp_path, capsys):
    write_nifti(tmp_path / "scan.nii.gz", _volume(), np.eye(4))
    args = ("--input", str(tmp_path / "scan.nii.gz"), "--output", str(tmp_path / "out"))
    cases = {
        "sam.pth": ({"image_encoder.weight": torch.zeros(2)}, "not a medsam_ft checkpoint"),
        "garbage.pt": (b"not a checkpoint at all", "not a readable PyTorch checkpoint"),
    }
    for name, (content, says) in cases.items():
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else torch.save(content, path)
        _refused(capsys, "--checkpoint", str(path), *args, names=path, says=says)
    other_classes = _checkpoint_with(tmp_path / "three.pt", num_classes=3, config={"num_classes": 9})
    _refused(capsys, "--checkpoint", str(other_classes), *args, names=other_classes, says="does not match this")
    names_mismatch = _checkpoint_with(tmp_path / "names.pt", num_classes=3)
    _refused(capsys, "--checkpoint", str(names_mismatch), *args, names=names_mismatch,
             says="names 9 classes for a network with 3")
    image_model = _checkpoint_with(tmp_path / "2d.pt", intensity=None)
    _refused(capsys, "--checkpoint", str(image_model), *args, names=image_model, says="trained on 2D images")
    box_model = _checkpoint_with(tmp_path / "box.pt", prompt="box")
    _refused(capsys, "--checkpoint", str(box_model), *args, names=box_model, says="box prompts")
    assert not (tmp_path / "out").exists()


def test_existing_outputs_overwrite_and_resume(checkpoint, tmp_path, capsys):
    for name in ("a", "b", "c"):
        write_nifti(tmp_path / "in" / f"{name}.nii.gz", _volume(), AFFINES["LAS"])
    args = ("--checkpoint", str(checkpoint), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"))
    assert _predict(*args) == 0
    capsys.readouterr()
    # an interrupted run: c was never written
    (tmp_path / "out" / "c_seg.nii.gz").unlink()
    (tmp_path / "out" / "c_seg.json").unlink()
    finished = (tmp_path / "out" / "a_seg.nii.gz").stat().st_mtime_ns
    assert _predict(*args) == 0
    assert "1 written, 2 skipped" in capsys.readouterr().out
    assert (tmp_path / "out" / "c_seg.nii.gz").is_file()
    assert (tmp_path / "out" / "a_seg.nii.gz").stat().st_mtime_ns == finished
    # a file this checkpoint did not finish is someone else's: refused, then replaced on request
    (tmp_path / "out" / "b_seg.json").unlink()
    _refused(capsys, *args, names=tmp_path / "out" / "b_seg.nii.gz", says="pass --overwrite")
    assert not (tmp_path / "out" / "b_seg.json").exists()
    assert _predict(*args, "--overwrite") == 0
    assert "3 written, 0 skipped" in capsys.readouterr().out
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left


def test_a_failed_write_leaves_nothing_behind(checkpoint, tmp_path, monkeypatch):
    write_nifti(tmp_path / "scan.nii.gz", _volume(), np.eye(4))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("medsam_ft.predict.write_seg_nrrd", broken)
    with pytest.raises(OSError, match="disk full"):
        predict_scans(threshold_predictor(), find_scans(tmp_path / "scan.nii.gz"), tmp_path / "out",
                      OutputOptions(slicer=True), progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_an_interrupted_batch_resumes(tmp_path, monkeypatch):
    for name in ("a", "b", "c"):
        write_nifti(tmp_path / "in" / f"{name}.nii.gz", _volume(), AFFINES["LPS"])
    write_seg_nrrd = medsam_ft.predict.write_seg_nrrd

    def interrupted_at_b(path, *args):
        if ".b_seg" in Path(path).name:  # b's label NIfTI is already in its temporary file
            raise KeyboardInterrupt
        write_seg_nrrd(path, *args)

    monkeypatch.setattr(medsam_ft.predict, "write_seg_nrrd", interrupted_at_b)
    options = OutputOptions(slicer=True)
    with pytest.raises(KeyboardInterrupt):
        predict_scans(threshold_predictor(), find_scans(tmp_path / "in"), tmp_path / "out", options, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_seg.ctbl", "a_seg.json", "a_seg.nii.gz", "a_seg.seg.nrrd"]  # b's temporary files are gone
    monkeypatch.setattr(medsam_ft.predict, "write_seg_nrrd", write_seg_nrrd)
    report = predict_scans(threshold_predictor(), find_scans(tmp_path / "in"), tmp_path / "out", options, progress=False)
    assert report.skipped == ["a"] and sorted(report.written) == ["b", "c"] and not report.failed


def test_a_bad_scan_in_a_batch_fails_alone(checkpoint, tmp_path, capsys):
    write_nifti(tmp_path / "in" / "good.nii.gz", _volume(), np.eye(4))
    bad = _bad_nifti("constant", tmp_path / "in" / "blank.nii.gz")
    assert _predict("--checkpoint", str(checkpoint), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")) == 1
    captured = capsys.readouterr()
    assert "1 written, 0 skipped (already done), 1 failed" in captured.out and str(bad) in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_seg.json", "good_seg.nii.gz"]


def test_command_line_exit_status_and_message(checkpoint, tmp_path):
    result = subprocess.run([sys.executable, "-m", "medsam_ft.cli", "predict", "--checkpoint", str(checkpoint),
                             "--input", str(tmp_path / "missing.nii.gz"), "--output", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert f"error: {tmp_path / 'missing.nii.gz'}: not found" in result.stderr and "Traceback" not in result.stderr


DCMQI = Path(__file__).parent / "data" / "dcmqi_ct3slice"


def _seg_matches(seg_path: Path, series: Path, labels: np.ndarray) -> None:
    """The DICOM SEG references ``series`` (file-meta SOP UIDs, the way a PACS identifies instances)
    and its frames, by source instance, equal ``labels`` [I, J, K]."""
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(seg_path))
    sources = [pydicom.dcmread(f) for f in read_scan(find_scans(series)[0]).dicom_files]  # file k: slice k
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID and seg.PatientID == sources[0].PatientID
    uids = [s.file_meta.MediaStorageSOPInstanceUID for s in sources]
    referenced = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == set(uids)
    if labels.any():
        pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True,
                                                   segment_numbers=list(range(1, 9)), ignore_spatial_locations=True)
        np.testing.assert_array_equal(pixels, labels.transpose(2, 1, 0))


def test_real_scanner_series_geometry_and_dicom_seg(checkpoint, tmp_path):
    """A GE CT series as the scanner wrote it (dcmqi's test data: empty SpecificCharacterSet, one-component
    patient name): its geometry equals what another reader made of it (dcmqi's NRRD label on the same
    grid, LPS), it is predicted, and its DICOM SEG reads back; then the same series anonymised the way
    some tools do it (SOP Class / Instance UID emptied in the data set, kept in the file meta)."""
    scan = read_scan(find_scans(DCMQI)[0])
    liver, header = nrrd.read(str(DCMQI / "liver_seg.nrrd"))
    assert scan.voxels.shape == liver.shape == (512, 512, 3) and scan.voxels.min() == -3024
    lps = np.eye(4)
    lps[:3, :3], lps[:3, 3] = np.asarray(header["space directions"]).T, header["space origin"]
    np.testing.assert_allclose(scan.affine, LPS_TO_RAS @ lps, atol=1e-3)

    assert _predict("--checkpoint", str(checkpoint), "--input", str(DCMQI), "--output", str(tmp_path / "out"),
                    "--dicom_seg") == 0
    labels = np.asarray(nib.load(tmp_path / "out" / "dcmqi_ct3slice_seg.nii.gz").dataobj)
    _seg_matches(tmp_path / "out" / "dcmqi_ct3slice_seg.dcm", DCMQI, labels)

    anonymised = tmp_path / "anonymised"
    anonymised.mkdir()
    for file in sorted(DCMQI.glob("*.dcm")):
        dataset = pydicom.dcmread(file)
        dataset.SOPClassUID, dataset.SOPInstanceUID = "", ""
        dataset.save_as(anonymised / file.name, enforce_file_format=True)
    assert _predict("--checkpoint", str(checkpoint), "--input", str(anonymised), "--output", str(tmp_path / "anon"),
                    "--dicom_seg") == 0
    _seg_matches(tmp_path / "anon" / "anonymised_seg.dcm", anonymised,
                 np.asarray(nib.load(tmp_path / "anon" / "anonymised_seg.nii.gz").dataobj))


def test_dicom_seg_refuses_a_series_it_cannot_reference(checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in sorted(DCMQI.glob("*.dcm")):
        dataset = pydicom.dcmread(file)
        dataset.SOPInstanceUID = ""
        del dataset.file_meta.MediaStorageSOPInstanceUID
        dataset.save_as(broken / file.name, enforce_file_format=False)
    _refused(capsys, "--checkpoint", str(checkpoint), "--input", str(broken), "--output", str(tmp_path / "out"),
             "--dicom_seg", names=broken / "03.dcm", says="has no SOPInstanceUID")  # 03.dcm: the first slice

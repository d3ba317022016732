"""One slice convention from training to prediction: a network trained on the TransUNet layout (the
original authors' files keep each scan's stored voxel order, LPS for the phantoms as for Synapse) or
on NIfTI (reoriented RAS) predicts a scan with labels equal to its ground truth, voxel for voxel."""

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from medsam_ft.data import read_dataset_spec
from medsam_ft.data.transunet import read_npz_slice
from medsam_ft.predict import VolumePredictor
from medsam_ft.scans import find_scans, read_scan
from medsam_ft.transforms import HU_WINDOW, volume_transforms

CASE = 5


def _key(image: torch.Tensor) -> bytes:
    return np.round(image.numpy().astype(np.float64), 4).tobytes()


class Memoriser(nn.Module):
    """A perfectly trained 2D network: it returns the label of each training slice it saw, looked up
    by the slice's pixels (float[B, 3, X, Y] -> one-hot float[B, 14, X, Y]). A slice it never saw,
    e.g. the same slice mirrored, is an error."""

    def __init__(self, slices: list[tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.table = {_key(image): label for image, label in slices if image.std() > 0}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        labels = []
        for grey in image[:, 0]:
            if grey.std() == 0:  # air above/below the body: background
                labels.append(torch.zeros(grey.shape, dtype=torch.long))
                continue
            key = _key(grey)
            if key not in self.table:
                raise AssertionError("a slice the network never saw in training (mirrored or rotated?)")
            labels.append(self.table[key])
        return torch.nn.functional.one_hot(torch.stack(labels), 14).permute(0, 3, 1, 2).float()


def _original_transunet_layout(phantom_dir, root):
    """The layout as the TransUNet authors made it: the scan's stored voxel order (no reorientation),
    windowed, written as SimpleITK arrays ([Y, X] slices), no transunet.json."""
    image = nib.load(phantom_dir / "img" / f"img{CASE:04d}.nii.gz").get_fdata()
    label = nib.load(phantom_dir / "label" / f"label{CASE:04d}.nii.gz").get_fdata()
    windowed = (np.clip(image, *HU_WINDOW) - HU_WINDOW[0]) / (HU_WINDOW[1] - HU_WINDOW[0])
    (root / "train_npz").mkdir(parents=True)
    names = []
    for z in range(image.shape[-1]):
        names.append(f"case{CASE:04d}_slice{z:03d}")
        np.savez(root / "train_npz" / f"{names[-1]}.npz", image=windowed[..., z].T.astype(np.float32),
                 label=label[..., z].T.astype(np.float32))
    (root / "lists" / "lists_Synapse").mkdir(parents=True)
    (root / "lists" / "lists_Synapse" / "train.txt").write_text("\n".join(names) + "\n")


def test_transunet_and_nifti_training_predict_the_same_physical_labels(phantom_dir, tmp_path):
    assert nib.aff2axcodes(nib.load(phantom_dir / "img" / "img0005.nii.gz").affine) == ("L", "P", "S")
    _original_transunet_layout(phantom_dir, tmp_path / "tu")
    transunet = read_dataset_spec(tmp_path / "tu", val_cases=0)
    assert transunet.axcodes == "LPS"
    tu_slices = [(s["image"][0], s["label"][0]) for s in (read_npz_slice(i["image"]) for i in transunet.splits["training"])]

    nifti = volume_transforms()({"image": str(phantom_dir / "img" / "img0005.nii.gz"),
                                 "label": str(phantom_dir / "label" / "label0005.nii.gz")})
    nifti_slices = [(nifti["image"][0, ..., z].float(), nifti["label"][0, ..., z].long())
                    for z in range(nifti["image"].shape[-1])]

    scan = read_scan(find_scans(phantom_dir / "img" / "img0005.nii.gz")[0])
    truth = np.asarray(nib.load(phantom_dir / "label" / "label0005.nii.gz").dataobj).astype(np.uint8)
    for slices, axcodes in ((tu_slices, transunet.axcodes), (nifti_slices, "RAS")):
        predictor = VolumePredictor(Memoriser(slices), [f"c{i}" for i in range(14)], list(HU_WINDOW), axcodes=axcodes)
        np.testing.assert_array_equal(predictor(scan).labels, truth)
    # the defect this guards against: TransUNet-trained, predicted RAS -> slices it never saw (mirrored)
    with pytest.raises(AssertionError, match="never saw"):
        VolumePredictor(Memoriser(tu_slices), [f"c{i}" for i in range(14)], list(HU_WINDOW), axcodes="RAS")(scan)


def test_transunet_layout_records_its_orientation(tmp_path):
    (tmp_path / "transunet.json").write_text('{"axcodes": "RAS"}')
    from medsam_ft.data.datasets import transunet_axcodes
    from medsam_ft.io import InputError

    assert transunet_axcodes(tmp_path) == "RAS"
    (tmp_path / "transunet.json").write_text('{"axcodes": "XYZ"}')
    with pytest.raises(InputError, match="transunet.json: axcodes 'XYZ'"):
        transunet_axcodes(tmp_path)
    assert transunet_axcodes(tmp_path / "elsewhere") == "LPS"

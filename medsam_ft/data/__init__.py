"""Data sets and datalists: Synapse raw NIfTI, the TransUNet npz/h5 layout, axial slices of volumes, 2D folders."""

from .boxes import BoxPromptDataset, PrepareBatchOptionalBoxes, grow_box, mask_box
from .datalist import read_datalist, write_datalist
from .datasets import (
    CheckedDataset,
    DatasetSpec,
    check_class_names,
    check_num_classes,
    evaluation_dataset,
    read_dataset_spec,
    slice_dataset,
)
from .folder2d import LoadImage2Dd, MaskFormat, read_image, read_mask
from .nnunet import decathlon_datalist, nnunet_v2_datalist, split_labelled_cases
from .slices import LoadTransUNetd, VolumeSliceDataset, apply_checked, load_volumes
from .synapse import (
    SYNAPSE_CLASS_NAMES,
    SYNAPSE_LABEL_MAP,
    SYNAPSE_ORGANS,
    SYNAPSE_RAW_IDS,
    TRANSUNET_TEST_CASES,
    find_raw_cases,
    make_datalist,
)
from .transunet import read_h5_volume, read_npz_slice, write_h5_volume, write_npz_slice

__all__ = [
    "BoxPromptDataset",
    "PrepareBatchOptionalBoxes",
    "grow_box",
    "mask_box",
    "CheckedDataset",
    "check_class_names",
    "check_num_classes",
    "DatasetSpec",
    "read_dataset_spec",
    "slice_dataset",
    "evaluation_dataset",
    "LoadImage2Dd",
    "LoadTransUNetd",
    "MaskFormat",
    "SYNAPSE_CLASS_NAMES",
    "SYNAPSE_LABEL_MAP",
    "SYNAPSE_ORGANS",
    "SYNAPSE_RAW_IDS",
    "TRANSUNET_TEST_CASES",
    "VolumeSliceDataset",
    "apply_checked",
    "find_raw_cases",
    "load_volumes",
    "make_datalist",
    "read_datalist",
    "decathlon_datalist",
    "nnunet_v2_datalist",
    "split_labelled_cases",
    "read_image",
    "read_mask",
    "write_datalist",
    "read_h5_volume",
    "read_npz_slice",
    "write_h5_volume",
    "write_npz_slice",
]

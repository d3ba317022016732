"""nnU-Net v2 raw data set (DatasetXXX_Name) -> MONAI datalist JSON (training, validation, test).

``python -m data_prep.nnunet --root DIR [--out DIR/datalist.json] [--val_cases 2] [--test_fraction 0.2]
[--seed 0] [--hu_window -125 275] [--percentiles 0.5 99.5]``

Pairs ``labelsTr/CASE.nii.gz`` with ``imagesTr/CASE_0000.nii.gz``; ``dataset.json`` gives ``labels``
(name -> id; region-based labels are refused) and ``channel_names`` (one channel: CT, MR...). Every pair is
checked; the labelled cases are split with ``--seed``. (nnU-Net v1 folders: ``python -m data_prep.decathlon``.)
"""

from __future__ import annotations

from data_prep.decathlon import convert
from medsam_ft.data import nnunet_v2_datalist


def main(argv: list[str] | None = None) -> None:
    convert("python -m data_prep.nnunet", __doc__.splitlines()[0], nnunet_v2_datalist, argv)


if __name__ == "__main__":
    main()

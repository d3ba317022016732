#!/usr/bin/env bash
# The main job on the embedded default backbone (LiteMedSAM), from nothing: environment,
# 30 synthetic CT phantoms in the Synapse layout, the TransUNet-split datalist, and the SAMed
# network built on them. (Training and evaluation join this script with the samed_synapse bundle.)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
PY="${MEDSAM_FT_VENV:-$ROOT/.venv}/bin/python"
OUT="${DEMO_OUT:-$ROOT/demo_output}"
cd "$ROOT"
"$PY" -m data_prep.phantom --out "$OUT/phantom" --cases 30 --seed 0
"$PY" -m data_prep.synapse --raw "$OUT/phantom" --out "$OUT/phantom/datalist.json"
"$PY" -m medsam_ft.cli info
"$PY" - "$OUT/phantom/datalist.json" <<'PYEOF'
import sys
import torch
import medsam_ft
from medsam_ft.data import load_volumes, read_datalist
from medsam_ft.transforms import volume_transforms

datalist = read_datalist(sys.argv[1])
net = medsam_ft.build_network("samed", backbone="lite_medsam", num_classes=len(datalist["labels"])).eval()
print(f"samed on lite_medsam: {net.num_parameters(True):,} trainable of {net.num_parameters():,} parameters")
transform = volume_transforms(datalist["hu_window"], {int(k): v for k, v in datalist["label_map"].items()},
                              datalist["allowed_label_ids"])
volume = load_volumes(datalist["test"][:1], transform)[0]
middle = volume["image"][..., volume["image"].shape[-1] // 2].as_tensor().expand(3, -1, -1)[None]
with torch.no_grad():
    logits = net(middle)
print(f"untrained forward on case {datalist['test'][0]['case']}: input {tuple(middle.shape)} -> logits {tuple(logits.shape)}")
PYEOF
echo "demo data: $OUT/phantom (datalist: $OUT/phantom/datalist.json)"

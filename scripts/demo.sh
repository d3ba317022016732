#!/usr/bin/env bash
# The demo, from nothing: environment -> 30 synthetic CT phantoms (Synapse layout) -> TransUNet-split
# datalist -> SAMed training with the samed_synapse bundle on the embedded LiteMedSAM backbone ->
# evaluation table on the 12 held-out test cases -> one scan predicted (label NIfTI, Slicer segmentation, overlay).
# CPU-sized setting (see bundles/samed_synapse/README.md); the paper's setting is a set of overrides.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
PY="${MEDSAM_FT_VENV:-$ROOT/.venv}/bin/python"
OUT="${DEMO_OUT:-$ROOT/demo_output}"
BUNDLE="bundles/samed_synapse"
cd "$ROOT"
export PYTHONWARNINGS="ignore::FutureWarning"
start=$(date +%s)

"$PY" -m data_prep.phantom --out "$OUT/phantom" --cases 30 --seed 0
"$PY" -m data_prep.synapse --raw "$OUT/phantom" --out "$OUT/phantom/datalist.json"

"$PY" -m monai.bundle run --config_file "$BUNDLE/train.json" \
    --dataset_dir "$OUT/phantom" --output_dir "$OUT/samed_synapse" \
    --image_size 64 --batch_size 8 --max_epochs 4 --schedule_epochs 4 --warmup_iters 20 --lr 0.002 --augment none --val_interval 2 \
    --keep_empty_slices 0.1 --progress False

"$PY" -m monai.bundle run --config_file "$BUNDLE/evaluate.json" \
    --dataset_dir "$OUT/phantom" --checkpoint "$OUT/samed_synapse/best.pt" --output_dir "$OUT/samed_synapse/eval"

"$PY" -m medsam_ft.cli predict --checkpoint "$OUT/samed_synapse/best.pt" \
    --input "$OUT/phantom/img/img0001.nii.gz" --output "$OUT/predictions" --slicer --overlay --overwrite

echo
echo "demo finished in $(( $(date +%s) - start )) s (after set-up)"
echo "  data:        $OUT/phantom (datalist.json)"
echo "  checkpoints: $OUT/samed_synapse/best.pt, last.pt (TensorBoard logs beside them)"
echo "  metrics:     $OUT/samed_synapse/eval/metrics_clinical.csv, metrics_transunet.csv"
echo "  prediction:  $OUT/predictions/img0001_seg.nii.gz (+ _seg.json, _seg.seg.nrrd for 3D Slicer, _overlay.png)"

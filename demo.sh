#!/usr/bin/env bash
# The README's main job, a few minutes on a CPU: export Fashion-MNIST at 32 px, train a small
# supernet (configs/resnet48_small.yaml, sandwich rule), rank a fixed sample of the 45,000
# Track-1 archs with it, and compare that ranking with FLOPs.
#   OUT=output/demo EPOCHS=3 ARCHS=100 bash demo.sh
# Re-running continues where it stopped: training resumes from its folder, ranking skips
# archs already scored.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-.venv/bin/python}
OUT=${OUT:-output/demo}
DATA=${DATA:-data/fashion_mnist_demo}
EPOCHS=${EPOCHS:-3}
ARCHS=${ARCHS:-100}
CONFIG=configs/resnet48_small.yaml

$PY utils/prepare_fashion_mnist.py --output "$DATA" --image_size 32 --train_per_class 300 --val_per_class 100

resume=()
[ -f "$OUT/supernet/latest" ] && resume=(--resume "$OUT/supernet")
$PY train_supernet.py run --config "$CONFIG" --image_dir "$DATA" --save_dir "$OUT/supernet" \
  --strategy sandwich --dyna_batch_size 3 --max_epoch "$EPOCHS" --batch_size 64 --lr 0.1 \
  --warmup 1 --save_freq 1 --log_freq 10 --num_workers 1 "${resume[@]}"

$PY utils/sample_json.py checkpoints/CVPR_2022_NAS_Track1_test.json --num "$ARCHS" --seed 0 \
  --output "$OUT/archs.json"
$PY eval_supernet.py run --config "$CONFIG" --image_dir "$DATA" --resume "$OUT/supernet" \
  --json_path "$OUT/archs.json" --save_path "$OUT/submission.json" \
  --calib_batches 4 --eval_images 1000 --batch_size 100

$PY utils/flops_table.py "$OUT/archs.json" --config "$CONFIG" --score flops --output "$OUT/flops.json"
$PY utils/kendall.py "$OUT/submission.json" "$OUT/flops.json"
$PY utils/visualize_rank.py "$OUT/submission.json" "$OUT/flops.json" --output "$OUT/rank_vs_flops.png" --title "demo supernet vs FLOPs" --pred_label supernet --gt_label FLOPs
echo "demo: submission $OUT/submission.json, plot $OUT/rank_vs_flops.png"

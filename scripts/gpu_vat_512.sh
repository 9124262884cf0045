#!/usr/bin/env bash
# VaT on real fog at the paper's 512x512 scale on one CUDA GPU, with its timings; the numbers in
# docs/results.md §3.4 and §5.1 come from this script.
#
#   TASKBRIDGE_DATA=../shared/data TASKBRIDGE_WEIGHTS=../shared/data bash scripts/gpu_vat_512.sh OUT_DIR
#
# Steps: (1) bench_vat at 256 and 512 px, fp32 and bf16 autocast; (2) `taskbridge fit
# recipes/dehaze-det-vat.yaml` with the 512 px overrides below, bf16 AMP, selected on the DAWN val split
# (FIT_SECONDS bounds the wall time: the best checkpoint so far is kept when it runs out); (3) the
# selected translator scored on the DAWN test split at full resolution (translate at 512, add the
# upsampled residual), with NIQE. Environment: STEPS (default 1500 = 50 epochs of the 120 training
# images at batch 4, the paper's schedule), FIT_SECONDS (default 300), PYTHON (default python3),
# DEVICE (default cuda), SIZE (default 512), BENCH_SIZES (default "256 512"), BENCH_ITERS (default 20),
# RUN_DIR (the training run; default OUT_DIR/run), BENCH=0 skips step (1).
# Needs pycocotools (the validator also reports COCO-style AP).
set -uo pipefail
out=${1:?usage: gpu_vat_512.sh OUT_DIR}
mkdir -p "$out"
py=${PYTHON:-python3}
cli=("$py" -c "from taskbridge.cli import main; main()")
steps=${STEPS:-1500}
device=${DEVICE:-cuda}
size=${SIZE:-512}
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$out/gpu.txt"

for amp in $( [ "${BENCH:-1}" = 0 ] || echo "fp32 --amp" ); do
  [ "$amp" = fp32 ] && amp=""
  "$py" benchmarks/bench_vat.py --device "$device" --sizes ${BENCH_SIZES:-256 512} --iters "${BENCH_ITERS:-20}" --warmup 3 $amp 2>&1 | tee -a "$out/bench_vat.txt"
done

run=${RUN_DIR:-$out/run}
timeout "${FIT_SECONDS:-300}" "${cli[@]}" fit recipes/dehaze-det-vat.yaml -o "$run" --no-report \
  data.resize="[$size,$size]" data.size="$size" data.num_workers=8 method.nuq_fit.size="$size" \
  val.translate_size="$size" \
  train.steps="$steps" train.val_every=100 train.ckpt_every=100 train.image_every=500 train.amp=true \
  train.device="$device" 2>&1 | tr '\r' '\n' | grep -vE "(step/s|s/step)" | tail -n 40 | tee "$out/fit.txt"
echo "fit exit ${PIPESTATUS[0]} (124 = stopped at FIT_SECONDS; the best checkpoint so far is scored)" | tee -a "$out/fit.txt"
grep '"kind": "val"' "$run/metrics.jsonl" | tee "$out/val.jsonl"
cp "$run/metrics.jsonl" "$out/metrics.jsonl"

"${cli[@]}" evaluate --task yolov5n --data "${TASKBRIDGE_DATA:-../shared/data}/dawn_fog" \
  --subset recipes/splits/dawn_fog.json:test --grid 0 --translator "$run" \
  --translate-size "$size" --quality --device "$device" --out "$out/test" 2>&1 | tr '\r' '\n' | grep -vE "(img/s|s/img)" \
  | tail -n 30 | tee "$out/test.txt"

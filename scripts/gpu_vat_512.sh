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
# RUN_DIR (the training run; default OUT_DIR/run, RUN_DIR-s<seed> with several seeds), SEEDS (default "0";
# several seeds train at the same time on the one GPU), WORKERS (loader workers per run, default 8),
# BENCH=0 skips step (1). Results: OUT_DIR/fit.txt, val.jsonl (one line per validation, with its seed),
# test.txt and test-s<seed>.json.
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

# Seeds train side by side: one run is launch-bound (a 0.19 M-parameter translator), so the GPU has room.
seeds=(${SEEDS:-0})
root=${RUN_DIR:-$out/run}
run_of() { [ ${#seeds[@]} = 1 ] && echo "$root" || echo "$root-s$1"; }
: > "$out/fit.txt"; : > "$out/val.jsonl"; : > "$out/test.txt"
for s in "${seeds[@]}"; do
  ( timeout "${FIT_SECONDS:-300}" "${cli[@]}" fit recipes/dehaze-det-vat.yaml -o "$(run_of "$s")" --no-report \
      seed="$s" data.resize="[$size,$size]" data.size="$size" data.num_workers="${WORKERS:-8}" \
      method.nuq_fit.size="$size" inference.working_size="$size" \
      train.steps="$steps" train.val_every=100 train.ckpt_every=100 train.image_every=500 train.amp=true \
      train.device="$device" > "$(run_of "$s").log" 2>&1
    echo "seed $s: fit exit $? (124 = stopped at FIT_SECONDS; the best checkpoint so far is scored)" \
      >> "$(run_of "$s").log" ) &
done
wait
for s in "${seeds[@]}"; do
  run=$(run_of "$s")
  { echo "== seed $s"; tr '\r' '\n' < "$run.log" | grep -vE "[0-9](it/s|s/it|step/s|s/step)" | tail -n 25
    tr '\r' '\n' < "$run.log" | grep -E "[0-9](step/s|s/step)" | tail -n 1; } >> "$out/fit.txt"
  grep '"kind": "val"' "$run/metrics.jsonl" | sed "s/^{/{\"seed\": $s, /" >> "$out/val.jsonl"
done
cat "$out/fit.txt"

for s in "${seeds[@]}"; do
  run=$(run_of "$s")
  "${cli[@]}" evaluate --task yolov5n --data "${TASKBRIDGE_DATA:-../shared/data}/dawn_fog" \
    --subset recipes/splits/dawn_fog.json:test --grid 0 --translator "$run" --no-baseline \
    --quality --device "$device" --out "$run/test" > "$run/test.log" 2>&1 &
done
wait
for s in "${seeds[@]}"; do
  run=$(run_of "$s")
  { echo "== seed $s"; tr '\r' '\n' < "$run/test.log" | grep -vE "[0-9](it/s|s/it|img/s|s/img)" | tail -n 14; } \
    | tee -a "$out/test.txt"
  cp "$run/test/results.json" "$out/test-s$s.json"
done

#!/usr/bin/env bash
# CUDA checks of the contracts-v2 code paths and the GAN comparison of docs/results.md §4.1 re-scored under
# the reference protocol, on one CUDA GPU:
#
#   TASKBRIDGE_DATA=../shared/data TASKBRIDGE_WEIGHTS=../shared/data bash scripts/gpu_contracts_check.sh OUT_DIR
#
# (1) `fit` of the VaT recipe on CUDA with bf16 AMP for 20 steps (device/AMP state, callbacks, validation);
# (2) `evaluate --device cuda` of that run (the inference model, each stage once) and of AOD-Net, and
# `translate`/`restore --tile` on CUDA; (3) the four GAN recipes of recipes/compare/*-dehaze-det.yaml
# trained side by side (SEEDS, default "0"), each selected on the DAWN val split and scored on the
# test split with NIQE. Environment: PYTHON (default python3), JOBS_ONLY=gans|smoke to run one part.
set -uo pipefail
out=${1:?usage: gpu_contracts_check.sh OUT_DIR}
mkdir -p "$out"
py=${PYTHON:-python3}
tb() { "$py" -c "from taskbridge.cli import main; main()" "$@"; }
data=${TASKBRIDGE_DATA:-../shared/data}
export PYTHONUNBUFFERED=1
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))" | tee "$out/gpu.txt"
test_split=(--subset recipes/splits/dawn_fog.json:test)

if [ "${JOBS_ONLY:-smoke}" != gans ]; then
  start=$(date +%s)
  tb fit recipes/dehaze-det-vat.yaml train.steps=20 train.val_every=10 train.ckpt_every=10 train.amp=true \
    --device cuda -o "$out/vat-amp" --no-report > "$out/smoke.log" 2>&1; echo "fit cuda amp: rc=$?" | tee -a "$out/smoke.txt"
  # input, AOD-Net alone (the restorer the run owns) and the run; `--restorer aodnet` here would be refused
  tb evaluate --task yolov5n --data "$data/dawn_fog" "${test_split[@]}" --translator "$out/vat-amp" \
    --device cuda --grid 0 --out "$out/vat-amp-test" >> "$out/smoke.log" 2>&1; echo "evaluate cuda (translator): rc=$?" | tee -a "$out/smoke.txt"
  tb translate --ckpt "$out/vat-amp" --in "$data/dawn_fog/images" --out "$out/translated" --device cuda \
    >> "$out/smoke.log" 2>&1; echo "translate cuda: rc=$?" | tee -a "$out/smoke.txt"
  tb restore -r aodnet --in "$data/dawn_fog/images" --out "$out/restored" --device cuda --tile 256 \
    >> "$out/smoke.log" 2>&1; echo "restore cuda tiled: rc=$?" | tee -a "$out/smoke.txt"
  grep -h -m1 -A5 "^run " "$out/vat-amp-test/table.txt" | tee -a "$out/smoke.txt"
  echo "smoke: $(( $(date +%s) - start )) s" | tee -a "$out/smoke.txt"
fi

if [ "${JOBS_ONLY:-gans}" != smoke ]; then
  start=$(date +%s)
  for seed in ${SEEDS:-0}; do
    for m in cyclegan cut fastcut odcr; do
      tb fit "recipes/compare/$m-dehaze-det.yaml" seed="$seed" --device cuda -o "$out/$m-s$seed" --no-report \
        > "$out/fit-$m-s$seed.log" 2>&1 &
    done
  done
  wait
  echo "GAN fits: $(( $(date +%s) - start )) s" | tee -a "$out/gans.txt"
  for seed in ${SEEDS:-0}; do
    for m in cyclegan cut fastcut odcr; do
      tb evaluate --task yolov5n --data "$data/dawn_fog" "${test_split[@]}" --no-baseline --translator "$out/$m-s$seed" \
        --quality --device cuda --grid 0 --out "$out/$m-s$seed-test" > "$out/eval-$m-s$seed.log" 2>&1 &
    done
  done
  wait
  for seed in ${SEEDS:-0}; do
    for m in cyclegan cut fastcut odcr; do
      echo "== $m seed $seed (best: $(grep -o '"best_value": [0-9.]*' "$out/fit-$m-s$seed.log"))" | tee -a "$out/gans.txt"
      grep -h -m1 -B2 "^translator " "$out/$m-s$seed-test/table.txt" | tee -a "$out/gans.txt"   # detection
      grep -h "^translator " "$out/$m-s$seed-test/table.txt" | tail -n 1 | tee -a "$out/gans.txt"   # NIQE
      grep '"kind": "val"' "$out/$m-s$seed/metrics.jsonl" | grep -o '"step": [0-9]*\|"val/map50": [0-9.]*' \
        | paste -sd' ' | tee -a "$out/gans.txt"
    done
  done
  echo "GANs total: $(( $(date +%s) - start )) s" | tee -a "$out/gans.txt"
fi

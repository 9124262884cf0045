#!/usr/bin/env bash
# Train VaT recipes over seeds side by side on one CUDA GPU and pack what scoring needs, so that the runs
# are scored on the CPU machine with scripts/vat_experiments.py under exactly the protocol of every other
# row (it finds the fits finished and only evaluates them):
#
#   RECIPES="dehaze-det-vat-learn-feat lowlight-cls-vat-learn-feat" SEEDS="0 1 2" \
#     TASKBRIDGE_DATA=DATA TASKBRIDGE_WEIGHTS=DATA bash scripts/gpu_vat_fits.sh OUT_DIR [override ...]
#   # back on the CPU machine: unpack OUT_DIR/<recipe>.tgz into runs/tables, then
#   python scripts/vat_experiments.py dehaze --recipes dehaze-det-vat-learn-feat --seeds 0 1 2
#
# Every (recipe, seed) trains at once (the steps are launch-bound: the GPU has room, docs/results.md §5.1);
# each gets FIT_SECONDS (default 420) of wall time and resumes with --resume auto when run again. Per
# recipe OUT_DIR/<recipe>.tgz holds each run's metrics.jsonl, run_info.json, split_pools.json and the
# weights and metadata of its best and last checkpoints (no optimizer state, images or TensorBoard
# files). Environment: PYTHON (python3), DEVICE (cuda), WORKERS (loader workers per run, 2), RUN_ROOT
# (runs/tables), DATA (the data root, default $TASKBRIDGE_DATA or ../shared/data).
set -uo pipefail
out=${1:?usage: gpu_vat_fits.sh OUT_DIR [override ...]}
shift
mkdir -p "$out"
py=${PYTHON:-python3}
root=${RUN_ROOT:-runs/tables}
export PYTHONUNBUFFERED=1
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$out/fits.txt"
start=$(date +%s)
for recipe in ${RECIPES:?set RECIPES to recipe names under recipes/}; do
  for seed in ${SEEDS:-0}; do
    run="$root/$recipe-s$seed"
    ( timeout "${FIT_SECONDS:-420}" "$py" -c "from taskbridge.cli import main; main()" fit "recipes/$recipe.yaml" \
        seed="$seed" -o "$run" --no-report --resume auto data.root="${DATA:-${TASKBRIDGE_DATA:-../shared/data}}" \
        train.device="${DEVICE:-cuda}" data.num_workers="${WORKERS:-2}" "$@" > "$out/$recipe-s$seed.log" 2>&1
      echo "$recipe seed $seed: fit exit $? after $(( $(date +%s) - start )) s (124 = stopped at FIT_SECONDS)" \
        | tee -a "$out/fits.txt" ) &
  done
done
wait
for recipe in $RECIPES; do
  files=()
  for seed in ${SEEDS:-0}; do
    run="$root/$recipe-s$seed"
    [ -d "$run/checkpoints" ] || continue
    last="$run/checkpoints/$(cat "$run/checkpoints/LAST" 2>/dev/null || echo none)"
    for f in "$run"/metrics.jsonl "$run"/run_info.json "$run"/split_pools.json "$run"/checkpoints/LAST \
             "$run"/checkpoints/best/meta.json "$run"/checkpoints/best/model.safetensors \
             "$last"/meta.json "$last"/model.safetensors; do
      [ -f "$f" ] && files+=("$f")
    done
  done
  [ ${#files[@]} -gt 0 ] && tar czf "$out/$recipe.tgz" "${files[@]}"
done
ls -la "$out" | tee -a "$out/fits.txt"

#!/usr/bin/env bash
# One session on a GPU machine (the device tool): the CUDA tests, and the issue-4 accuracy recipe for seeds 0 and 1
# run side by side on the one GPU (amp=False as in the recipe; RECIPE_AMP=bf16 trains under bf16 autocast instead:
# the accuracy check for CPU amp=bf16 training, whose dtype arithmetic it shares). Run from the repo root; needs no
# install when torch, opencv, pyyaml, tqdm and matplotlib are there. The shared material is read from
# $YOLOSEG_SHARED_DIR (default ../shared); outputs go to $OUT (default /tmp/gpu-session).
set -u
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export YOLOSEG_CONFIG_DIR=/tmp/ys/config YOLOSEG_CACHE_DIR=/tmp/ys/cache YOLOSEG_RUNS_DIR=/tmp/ys/runs
export YOLOSEG_DATASETS_DIR=/tmp/ys/datasets
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  python3 -c "import torch, cv2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cv2', cv2.__version__)"
} > "$OUT/session.log" 2>&1
for seed in 0 1; do
  timeout "${RECIPE_TIMEOUT:-470}" python3 bench/train_recipe.py --seeds "$seed" --device 0 --workers 6 \
    --amp "${RECIPE_AMP:-false}" --project /tmp/recipe --out "$OUT/recipe_seed$seed.json" \
    > "$OUT/recipe_seed$seed.log" 2>&1 &
done
timeout "${TEST_TIMEOUT:-200}" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py >> "$OUT/session.log" 2>&1
echo "test_cuda rc=$?" >> "$OUT/session.log"
wait
for seed in 0 1; do cp "/tmp/recipe/seed$seed/results.csv" "$OUT/results_seed$seed.csv" 2>/dev/null; done
tail -n 30 "$OUT/session.log"; tail -c 1500 "$OUT"/recipe_seed*.log

#!/usr/bin/env bash
# The CPU benchmarks on another machine's CPU (e.g. the host CPU of a device-tool GPU machine), pinned with taskset to
# two CPUs on distinct physical cores and run with 2 threads, like the incumbent's reference machine (2 cores of a
# Xeon). Run from the repo root; needs no install where torch, opencv, pyyaml, onnx and onnxruntime are present.
# OpenVINO is unpacked from $OV_DIR/*.zip|*.whl when given. The shared material is read from ../shared (linked to
# $YOLOSEG_SHARED_DIR when that is set); outputs (JSON + logs) go to $OUT (default /tmp/cpu-session).
# MIN_BF16_GFLOPS=1500 stops after compute_floor on a host slower than that (see below).
set -u
OUT=${OUT:-/tmp/cpu-session}
mkdir -p "$OUT" /tmp/site
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export YOLOSEG_CONFIG_DIR=/tmp/ys/config YOLOSEG_CACHE_DIR=/tmp/ys/cache YOLOSEG_RUNS_DIR=/tmp/ys/runs
export YOLOSEG_DATASETS_DIR=/tmp/ys/datasets
if [ -n "${YOLOSEG_SHARED_DIR:-}" ] && [ ! -e ../shared ]; then ln -s "$(realpath "$YOLOSEG_SHARED_DIR")" ../shared; fi
for f in "${OV_DIR:-/nonexistent}"/*.zip "${OV_DIR:-/nonexistent}"/*.whl; do
  [ -f "$f" ] && python3 -m zipfile -e "$f" /tmp/site
done
# two CPUs on distinct physical cores (lscpu -p: CPU,Core,Socket)
CPUS=${CPUS:-$(lscpu -p=CPU,CORE | grep -v '^#' | sort -t, -k2,2n -u | head -2 | cut -d, -f1 | paste -sd,)}
{ lscpu; echo "pinned to CPUs $CPUS"; python3 -c "import torch, cv2, onnxruntime; print('torch', torch.__version__,
'cv2', cv2.__version__, 'onnxruntime', onnxruntime.__version__, 'capability', torch.backends.cpu.get_cpu_capability(),
'amx', torch.cpu._is_amx_tile_supported(), 'avx512_bf16', torch.cpu._is_avx512_bf16_supported())"
  python3 -c "import openvino; print('openvino', openvino.__version__)"
  python3 -c "import openvino.tools.ovc"; } > "$OUT/machine.txt" 2>&1
STEPS=${STEPS:-compute_floor forward_profile forward_interleave fusion_ab val_shapes val_shapes_half predict predict_kept incumbent_config malloc_ab val val_half train_epoch train_shapes train_shapes_bf16 train_profile train_profile_bf16 openvino_precision}
run() {  # run NAME SECONDS SCRIPT ARGS...: JSON to $OUT/NAME.json, log to $OUT/NAME.log (when NAME is in $STEPS)
  local name=$1 seconds=$2
  shift 2
  [[ " $STEPS " == *" $name "* ]] || return 0
  timeout "$seconds" taskset -c "$CPUS" python3 "$@" > "$OUT/$name.out" 2> "$OUT/$name.log"
  local rc=$?  # the JSON is the last object printed: progress lines (an export's, a validation's) come before it
  python3 -c 'import json, sys; from bench.run import last_json; print(json.dumps(last_json(sys.stdin.read()), indent=1))' \
    < "$OUT/$name.out" > "$OUT/$name.json"
  echo "$name rc=$rc $(tail -c 600 "$OUT/$name.json" | tr '\n' ' ')"
}
SHAPES=(--weights ../shared/reference/yolo11n-seg-shapes.pt --data ../shared/data/shapes-ref-seg/data.yaml --imgsz 256)
run compute_floor 60 bench/compute_floor.py --threads 2
# hosts of one machine kind differ up to 3x in measured bf16 peak (bench/results/xeon-amx-*): MIN_BF16_GFLOPS=N stops
# here (rc 3) on a host whose bf16 conv peak is below N, so a session can hand it back and draw another
if [ -n "${MIN_BF16_GFLOPS:-}" ]; then
  peak=$(python3 -c 'import json, sys; print(int(json.load(open(sys.argv[1])).get("bf16_conv3x3_gflops") or 0))' \
    "$OUT/compute_floor.json" 2>/dev/null || echo 0)
  if [ "$peak" -lt "$MIN_BF16_GFLOPS" ]; then
    echo "this host's bf16 conv peak is $peak GFLOP/s, under MIN_BF16_GFLOPS=$MIN_BF16_GFLOPS (needs compute_floor in STEPS): stopping"
    exit 3
  fi
fi
run forward_profile 60 bench/forward_profile.py --threads 2
run forward_interleave "${INTERLEAVE_TIMEOUT:-90}" bench/forward_profile.py --threads 2 --interleave 30 ${INTERLEAVE_ARGS:-}
# Conv+SiLU fusion (fp32, and bf16), fused against unfused predictors called in turn (and their shapes mAPs)
run fusion_ab 420 bench/fusion_ab.py --threads 2 --rounds 40 --data ../shared/data/shapes-ref-seg/data.yaml
run val_shapes 60 bench/val_time.py --threads 2 --runs 1 "${SHAPES[@]}"
run val_shapes_half 60 bench/val_time.py --threads 2 --runs 1 --half "${SHAPES[@]}"
run predict "${PREDICT_TIMEOUT:-240}" bench/predict_latency.py --threads 2 --runs 15 ${PREDICT_ARGS:-} \
  --backends ${BACKENDS:-pytorch pytorch_eager pytorch_bf16 pytorch_bf16_eager onnx openvino openvino_auto openvino_auto_square}
# the same, with glibc keeping freed memory as the yolo command does (utils.memory), and the A/B of that setting
run predict_kept "${PREDICT_TIMEOUT:-240}" bench/predict_latency.py --threads 2 --runs 15 --keep-freed-memory \
  ${PREDICT_ARGS:-} --backends ${BACKENDS:-pytorch pytorch_bf16 openvino_auto}
# the incumbent's PyTorch and OpenVINO predict paths rebuilt from yoloseg's parts, round-robin with ours on this host
run incumbent_config 420 bench/incumbent_config.py --threads 2 --rounds 30 --keep-freed-memory --val-pairs 2
run malloc_ab 420 bench/malloc_ab.py --threads 2 --pairs 4 --runs 30
run val 120 bench/val_time.py --threads 2 --runs 2
run val_half 120 bench/val_time.py --threads 2 --runs 2 --half
run train_epoch "${TRAIN_TIMEOUT:-180}" bench/train_epoch.py --threads 2 --epochs 3
# seconds per epoch of the accuracy recipe (shapes-ref-seg, imgsz 256, batch 16): the incumbent's 16.7 s at 2 threads
run train_shapes "${TRAIN_TIMEOUT:-180}" bench/train_recipe.py --threads 2 --seeds 0 --stop-after 4
run train_shapes_bf16 "${TRAIN_TIMEOUT:-180}" bench/train_recipe.py --threads 2 --seeds 0 --stop-after 4 --amp bf16
# where a training epoch's CPU time goes (torch.profiler, one shapes epoch without val)
run train_profile "${TRAIN_TIMEOUT:-180}" bench/train_profile.py --threads 2
run train_profile_bf16 "${TRAIN_TIMEOUT:-180}" bench/train_profile.py --threads 2 --amp bf16
# OpenVINO fp32 / int8 IRs at fp32 / bf16 precision against PyTorch, predicting in turn, and their shapes mAPs (int8
# only where nncf is installed)
run openvino_precision "${OV_PRECISION_TIMEOUT:-600}" bench/openvino_precision.py --threads 2 --rounds 20

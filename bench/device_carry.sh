#!/usr/bin/env bash
# Builds .devdata/ (gitignored): what the device tool's `run` carries for bench/cpu_session.sh on its machine, whose
# checkout has no ../shared and whose Python (3.12 so far) has no OpenVINO. Run here, from the repo root, once per
# session (a fresh sandbox has no .devdata); then call `run` with
#   carry=[".devdata/ov", ".devdata/sf"]
#   command: OUT=/tmp/cs OV_DIR=.devdata/ov YOLOSEG_SHARED_DIR=.devdata/sf STEPS='...' bash bench/cpu_session.sh;
#            tar czf $OUT/cs.tgz -C /tmp cs
# (at most 8 files come back from $OUT: tar them). The carry and the working tree together must stay under 64 MiB:
# the data and checkpoints take 32 MiB, OpenVINO slimmed to its CPU plugin and its IR / ONNX frontends ~25 MiB
# zipped. DEVICE_PYTHON (default 3.12) and OV_VERSION (default: the version installed here) pick the wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=../shared
py=${DEVICE_PYTHON:-3.12}
ov=${OV_VERSION:-$(python3 -c 'import openvino; print(openvino.__version__.split("-")[0])' 2>/dev/null || echo 2026.4.1)}
rm -rf .devdata/sf .devdata/ov
mkdir -p .devdata/sf/data .devdata/sf/reference .devdata/ov
for d in coco128-seg shapes-ref-seg images; do
  cp -r "$shared/data/$d" .devdata/sf/data/
done
cp "$shared"/reference/{yolo11n-seg-coco128.pt,yolo11n-seg-shapes.pt,reference-train.md} .devdata/sf/reference/
# the golden val metrics and predictions (JSON, 1.4 MiB) that tests/test_cuda.py compares a GPU run with
mkdir -p .devdata/sf/reference/golden
cp "$shared"/reference/golden/*.json .devdata/sf/reference/golden/
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$tmp/wheels" "openvino==$ov" openvino-telemetry
python3 -m zipfile -e "$tmp"/wheels/openvino-*.whl "$tmp/site"
# what a CPU benchmark never loads: the GPU and NPU plugins, the other frameworks' frontends, the GPU kernel cache
rm -f "$tmp"/site/openvino/libs/libopenvino_intel_{gpu,npu}_plugin.so "$tmp"/site/openvino/libs/cache.json
rm -f "$tmp"/site/openvino/libs/libopenvino_{tensorflow,tensorflow_lite,paddle,pytorch,jax,gguf}_frontend.so*
rm -rf "$tmp"/site/openvino/include "$tmp"/site/openvino/frontend/{tensorflow,paddle,pytorch,jax}
python3 - "$tmp/site" .devdata/ov/openvino-slim.zip <<'PY'
import sys, zipfile
from pathlib import Path
root, out = Path(sys.argv[1]), sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_LZMA) as z:  # LZMA: the shared libraries pack ~25% smaller than deflate
    for f in sorted(root.rglob("*")):
        if f.is_file():
            z.write(f, f.relative_to(root))
PY
cp "$tmp"/wheels/openvino_telemetry-*.whl .devdata/ov/
du -sh .devdata/sf .devdata/ov

"""glibc malloc keeping freed memory (yoloseg.utils.memory, what the `yolo` command does) against its defaults: prints
JSON.

The thresholds are settings of a whole process, so each side runs in a child process of its own, the two alternating
for --pairs pairs (a noisy machine's drift falls on both alike). A child predicts the image --runs times after a
warm-up (PyTorch, fp32 and, on a CPU with bf16 hardware, half=True, masks.xy read) and reports its median end-to-end
ms and its page faults per predict. Reports the medians over the pairs, the median of the paired differences, and in
how many pairs keeping freed memory was faster.
    python bench/malloc_ab.py [--pairs 6] [--runs 40] [--threads 2] [--weights W.pt] [--image bus.jpg]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"


def child(a: argparse.Namespace) -> None:
    """One side: predict a.image a.runs times; print JSON."""
    import torch

    from yoloseg.utils.memory import keep_freed_memory, malloc_status

    if a.child == "keep":
        keep_freed_memory()
    torch.set_num_threads(a.threads)
    from yoloseg import YOLO

    model = YOLO(a.weights)
    for _ in range(8):  # past the graph's tracing
        model.predict(a.image, imgsz=a.imgsz, half=a.half, device="cpu", verbose=False)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ms = []
    for _ in range(a.runs):
        t = time.perf_counter()
        r = model.predict(a.image, imgsz=a.imgsz, half=a.half, device="cpu", verbose=False)[0]
        _ = r.masks.xy if r.masks is not None else None
        ms.append((time.perf_counter() - t) * 1e3)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / a.runs
    print(json.dumps({"median_ms": statistics.median(ms), "faults_per_predict": faults, "malloc": malloc_status()}))


def side(a: argparse.Namespace, mode: str, half: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--runs", str(a.runs), "--threads", str(a.threads)]
    cmd += ["--weights", a.weights, "--image", a.image, "--imgsz", str(a.imgsz)] + (["--half"] if half else [])
    env = {k: v for k, v in os.environ.items() if k != "YOLOSEG_KEEP_FREED_MEMORY"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--runs", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", default=str(SHARED / "reference" / "yolo11n-seg-coco128.pt"))
    p.add_argument("--image", default=str(SHARED / "data" / "images" / "bus.jpg"))
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--half", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", choices=["default", "keep"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a)
        return
    from yoloseg.engine.inference import cpu_bf16_supported
    from yoloseg.utils.torch_utils import cpu_name

    report: dict = {"bench": "malloc keep freed memory A/B", "cpu": cpu_name(), "threads": a.threads,
                    "image": Path(a.image).name, "pairs": a.pairs, "runs": a.runs}  # fmt: skip
    for half in [False, True] if cpu_bf16_supported() else [False]:
        rows: dict[str, list[dict]] = {"default": [], "keep": []}
        for i in range(a.pairs):
            for mode in ("default", "keep") if i % 2 == 0 else ("keep", "default"):
                rows[mode].append(side(a, mode, half))
        diffs = [k["median_ms"] - d["median_ms"] for d, k in zip(rows["default"], rows["keep"])]
        report["bf16" if half else "fp32"] = {
            mode: {
                "median_ms": round(statistics.median(r["median_ms"] for r in runs), 2),
                "faults_per_predict": round(statistics.median(r["faults_per_predict"] for r in runs), 1),
                "runs_ms": [round(r["median_ms"], 2) for r in runs],
            }
            for mode, runs in rows.items()
        } | {
            "median_paired_diff_ms": round(statistics.median(diffs), 2),
            "keep_faster_pairs": sum(d < 0 for d in diffs),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

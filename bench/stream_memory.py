"""Memory over a video stream: predict on a generated video with stream=True and track the process RSS.

Prints JSON {frames, rss_mb_after_warmup, rss_mb_end, growth_mb, ms_per_frame}. Flat memory means growth near 0.
    python bench/stream_memory.py [--seconds 40] [--fps 25] [--size 640x480] [--imgsz 320]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, for bench.common
from bench.common import SHARED, add_keep_freed_memory, setup_process  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_video(path: Path, frames: int, fps: int, w: int, h: int) -> Path:
    """Moving shapes over a gradient, mp4v."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    grad = np.linspace(40, 200, w, dtype=np.uint8)[None, :, None].repeat(h, 0).repeat(3, 2)
    for i in range(frames):
        img = grad.copy()
        x = int((i * 7) % (w - 120))
        cv2.ellipse(img, (x + 60, h // 3), (50, 30), 0, 0, 360, (40, 60, 220), -1)
        cv2.rectangle(img, (w - x - 120, h // 2), (w - x - 30, h // 2 + 80), (200, 120, 30), -1)
        writer.write(img)
    writer.release()
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--weights", default=str(SHARED / "reference" / "yolo11n-seg-shapes.pt"))
    add_keep_freed_memory(parser)
    args = parser.parse_args()
    setup_process(args.keep_freed_memory)
    from yoloseg import YOLO
    from yoloseg.utils.memory import malloc_status

    w, h = map(int, args.size.split("x"))
    frames = args.seconds * args.fps
    video = make_video(Path(tempfile.mkdtemp()) / "stream.mp4", frames, args.fps, w, h)
    model = YOLO(args.weights)
    rss, n = [], 0
    t0 = time.perf_counter()
    for result in model.predict(str(video), stream=True, imgsz=args.imgsz, device="cpu", verbose=False):
        _ = result.masks.xy if result.masks is not None else None
        n += 1
        rss.append(rss_mb())
    elapsed = time.perf_counter() - t0
    warm = rss[min(50, len(rss) - 1)]
    print(json.dumps({
        "malloc": malloc_status(),
        "bench": "stream memory", "frames": n, "video_seconds": args.seconds, "imgsz": args.imgsz,
        "rss_mb_after_warmup": round(warm, 1), "rss_mb_end": round(rss[-1], 1), "rss_mb_max": round(max(rss), 1),
        "growth_mb": round(rss[-1] - warm, 1), "ms_per_frame": round(elapsed / max(n, 1) * 1e3, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()

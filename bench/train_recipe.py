"""The accuracy recipe of issue 4: yolo11n-seg from scratch on shapes-ref-seg, imgsz 256, batch 16, 80 epochs.

Prints JSON with box / mask mAP50 and mAP50-95 of best.pt on the val split and the wall time per epoch, per seed,
next to the incumbent's figures (../shared/reference/reference-train.md). Usage:
    python bench/train_recipe.py --seeds 0 1 [--epochs 80] [--threads 2] [--out bench/results/recipe.json]
    python bench/train_recipe.py --seeds 0 --device 0            # on a GPU (bench/gpu_session.sh runs two seeds)
    python bench/train_recipe.py --seeds 0 --stop-after 8        # CPU seconds per epoch from the first 8 epochs
    python bench/train_recipe.py --seeds 0 --stop-after 3 --loader-cpus 16  # loader worker processes on a pinned CPU
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("YOLOSEG_SHARED_DIR") or REPO.parent / "shared")
INCUMBENT = {
    "box_map50": 0.701,
    "box_map": 0.531,
    "mask_map50": 0.697,
    "mask_map": 0.508,
    "s_per_epoch": 16.7,
    "at_imgsz320": {"box_map50": 0.748, "box_map": 0.575, "mask_map50": 0.743, "mask_map": 0.551},
}


def run(
    seed: int,
    epochs: int,
    project: Path,
    workers: int,
    device: str,
    stop_after: int = 0,
    amp: bool | str = False,
    compile: bool | str = False,
) -> dict:
    from yoloseg import YOLO

    data = SHARED / "data" / "shapes-ref-seg" / "data.yaml"
    model = YOLO("yolo11n-seg.yaml")
    if stop_after:  # time the first epochs of the full schedule (mosaic on), e.g. for the CPU wall time per epoch

        def stop(trainer) -> None:
            trainer.stop = trainer.stop or trainer.epoch + 1 >= stop_after

        model.add_callback("on_fit_epoch_end", stop)
    t0 = time.time()
    model.train(
        data=str(data), epochs=epochs, imgsz=256, batch=16, seed=seed, amp=amp, workers=workers, device=device,
        project=str(project), name=f"seed{seed}", exist_ok=True, plots=False, compile=compile,
    )  # fmt: skip
    wall = time.time() - t0
    with open(project / f"seed{seed}" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    times = [float(r["time"]) for r in rows]
    per_epoch = [b - a for a, b in zip([0.0, *times[:-1]], times)]
    m = model.val(
        data=str(data), imgsz=256, batch=16, device=device, plots=False, project=str(project), name=f"val{seed}"
    )
    m320 = model.val(
        data=str(data), imgsz=320, batch=16, device=device, plots=False, project=str(project), name=f"val320_{seed}"
    )
    return {
        "seed": seed,
        "epochs": len(rows),
        "box_map50": round(m.box.map50, 4),
        "box_map": round(m.box.map, 4),
        "mask_map50": round(m.seg.map50, 4),
        "mask_map": round(m.seg.map, 4),
        "at_imgsz320": {
            "box_map50": round(m320.box.map50, 4),
            "box_map": round(m320.box.map, 4),
            "mask_map50": round(m320.seg.map50, 4),
            "mask_map": round(m320.seg.map, 4),
        },
        "s_per_epoch": [round(t, 2) for t in per_epoch],
        "s_per_epoch_median": round(statistics.median(per_epoch), 2),
        "wall_s": round(wall, 1),
        "device": device,
        "stopped_after": stop_after or None,
    }


def machine(device: str) -> str:
    """The processor (and GPU) the figures come from, with torch's thread count."""
    import torch

    from yoloseg.utils.torch_utils import cpu_name

    text = f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads"
    if device != "cpu" and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stop-after", type=int, default=0, help="stop after N epochs of the schedule (timing)")
    parser.add_argument("--device", default="cpu", help="cpu, or 0 for the first GPU (the recipe itself is CPU)")
    parser.add_argument("--project", default="")
    parser.add_argument("--out", default="")
    parser.add_argument("--amp", default="false", help="false (the recipe), or bf16: bf16 autocast (AMX CPU or GPU)")
    parser.add_argument(
        "--compile", default="false", help="false (the recipe), or true / a mode: torch.compile training"
    )
    parser.add_argument(
        "--loader-cpus", type=int, default=0,
        help="choose the CPU loader workers as if the process could use N CPUs (e.g. 16 under a 2-CPU taskset: the "
        "worker processes that yoloseg before session 10 started there, to compare with loading in the main process)",
    )  # fmt: skip
    args = parser.parse_args()
    import torch

    if args.loader_cpus:
        from yoloseg.utils import torch_utils

        torch_utils.usable_cpus = lambda: args.loader_cpus  # read by loader_workers only (the RAM cache keeps its own)

    if args.threads:
        torch.set_num_threads(args.threads)
    project = Path(args.project or tempfile.mkdtemp(prefix="recipe-"))
    amp = False if args.amp.lower() in ("false", "fp32", "0") else args.amp
    compile = {"false": False, "0": False, "none": False, "true": True, "1": True}.get(
        args.compile.lower(), args.compile
    )
    runs = [run(s, args.epochs, project, args.workers, args.device, args.stop_after, amp, compile) for s in args.seeds]
    result = {"recipe": "shapes-ref-seg yolo11n-seg imgsz256 batch16", "amp": amp, "runs": runs, "incumbent": INCUMBENT}
    result["compile"] = compile
    result["machine"] = machine(args.device)
    result["loader_cpus"] = args.loader_cpus or None
    for key in ("box_map50", "box_map", "mask_map50", "mask_map", "s_per_epoch_median"):
        result[f"mean_{key}"] = round(statistics.mean(r[key] for r in runs), 4)
    result["epoch_time_ratio"] = round(result["mean_s_per_epoch_median"] / INCUMBENT["s_per_epoch"], 3)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

"""OpenVINO precisions on a CPU, in one process: prints JSON.

Exports the checkpoint to OpenVINO twice into a temporary folder (weights copied there, nothing written beside them):
a plain fp32 IR, and an int8 one (NNCF post-training quantisation calibrated on `--calibration-data`'s val split;
skipped when nncf is not installed). Then, for each IR run at the fp32 and at the bf16 inference precision (`half=True`, only on a
CPU with bf16 hardware), it predicts the images in turn, the order rotating each round so a noisy machine's drift falls
on all alike, and reports median end-to-end ms per image (masks.xy included) and in how many rounds each beat the fp32
IR at fp32; the PyTorch model (fp32, and bf16 where the hardware has it) takes its turn too, for reference. With
`--data` it also validates `--val-weights` the same ways (its int8 IR calibrated on `--data`; mAPs only: one cold
run each is no timing), and the PyTorch model in fp32 for the baseline. Always on the CPU.
    python bench/openvino_precision.py [--weights W.pt] [--data shapes-ref-seg/data.yaml] [--imgsz 640]
        [--val-imgsz 320] [--rounds 20] [--threads 2] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"


def export(weights: Path, folder: Path, imgsz: int, int8: bool, data: str | None) -> Path:
    """weights exported to OpenVINO in `folder` (a copy of the weights goes there first)."""
    from yoloseg import YOLO

    name = "int8" if int8 else "fp32"
    (folder / name).mkdir(parents=True)
    copy = folder / name / weights.name
    shutil.copy(weights, copy)
    return Path(YOLO(str(copy)).export(format="openvino", imgsz=imgsz, int8=int8, data=data))


def mAPs(model: str, data: str, imgsz: int, half: bool) -> dict:
    from yoloseg import YOLO

    m = YOLO(model).val(data=data, imgsz=imgsz, batch=16, half=half, device="cpu", plots=False, verbose=False)
    return {
        "box_map50_95": round(m.box.map, 5),
        "mask_map50_95": round(m.seg.map, 5),
        "box_map50": round(m.box.map50, 5),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(SHARED / "reference" / "yolo11n-seg-coco128.pt"))
    p.add_argument("--val-weights", default=str(SHARED / "reference" / "yolo11n-seg-shapes.pt"))
    p.add_argument("--data", default=str(SHARED / "data" / "shapes-ref-seg" / "data.yaml"))
    p.add_argument("--calibration-data", default=str(SHARED / "data" / "coco128-seg" / "data.yaml"))
    p.add_argument(
        "--images", nargs="+", default=[str(SHARED / "data" / "images" / f) for f in ("bus.jpg", "zidane.jpg")]
    )
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--val-imgsz", type=int, default=320)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here (atomically)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from yoloseg import YOLO
    from yoloseg.engine.inference import cpu_bf16_supported
    from yoloseg.utils.torch_utils import cpu_name

    has_nncf = importlib.util.find_spec("nncf") is not None
    halves = [False, True] if cpu_bf16_supported() else [False]
    report: dict = {
        "bench": "openvino precision", "cpu": cpu_name(), "threads": torch.get_num_threads(), "imgsz": a.imgsz,
        "rounds": a.rounds, "weights": Path(a.weights).name, "nncf": has_nncf, "bf16_hardware": cpu_bf16_supported(),
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        irs = {"fp32": export(Path(a.weights), Path(tmp), a.imgsz, False, None)}
        if has_nncf:
            irs["int8"] = export(Path(a.weights), Path(tmp), a.imgsz, True, a.calibration_data)
        runs = {
            f"{ir}_ir_{'bf16' if half else 'fp32'}": (YOLO(str(path)), half)
            for ir, path in irs.items()
            for half in halves
        }
        runs.update({f"pytorch_{'bf16' if half else 'fp32'}": (YOLO(a.weights), half) for half in halves})
        predict: dict = {}
        for image in a.images:
            for model, half in runs.values():  # compile and warm up
                for _ in range(3):
                    model(image, half=half, imgsz=a.imgsz, device="cpu", verbose=False)
            ms: dict[str, list[float]] = {k: [] for k in runs}
            detections = {}
            for r in range(a.rounds):
                names = list(runs)
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    model, half = runs[name]
                    t = time.perf_counter()
                    res = model(image, half=half, imgsz=a.imgsz, device="cpu", verbose=False)[0]
                    _ = res.masks.xy if res.masks is not None else None
                    ms[name].append((time.perf_counter() - t) * 1e3)
                    detections[name] = len(res.boxes)
            base = ms["fp32_ir_fp32"]
            predict[Path(image).name] = {
                name: {
                    "end_to_end_ms": round(statistics.median(v), 2),
                    "rounds_faster_than_fp32": sum(x < b for x, b in zip(v, base)) if name != "fp32_ir_fp32" else None,
                    "detections": detections[name],
                }
                for name, v in ms.items()
            }
        report["predict"] = predict
        if a.data and Path(a.data).exists() and Path(a.val_weights).exists():
            vals = {"pytorch_fp32": mAPs(a.val_weights, a.data, a.val_imgsz, False)}
            val_irs = {"fp32": export(Path(a.val_weights), Path(tmp) / "val", a.val_imgsz, False, None)}
            if has_nncf:
                val_irs["int8"] = export(Path(a.val_weights), Path(tmp) / "val", a.val_imgsz, True, a.data)
            for ir, path in val_irs.items():
                for half in halves:
                    vals[f"{ir}_ir_{'bf16' if half else 'fp32'}"] = mAPs(str(path), a.data, a.val_imgsz, half)
            report["val"] = {"data": a.data, "imgsz": a.val_imgsz, "weights": Path(a.val_weights).name, "maps": vals}
    text = json.dumps(report, indent=1)
    print(text)
    if a.out:
        from yoloseg.utils.files import atomic_write_text

        atomic_write_text(a.out, text + "\n")


if __name__ == "__main__":
    main()

"""The per-step bookkeeping of CPU training besides forward and backward, timed alone: prints JSON.

For yolo11n-seg's parameters with random gradients: the optimizer step (PyTorch's per-parameter loop, foreach, and the
fused kernel that build_optimizer picks on a CPU), the EMA update (one mul_ / add_ per tensor against ModelEMA's two
foreach calls) and the gradient clipping the trainer does. Variants alternate, rounds times; medians in ms.
    python bench/train_step_parts.py [--threads 2] [--rounds 30] [--model yolo11n-seg.yaml] [--optimizer AdamW]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--model", default="yolo11n-seg.yaml")
    parser.add_argument("--optimizer", default="AdamW", choices=["AdamW", "Adam", "SGD"])
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from yoloseg.engine.optim import ModelEMA, build_optimizer
    from yoloseg.nn.graph import YOLOModel
    from yoloseg.utils.log import LOGGER

    LOGGER.disabled = True  # stdout is the JSON

    model = YOLOModel(args.model)
    params = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator) * 1e-3

    optimizers = {}
    for kind in ("loop", "foreach", "fused"):
        opt, _ = build_optimizer(model, args.optimizer, lr=1e-3, momentum=0.9, decay=5e-4)
        for g in opt.param_groups:  # build_optimizer picks fused on a CPU; the others for comparison
            g["fused"], g["foreach"] = (True, None) if kind == "fused" else (None, kind == "foreach")
        optimizers[kind] = opt
    ema = ModelEMA(model, updates=100)

    def ema_per_tensor() -> None:
        d = ema.decay()
        state = model.state_dict()
        with torch.no_grad():
            for k, v in ema.ema.state_dict().items():
                if v.dtype.is_floating_point:
                    v.mul_(d).add_(state[k], alpha=1 - d)

    steps = {f"optimizer_{kind}": opt.step for kind, opt in optimizers.items()}
    steps.update(
        ema_per_tensor=ema_per_tensor,
        ema_foreach=lambda: ema.update(model),
        clip_grad_norm=lambda: torch.nn.utils.clip_grad_norm_(params, max_norm=10.0),
    )
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(args.rounds + 3):
        for name, fn in steps.items():
            t = time.perf_counter()
            fn()
            if r >= 3:  # warm-up rounds dropped
                times[name].append((time.perf_counter() - t) * 1e3)
    print(
        json.dumps(
            {
                "bench": "train_step_parts",
                "model": args.model,
                "optimizer": args.optimizer,
                "parameters": len(params),
                "threads": torch.get_num_threads(),
                "rounds": args.rounds,
                "ms_median": {k: round(statistics.median(v), 2) for k, v in times.items()},
                "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

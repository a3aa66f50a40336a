"""Where a CPU forward pass of yolo11n-seg spends its time, per operator (torch.profiler): prints JSON.

The inference copy the predictor runs (BN fused, channels-last), batch 1 at 640x480 (bus.jpg's letterbox), in fp32 and,
on a CPU with bf16 hardware, under the bf16 autocast of half=True; each eagerly and as the predictor's TorchScript
graph. Shows what is left besides the convolutions.
The shipped forwards fuse each Conv block with its SiLU (inference.fuse_conv_silu); the `*_unfused` rows run without.
Also times experiments that call oneDNN's plain convolution directly (see conv_variant) or fuse with oneDNN Graph
(llga_forward), with their distance from the unfused fp32 outputs.
    python bench/forward_profile.py [--threads N] [--runs 10]
    python bench/forward_profile.py --interleave 30   # the variants timed round-robin (a noisy machine's drift
                                                       # falls on all alike), and the slowest ops with their shapes
    python bench/forward_profile.py --interleave 30 --compile  # plus torch.compile'd variants (compile time reported)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def profile_forward(forward, x: torch.Tensor, runs: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(3):
            forward(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            forward(x)
            times.append((time.perf_counter() - t) * 1e3)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                forward(x)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    return {
        "forward_ms_median": round(statistics.median(times), 2),
        "top_ops_share": {e.key: round(e.self_cpu_time_total / total, 3) for e in ops[:12]},
    }


def conv_variant(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """An experiment, not the shipped path: a copy of `model` whose every Conv2d runs through
    aten.mkldnn_convolution (PyTorch sends small batch-1 convolutions to its slower native kernel otherwise), unfused.
    Inputs are cast to `dtype` (bf16 under autocast: the op is not on autocast's lists).
    """
    import copy

    from yoloseg.engine.inference import bf16_weights
    from yoloseg.nn.blocks import DFL

    model = bf16_weights(model) if dtype == torch.bfloat16 else copy.deepcopy(model)
    skip = {id(m.conv) for m in model.modules() if isinstance(m, DFL)}

    def direct(conv: torch.nn.Conv2d):
        args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return torch.ops.aten.mkldnn_convolution(x.to(dtype), conv.weight, conv.bias, *args)

        return forward

    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and id(m) not in skip:
            m.forward = direct(m)
    return model


def own(model: torch.nn.Module, **kwargs):
    """A CompiledForward of a copy of `model` (a CPU one fuses its model's Conv blocks in place at the first input:
    the variants here share one model)."""
    import copy

    from yoloseg.engine.inference import CompiledForward

    return CompiledForward(copy.deepcopy(model), **kwargs)


def graph_forward(model: torch.nn.Module, x: torch.Tensor, bf16: bool = False, fuse: bool = True):
    """The forward the predictor runs once it has traced its TorchScript graph (see CompiledForward.prepare); with
    `fuse=False`, as it ran before its Conv blocks were fused with their SiLU."""
    forward = own(model, bf16=bf16, graphs=True, fuse=fuse)
    forward.prepare(x)
    return forward


def llga_forward(model: torch.nn.Module, x: torch.Tensor, bf16: bool = False):
    """An experiment, not the shipped path: the predictor's graph run with TorchScript's oneDNN Graph fuser (LLGA)
    switched on around each call (it is a process-wide flag, restored after the call). Each new input shape costs
    about two extra, slower calls while it fuses. On A (AVX2) in fp32: 3-10% faster than the plain graph; bf16 could
    not be tried there ("could not add op to the graph" without bf16 hardware)."""
    forward = graph_forward(model, x, bf16)

    def run(inp: torch.Tensor):
        before = torch._C._jit_llga_enabled()
        torch._C._jit_set_llga_enabled(True)
        try:
            return forward(inp)
        finally:
            torch._C._jit_set_llga_enabled(before)

    return run


def compiled_forward(model: torch.nn.Module, x: torch.Tensor, bf16: bool = False):
    """An experiment: the model through torch.compile (inductor) with freezing (weights folded in and prepacked for
    oneDNN, convolutions fused with their activations), compiled at x's shape by a first call (timed by the caller)."""
    from yoloseg.engine.inference import bf16_weights

    compiled = torch.compile(bf16_weights(model) if bf16 else model, dynamic=False, options={"freezing": True})

    def run(inp: torch.Tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return compiled(inp)

    with torch.inference_mode():
        run(x)
    return run


def interleaved(forwards: dict, x: torch.Tensor, rounds: int) -> dict:
    """Median ms of each forward, timed round-robin (one call of each per round, the order rotating), and the 20
    slowest (op, input shapes) of the last forward: on a machine whose speed drifts within minutes, the ratios
    between variants hold where separate runs do not."""
    from torch.profiler import ProfilerActivity, profile

    names, times = list(forwards), {n: [] for n in forwards}
    with torch.inference_mode():
        for f in forwards.values():
            for _ in range(3):
                f(x)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                t = time.perf_counter()
                forwards[name](x)
                times[name].append((time.perf_counter() - t) * 1e3)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(5):
                forwards[names[-1]](x)
    ops = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "rounds": rounds,
        "forward_ms_median": {n: round(statistics.median(t), 2) for n, t in times.items()},
        f"slowest_ops_{names[-1]}": [
            {"op": e.key, "shapes": str(e.input_shapes)[:160], "ms_per_forward": round(e.self_cpu_time_total / 5e3, 3)}
            for e in ops[:20]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--interleave", type=int, default=0, help="time the main variants round-robin, N rounds")
    parser.add_argument(
        "--compile", action="store_true", help="with --interleave: add torch.compile'd variants (inductor, freezing)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from yoloseg.engine.inference import CompiledForward, cpu_bf16_supported, inference_copy
    from yoloseg.nn.graph import YOLOModel

    torch.manual_seed(0)
    model = inference_copy(YOLOModel("yolo11n-seg.yaml"), torch.device("cpu"))
    x = torch.rand(1, 3, 480, 640).contiguous(memory_format=torch.channels_last)
    report = {"threads": torch.get_num_threads(), "input": list(x.shape)}
    if args.interleave:
        forwards = {
            "fp32_graph": graph_forward(model, x),
            "fp32_graph_unfused": graph_forward(model, x, fuse=False),
            "fp32_graph_llga": llga_forward(model, x),
        }
        if cpu_bf16_supported():
            forwards |= {
                "bf16_eager": own(model, bf16=True),
                "bf16_graph_llga": llga_forward(model, x, bf16=True),
                "bf16_graph": graph_forward(model, x, bf16=True),
                "bf16_graph_unfused": graph_forward(model, x, bf16=True, fuse=False),
            }
        if args.compile:
            for name, bf16 in [("fp32_compile", False)] + [("bf16_compile", True)] * cpu_bf16_supported():
                t = time.perf_counter()
                forwards[name] = compiled_forward(model, x, bf16)
                report[f"{name}_compile_s"] = round(time.perf_counter() - t, 1)
        print(json.dumps(report | interleaved(forwards, x, args.interleave)))
        return
    report["fp32"] = profile_forward(own(model), x, args.runs)
    report["fp32_graph"] = profile_forward(graph_forward(model, x), x, args.runs)
    report["fp32_graph_unfused"] = profile_forward(graph_forward(model, x, fuse=False), x, args.runs)
    with torch.inference_mode():
        reference = own(model, fuse=False)(x)[0]
    variants = []
    if cpu_bf16_supported():
        report["bf16_autocast"] = profile_forward(own(model, bf16=True), x, args.runs)
        report["bf16_graph"] = profile_forward(graph_forward(model, x, bf16=True), x, args.runs)
        report["bf16_graph_unfused"] = profile_forward(graph_forward(model, x, bf16=True, fuse=False), x, args.runs)
        variants.append(("bf16_onednn", torch.bfloat16, True))
    for name, bf16 in [("fp32_graph_llga", False)] + ([("bf16_graph_llga", True)] if cpu_bf16_supported() else []):
        try:
            forward = llga_forward(model, x, bf16)
            report[name] = profile_forward(forward, x, args.runs)
            with torch.inference_mode():
                out = forward(x)[0].float()
            report[name]["max_rel_diff_vs_fp32"] = float((out - reference).abs().max() / reference.abs().max())
        except Exception as e:  # an experiment: report it and go on
            report[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
    for name, dtype, bf16 in variants:  # experiments: timing, and how far the outputs move from fp32
        forward = CompiledForward(conv_variant(model, dtype), fuse=False)
        if bf16:
            forward.bf16 = True  # autocast around the variant, whose weights are bf16 already
        report[name] = profile_forward(forward, x, args.runs)
        with torch.inference_mode():
            out = forward(x)[0]
        report[name]["max_rel_diff_vs_fp32"] = float((out - reference).abs().max() / reference.abs().max())
    print(json.dumps(report))


if __name__ == "__main__":
    main()

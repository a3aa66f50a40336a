"""The inference copy of a model shared by prediction and standalone validation."""

from __future__ import annotations

import copy
import functools
import warnings
from typing import Any

import torch
from torch import nn


def inference_copy(
    model: nn.Module,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    channels_last: bool | None = None,
    inplace: bool = True,
) -> nn.Module:
    """An eval-mode, BN-fused copy of `model` on `device` in `dtype`; `model` is untouched.

    channels_last: None picks it on a CPU, where oneDNN convolutions are faster in that layout.
    """
    if channels_last is None:
        channels_last = device.type == "cpu"
    fused = model.is_fused() if hasattr(model, "is_fused") else True
    model = copy.deepcopy(model).eval()
    if hasattr(model, "fuse") and not fused:
        model.fuse()
    for q in model.parameters():
        q.requires_grad_(False)
    for m in model.modules():  # act(conv(x)) only ever sees a fresh tensor: in place saves ~25% of CPU time
        if inplace and isinstance(getattr(m, "act", None), nn.SiLU) and hasattr(m, "conv"):
            m.act.inplace = True
    model = model.to(device=device, dtype=dtype)
    return model.to(memory_format=torch.channels_last) if channels_last else model


# Large batches run slower per image on a CPU than small ones: a batch of 16 at 640 px streams ~100 MB activations
# per layer through the caches, a batch of 2 mostly stays in them (bench: 140 vs 105 ms per image, 2 threads); small
# images want more per call (at 320 px: 27 ms per image in pairs, 21.5 in eights). So a micro-batch holds about
# CPU_MICRO_BATCH_PIXELS: 2 images at 640², 8 at 320².
CPU_MICRO_BATCH_PIXELS = 2 * 640 * 640


def _cat_outputs(parts: list[Any]) -> Any:
    """Concatenate same-structured model outputs (tensors, nested tuples / lists of tensors) along the batch."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, 0)
    if isinstance(first, (tuple, list)):
        return type(first)(_cat_outputs([p[i] for p in parts]) for i in range(len(first)))
    return first


def micro_batch_size(images: torch.Tensor) -> int:
    """How many of `images` (B, C, H, W) `forward_batched` runs per call."""
    if images.device.type != "cpu":
        return max(len(images), 1)
    return max(1, CPU_MICRO_BATCH_PIXELS // (images.shape[-2] * images.shape[-1]))


def micro_batches(images: torch.Tensor) -> list[torch.Tensor]:
    """`images` split along the batch as `forward_batched` runs them: micro-batches of about CPU_MICRO_BATCH_PIXELS
    on a CPU, the whole batch elsewhere."""
    micro_batch = micro_batch_size(images)
    if len(images) <= micro_batch:
        return [images]
    return [images[i : i + micro_batch] for i in range(0, len(images), micro_batch)]


def forward_batched(model: Any, images: torch.Tensor, **kwargs: Any) -> Any:
    """`model(images, **kwargs)`, run in micro-batches on a CPU (CPU_MICRO_BATCH_PIXELS) and in one go elsewhere."""
    parts = micro_batches(images)
    if len(parts) == 1:
        return model(images, **kwargs)
    return _cat_outputs([model(part, **kwargs) for part in parts])


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 matrix work natively (AMX tiles or AVX512-BF16), where bf16 autocast pays."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def inference_precision(half: Any, device: torch.device, warn: bool = True) -> str:
    """The precision `half=` asks for on `device`: 'fp16' on CUDA; on a CPU 'bf16' (autocast) where the hardware has
    bf16 matrix units, else 'fp32' with a warning (bf16 emulated on AVX2 is slower than fp32); 'fp32' when not half."""
    if not half:
        return "fp32"
    if device.type == "cuda":
        return "fp16"
    if device.type == "cpu" and cpu_bf16_supported():
        return "bf16"
    if not warn:
        return "fp32"
    from ..utils.log import LOGGER

    LOGGER.warning(
        f"WARNING: half=True on {device.type}: no fp16 there and no bf16 hardware (AMX / AVX512-BF16) on this CPU; "
        "running fp32"
    )
    return "fp32"


def _flatten(out: Any) -> list[torch.Tensor]:
    """The tensors of a (nested tuple / list) output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _flatten(o)] if isinstance(out, (tuple, list)) else []


def _to_float(out: Any) -> Any:
    """Floating tensors of a (nested tuple / list) output as fp32; everything else unchanged."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (tuple, list)):
        return type(out)(_to_float(o) for o in out)
    return out


def compile_mode(value: Any) -> str | None:
    """The torch.compile mode a `compile=` argument asks for: None (off), 'default' or the mode named."""
    if value is None or value is False or str(value).lower() in ("false", "0", "none", ""):
        return None
    return "default" if value is True or str(value).lower() in ("true", "1") else str(value)


def bf16_weights(model: nn.Module) -> nn.Module:
    """A copy of `model` whose convolution and linear weights and biases are bf16 already, for running under CPU bf16
    autocast: the same numbers (autocast rounds them to bf16 anyway), without autocast casting each of them again on
    every call (it caches only the casts of weights that require grad): ~200 casts, 17 MB, per yolo11n-seg forward.
    The head's DFL projection stays fp32, as the box decoding runs in fp32 outside autocast."""
    from ..nn.blocks import DFL

    model = copy.deepcopy(model)
    keep = {id(p) for m in model.modules() if isinstance(m, DFL) for p in m.parameters()}
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            for name, p in m.named_parameters(recurse=False):
                if id(p) not in keep and p.dtype == torch.float32:
                    setattr(m, name, nn.Parameter(p.detach().to(torch.bfloat16), requires_grad=False))
    return model


# oneDNN's convolution with SiLU as its post-op: the activation runs on the accumulator before the store, so a Conv
# block makes one pass over its output instead of two, and every block goes to oneDNN (PyTorch sends small ones to a
# slower native kernel). SiLU was ~14% of yolo11n-seg's bf16 forward on an AVX512-BF16 EPYC (22% on an AMX Xeon); the
# fused blocks of a 640x480 forward took 15.6 against 21.4 ms in bf16 and 22.5 against 26.2 in fp32 there (26.0
# against 29.5 with oneDNN held to AVX2), with their weights laid out for the input size (see ConvSiLU). fp32 outputs
# move by rounding only (boxes ~1e-4 px; the shapes val metrics unchanged to the printed digit); bf16 ones
# round once per block instead of twice. A traced graph cannot record the op's empty `Scalar?[]` argument, so the call
# goes through a scripted function, which it can.
_CONV_SILU_SOURCE = """
def conv_silu(x: Tensor, w: Tensor, b: Optional[Tensor], padding: List[int], stride: List[int], dilation: List[int],
              groups: int) -> Tensor:
    scalars: List[Optional[Union[int, float, complex]]] = []
    return torch.ops.mkldnn._convolution_pointwise(x, w, b, padding, stride, dilation, groups, "swish", scalars, "")
"""


@functools.cache
def _conv_silu_function() -> Any:
    """The scripted fused call, for traces (compiled when a graph is first traced, ~7 ms, not at import)."""
    return torch.jit.CompilationUnit(_CONV_SILU_SOURCE).conv_silu


def _conv_silu_eager(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, *args: Any) -> torch.Tensor:
    """The fused call run eagerly: the op itself, without the scripted function's overhead per call."""
    return torch.ops.mkldnn._convolution_pointwise(x, w, b, *args, "swish", [], "")


class ConvSiLU(nn.Module):
    """A BN-fused `Conv` block (convolution + SiLU) as one oneDNN convolution with a SiLU post-op, its weights
    reordered once into oneDNN's layout (`weight`, an opaque mkldnn tensor: never saved, moved or copied, so a plain
    attribute, not a buffer). Inputs are cast to the weights' dtype, as autocast would cast them for the convolution."""

    def __init__(self, conv: nn.Conv2d, input_size: list[int], routing: nn.Module | None = None):
        super().__init__()
        for key in ("f", "i"):  # a top-level layer's inputs and index (nn.graph), as on the block it replaces
            if hasattr(routing, key):
                setattr(self, key, getattr(routing, key))
        self.args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        self.dtype = conv.weight.dtype
        # laid out for the primitive oneDNN picks at `input_size`; without a size it assumes one that, on some CPUs,
        # takes a layout the real calls do not use and reorder again each time (up to 7x slower blocks, seen with
        # oneDNN held to AVX2); other sizes run well on these weights
        self.weight = torch.ops.mkldnn._reorder_convolution_weight(conv.weight.detach(), *self.args, input_size)
        self.bias = None if conv.bias is None else conv.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = _conv_silu_function() if torch.jit.is_tracing() else _conv_silu_eager
        return fn(x.to(self.dtype), self.weight, self.bias, *self.args)


def fuse_conv_silu(model: nn.Module, shape: tuple[int, ...]) -> list[torch.Tensor]:
    """Replace, in place, each BN-fused `Conv` block of `model` (an inference copy on the CPU) whose activation is SiLU
    with a `ConvSiLU`, its weights laid out for the block's input at a model input of `shape` (B, C, H, W); returns
    their reordered weights (a traced graph takes them as inputs: it cannot hold them as constants). The branches a
    Segment head defers to windows (engine.deferred) keep PyTorch's convolutions, whose kernel choice that code
    follows, deferred or not. No change (an empty list) where this PyTorch has no oneDNN or the fused call fails on a
    small input."""
    from ..nn.blocks import Conv
    from ..nn.heads import Segment

    if not torch.backends.mkldnn.is_available():
        return []
    # the branches a deferred Segment head runs on windows, in every model: deferred and whole forwards then agree
    skip = {
        id(s) for m in model.modules() if isinstance(m, Segment) for b in (m.cv2, m.cv4, m.proto) for s in b.modules()
    }
    blocks = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, Conv) and id(child) not in skip and not hasattr(child, "bn") and type(child.act) is nn.SiLU
    ]
    if not blocks:
        return []
    try:
        sizes = _block_input_sizes(model, [b[2] for b in blocks], shape)
        first = blocks[0][2]  # one block on a small input, against its unfused self
        fused = [ConvSiLU(first.conv, sizes[0], first)]
        x = torch.rand(1, first.conv.in_channels, 8, 8, generator=torch.Generator().manual_seed(0))
        x = x.to(fused[0].dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if not torch.allclose(fused[0](x).float(), first(x).float(), rtol=2e-2, atol=2e-2):
                return []
    except Exception:  # noqa: BLE001 - no fused kernel here: PyTorch's convolutions stay
        return []
    fused += [ConvSiLU(child.conv, size, child) for (_, _, child), size in zip(blocks[1:], sizes[1:])]
    for (parent, name, _), block in zip(blocks, fused):
        setattr(parent, name, block)
    return [block.weight for block in fused]


def _block_input_sizes(model: nn.Module, blocks: list[nn.Module], shape: tuple[int, ...]) -> list[list[int]]:
    """The input size of each of `blocks` (modules of `model`) at a model input of `shape` (B, C, H, W; H and W
    multiples of the model's stride), scaled from one forward of a 64x64 input (a few ms): each block sees the input
    downsampled by a fixed factor."""
    probe = 64
    seen: dict[int, tuple[int, int, int]] = {}

    def record(module: nn.Module, args: tuple) -> None:  # returns None: the inputs stay as they are
        seen.setdefault(id(module), tuple(args[0].shape[1:]))

    hooks = [b.register_forward_pre_hook(record) for b in blocks]
    bf16 = any(p.dtype == torch.bfloat16 for p in model.parameters())
    x = torch.zeros(1, shape[1], probe, probe).contiguous(memory_format=torch.channels_last)
    try:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    b, _, height, width = shape
    return [[b, c, -(-height * h // probe), -(-width * w // probe)] for c, h, w in (seen[id(m)] for m in blocks)]


# Graphs (CompiledForward(graphs=True), CPU prediction): the model traced into one TorchScript graph, its weights
# recorded as constants, which runs the same kernels without the Python module calls between them and releases
# intermediates sooner. yolo11n-seg at batch 1 on 2 AVX2 cores: 640x480 84 against 97 ms, 640x640 118 against 142,
# the outputs equal to ~1e-7; at the CPU micro-batch of 2 ~6-12%, at batch 8 ~2.5%; never during training. The trace
# follows the input's sizes (one graph serves every shape and batch size; checked at a second shape when it is made;
# over coco128's mixed shapes at batch 1 the forwards took 10.6 against 11.5 s). Making it (`prepare`: the trace and
# the check) takes ~0.17 s at 640x480 on 2 cores, about three forwards, so the predictor and the validator ask for it
# only where it pays (Predictor._graph_due, validator.VAL_GRAPH_MIN_IMAGES).


class CompiledForward:
    """Calls `model` through torch.compile when `compile` asks for it (True or a mode name), under CPU bf16 autocast
    when `bf16` (outputs come back fp32; the head decodes boxes in fp32 itself). On a CPU the Conv blocks are fused
    with their SiLU (`fuse_conv_silu`, unless `fuse=False`) at the first input, in `model` itself (the caller's own
    inference copy) or in its bf16 copy.

    Compilation happens on the first call (and on a new input shape); if it fails (no C++ compiler, an operator the
    compiler cannot handle) the call warns once and runs the model eagerly from then on.

    With `graphs` (and no torch.compile), `prepare(x)` traces the model at x into a TorchScript graph that later
    calls run, at any shape. A bf16 graph is traced under autocast and carries its casts, so it runs outside
    autocast. The graph is checked against the eager model at another batch size and shape first (a size baked into
    the trace would show there). Tracing happens only in `prepare`, which a caller runs outside its timed stages; a
    failure warns once and leaves the model eager.
    """

    def __init__(
        self, model: nn.Module, compile: Any = False, bf16: bool = False, graphs: bool = False, fuse: bool = True
    ):
        self.mode, self.bf16 = compile_mode(compile), bf16
        self.model = bf16_weights(model) if bf16 else model
        # the Conv blocks are fused at the first input (in place: `model` is the caller's own inference copy, or
        # its bf16 copy), on a CPU and never under torch.compile, which fuses by itself; graphs take the fused
        # blocks' weights as inputs
        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        self.fuse_pending = fuse and on_cpu and self.mode is None
        self.packed: list[torch.Tensor] = []
        self.compiled = None
        if self.mode is not None:
            self.compiled = torch.compile(self.model, mode=None if self.mode == "default" else self.mode)
        self.graphs = bool(graphs) and self.mode is None
        self.graph: Any = None

    def prepare(self, images: torch.Tensor) -> None:
        """Trace the graph (once; a no-op without `graphs` or when it exists) at the first micro-batch of `images`,
        the size `forward_batched` will run."""
        if not self.graphs or self.graph is not None:
            return
        x = micro_batches(images)[0]
        self._fuse(x)
        try:
            graph = self._trace(x)
            if not self._same_at_another_shape(graph, x):
                raise RuntimeError("the traced graph differs from the model at another input shape")
            self.graph = graph
        except Exception as e:  # noqa: BLE001 - any tracing failure leaves the eager model in charge
            from ..utils.log import LOGGER

            LOGGER.warning(f"WARNING: tracing the model failed ({type(e).__name__}: {e}); running eagerly")
            self.graphs = False

    def _trace(self, x: torch.Tensor) -> Any:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # TracerWarnings flag sizes turned into constants, which the check at a second shape catches;
            # TorchScript's deprecation notice (torch 2.13) is not the user's to act on: should TorchScript go,
            # tracing fails here and the model stays eager
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            sample = torch.empty_like(x).copy_(x)  # a normal tensor even when `x` is an inference one
            model = self.model

            def run(images: torch.Tensor, *packed: torch.Tensor) -> Any:  # packed: the ConvSiLU weights, read
                return model(images)  # by the modules (the trace links them to these inputs by identity)

            # a function, not the module: its weights are recorded as constants, as freezing a traced module would
            # make them, without building a ScriptModule for each of the ~350 submodules first (0.07-0.1 against
            # 0.6-0.7 s for yolo11n-seg on 2 cores; the graphs run alike and give bit-identical outputs). Nothing is
            # frozen, so TorchScript's own autocast pass never runs over the casts traced under autocast.
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                return torch.jit.trace(run, (sample, *self.packed), strict=False, check_trace=False)

    def _same_at_another_shape(self, graph: Any, x: torch.Tensor) -> bool:
        """Whether the graph gives the eager outputs at another (small, so cheap) batch size, height and width."""
        stride = int(torch.as_tensor(getattr(self.model, "stride", 32)).max())
        b, c, h, w = x.shape
        hw = (2 * stride, 3 * stride) if (h, w) != (2 * stride, 3 * stride) else (3 * stride, 2 * stride)
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        generator = torch.Generator().manual_seed(0)  # not the global one: the caller's random stream stays as it is
        other = torch.rand(2 if b == 1 else 1, c, *hw, generator=generator).to(x).contiguous(memory_format=layout)
        with torch.inference_mode():
            got = self._run_graph(graph, other)
            expected = self(other)  # eager: the graph is not in place yet
        got, expected = _flatten(got), _flatten(expected)
        # a size baked into the trace shows as wrong shapes or values; bf16 kernels of the graph may round a
        # few bf16 steps (2^-8) apart from eager ones
        tol = 5e-2 if self.bf16 else 1e-3
        return len(got) == len(expected) and all(
            a.shape == b.shape and torch.allclose(a, b, rtol=tol, atol=tol) for a, b in zip(got, expected)
        )

    def _fuse(self, x: torch.Tensor) -> None:
        """Fuse the Conv blocks (once, before the first forward: every output comes from the same arithmetic), their
        weights laid out for an input of x's shape."""
        if self.fuse_pending:
            self.fuse_pending = False
            self.packed = fuse_conv_silu(self.model, tuple(x.shape))

    def __call__(self, x: torch.Tensor, **kwargs: Any) -> Any:
        if self.graph is not None and not kwargs:
            return self._run_graph(self.graph, x)
        self._fuse(x)
        if not self.bf16:
            return self._call(x, **kwargs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return _to_float(self._call(x, **kwargs))

    def _run_graph(self, graph: Any, x: torch.Tensor) -> Any:
        """Run a traced graph (its outputs fp32 under bf16) with TorchScript's plain interpreter: its profiling
        executor (the default) spends its first two runs profiling and optimising (170 and 111 ms against 43 for
        yolo11n-seg at 640x480 on 2 cores) for no steady-state gain on a CPU, where it fuses nothing (54.1 against
        54.2 ms, medians of 37 alternating runs). The setting is per thread and restored on exit."""
        with torch.jit.optimized_execution(False):
            out = graph(x, *self.packed)
        return _to_float(out) if self.bf16 else out

    def run_module(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Run the submodule `name` (as in `named_modules`) of the model this forward runs, eagerly and at its
        precision (under bf16 autocast, returning fp32, when `bf16`)."""
        module = self.model.get_submodule(name)
        if not self.bf16:
            return module(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return module(x).float()

    def _call(self, x: torch.Tensor, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(x, **kwargs)
            except Exception as e:  # noqa: BLE001 - any compiler failure falls back to the eager model
                from ..utils.log import LOGGER

                LOGGER.warning(f"WARNING: compile={self.mode!r} failed ({type(e).__name__}: {e}); running eagerly")
                self.compiled = None
        return self.model(x, **kwargs)

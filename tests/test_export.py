"""Export: every format's outputs match PyTorch at an input size other than the export sample; static padding;
metadata round trips; in-graph NMS and masks agree with ops.nms / a reference mask assembly; clear errors."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from yoloseg.export import export_model, resolve_format
from yoloseg.export.backends import load_backend
from yoloseg.utils.log import LOGGER

from .conftest import SHARED, run_python, shared_path

HAS_ONNX = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("onnx") is not None
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnx / onnxruntime not installed (pip install yoloseg[export])")
needs_openvino = pytest.mark.skipif(
    not HAS_OPENVINO, reason="openvino / onnx not installed (pip install yoloseg[export])"
)
FORMAT_MARKS = {"onnx": [needs_onnx], "torchscript": [], "openvino": [needs_openvino]}
EXPORT_SIZE = 64  # the traced sample; every check runs at RUN_SIZE
RUN_SIZE = (128, 96)
CHECKPOINT = SHARED / "reference" / "yolo11n-seg-shapes.pt"


def _random_model():
    """yolo11n-seg, 3 classes, random BatchNorm statistics so activations (and scores) spread."""
    from yoloseg.nn.graph import YOLOModel

    torch.manual_seed(0)
    model = YOLOModel("yolo11n-seg.yaml", nc=3).eval()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.5
            m.running_mean.data = torch.randn(n, generator=g) * 0.1
            m.running_var.data = torch.rand(n, generator=g) + 0.5
    model.names = {0: "circle", 1: "square", 2: "triangle"}
    return model.fuse()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny inputs: one intra-op thread is faster, and steady when other processes share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    """The incumbent-trained shapes checkpoint (confident, distinct predictions) when ../shared has it."""
    if not CHECKPOINT.is_file():
        return _random_model()
    from yoloseg.nn.graph import YOLOModel
    from yoloseg.nn.official import load_official_checkpoint

    ckpt = load_official_checkpoint(CHECKPOINT)
    net = YOLOModel(ckpt["yaml"])
    net.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    net.names = ckpt["names"]
    return net.eval().fuse()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """(2, 3, 128, 96) RGB in [0, 1]: two shapes val images when available, else smooth random images."""
    folder = SHARED / "data" / "shapes-ref-seg" / "images" / "val"
    files = sorted(folder.glob("*.jpg"))[:2] if folder.is_dir() else []
    if len(files) == 2:
        ims = [cv2.resize(cv2.imread(str(f))[..., ::-1], RUN_SIZE[::-1], interpolation=cv2.INTER_LINEAR) for f in files]
        return torch.from_numpy(np.stack(ims).transpose(0, 3, 1, 2).copy()).float() / 255
    g = torch.Generator().manual_seed(1)
    coarse = torch.rand(2, 3, 4, 3, generator=g)
    return F.interpolate(coarse, size=RUN_SIZE, mode="bilinear") + 0.05 * torch.rand(2, 3, *RUN_SIZE, generator=g)


@pytest.fixture(scope="module")
def reference(model, images):
    with torch.no_grad():
        return model(images)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export")


_EXPORTS: dict[str, Path] = {}
_MESSAGES: dict[Path, str] = {}


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _export(model, export_dir: Path, name: str, **args) -> Path:
    """Export once per argument set for the whole module; keep what export_model logged."""
    key = f"{name}: {sorted(args.items())}"
    if key not in _EXPORTS:
        handler, level = _ListHandler(), LOGGER.level
        LOGGER.addHandler(handler)
        LOGGER.setLevel(logging.INFO)
        try:
            path = export_model(model, {"imgsz": EXPORT_SIZE, **args}, export_dir / f"{name}.pt")
        finally:
            LOGGER.removeHandler(handler)
            LOGGER.setLevel(level)
        _EXPORTS[key], _MESSAGES[path] = path, "\n".join(handler.messages)
    return _EXPORTS[key]


@pytest.mark.parametrize("fmt", [pytest.param(f, marks=m) for f, m in FORMAT_MARKS.items()])
def test_dynamic_export_matches_pytorch(fmt, model, images, reference, export_dir):
    path = _export(model, export_dir, "dyn", format=fmt, dynamic=True)
    out = _MESSAGES[path]
    assert f"yolo predict task=segment model={path} imgsz={EXPORT_SIZE}" in out
    assert "yolo val task=segment model=" in out and " MB)" in out
    backend = load_backend(path)  # OpenVINO: fp32 inference precision hint by default
    y, protos = backend(images)
    y_ref, protos_ref = reference
    assert y.shape == y_ref.shape and protos.shape == protos_ref.shape
    rel = ((y - y_ref).abs().max() / y_ref.abs().max()).item()
    assert rel < 1e-3, f"{fmt}: output0 max diff {rel:.2e} of its max magnitude"
    assert (protos - protos_ref).abs().max().item() < 1e-3
    assert backend.dynamic and backend.pt is False


@pytest.mark.parametrize("fmt", [pytest.param(f, marks=m) for f, m in FORMAT_MARKS.items()])
def test_metadata_round_trip(fmt, model, export_dir):
    path = _export(model, export_dir, "dyn", format=fmt, dynamic=True)
    backend = load_backend(path)
    assert backend.names == {int(k): v for k, v in model.names.items()}
    assert backend.stride == 32 and backend.task == "segment" and backend.batch == 1
    assert tuple(backend.imgsz) == (EXPORT_SIZE, EXPORT_SIZE)
    assert backend.metadata["author"] == "yoloseg" and backend.metadata["license"] == "Apache-2.0"
    assert backend.metadata["nms"] is False


@needs_onnx
def test_static_batch_is_padded(model, images, reference, export_dir):
    path = _export(model, export_dir, "static", format="onnx", batch=2, imgsz=list(RUN_SIZE))
    backend = load_backend(path)
    assert not backend.dynamic and backend.batch == 2 and tuple(backend.imgsz) == RUN_SIZE
    for n in (1, 2):  # a batch of 1 is padded to 2
        y, protos = backend(images[:n])
        assert y.shape[0] == n and protos.shape[0] == n
        assert ((y - reference[0][:n]).abs().max() / reference[0].abs().max()).item() < 1e-3
    y, protos = backend(torch.cat((images, images[:1])))  # 3 images: two runs, the second padded
    assert y.shape[0] == 3 and (protos[2] - reference[1][0]).abs().max().item() < 1e-3
    small = images[:, :, :96, :64]  # smaller than the export size: padded bottom-right, outputs cropped
    y, protos = backend(small)
    assert protos.shape[2:] == (24, 16)
    with pytest.raises(ValueError, match="dynamic=True"):
        backend(F.pad(images, (0, 32)))


@needs_onnx
def test_onnx_io_names_and_metadata(model, export_dir):
    import onnx

    path = _export(model, export_dir, "dyn", format="onnx", dynamic=True)
    m = onnx.load(str(path))
    assert [i.name for i in m.graph.input] == ["images"]
    assert [o.name for o in m.graph.output] == ["output0", "output1"]
    dims = [d.dim_param for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]
    props = {p.key: p.value for p in m.metadata_props}
    for key in ("description", "author", "date", "version", "license", "stride", "task", "batch", "imgsz", "names"):
        assert key in props
    assert props["end2end"] == "False" and props["channels"] == "3"


@needs_onnx
def test_onnx_nms_matches_ops_nms(model, images, reference, export_dir):
    from yoloseg.ops.nms import non_max_suppression

    path = _export(model, export_dir, "nms", format="onnx", dynamic=True, nms=True, max_det=50)
    backend = load_backend(path)
    assert backend.nms and backend.end2end
    dets, protos = backend(images)
    assert dets.shape == (2, 50, 6 + 32) and protos.shape == reference[1].shape
    expected = non_max_suppression(reference[0], 0.25, 0.7, max_det=50, nc=len(model.names))
    for i, exp in enumerate(expected):
        n = int((dets[i, :, 4] > 0).sum())
        assert n == len(exp)
        assert (dets[i, :n] - exp).abs().max().item() < 1e-3
        assert dets[i, n:].abs().sum().item() == 0  # zero padding
    if CHECKPOINT.is_file():
        assert sum(len(e) for e in expected) > 0


@needs_onnx
def test_onnx_masks_match_reference(model, images, reference, export_dir):
    path = _export(model, export_dir, "masks", format="onnx", dynamic=True, masks=True, max_det=50)
    backend = load_backend(path)
    assert backend.masks
    boxes, scores, classes, masks = backend(images)
    h, w = RUN_SIZE
    assert boxes.shape == (2, 50, 4) and scores.shape == (2, 50) and classes.shape == (2, 50)
    assert masks.shape == (2, 50, h, w) and masks.dtype == torch.uint8 and classes.dtype == torch.int64
    nms_dets, _ = load_backend(_export(model, export_dir, "nms", format="onnx", dynamic=True, nms=True, max_det=50))(
        images
    )
    for i in range(2):
        n = int((scores[i] > 0).sum())
        dets = nms_dets[i, :n]
        assert torch.allclose(boxes[i, :n], dets[:, :4], atol=1e-3) and (classes[i, :n] == dets[:, 5].long()).all()
        # reference: logits = coeffs @ protos, bilinear to the input size, > 0, crop x1 <= col < x2, y1 <= row < y2
        logits = (dets[:, 6:] @ reference[1][i].flatten(1)).view(n, *reference[1].shape[2:])
        logits = F.interpolate(logits[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        cols, rows = torch.arange(w).view(1, 1, -1), torch.arange(h).view(1, -1, 1)
        x1, y1, x2, y2 = (dets[:, j].view(-1, 1, 1) for j in range(4))
        expected = (logits > 0) & (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
        mismatch = (masks[i, :n].bool() != expected).float().mean().item() if n else 0.0
        assert mismatch < 1e-3  # only pixels whose logit is ~0 may flip
        assert masks[i, n:].sum().item() == 0


@needs_openvino
def test_openvino_nms_matches_onnx(model, images, export_dir):
    onnx_dets, _ = load_backend(_export(model, export_dir, "nms", format="onnx", dynamic=True, nms=True, max_det=50))(
        images
    )
    path = _export(model, export_dir, "nms", format="openvino", dynamic=True, nms=True, max_det=50)
    assert sorted(p.name for p in path.iterdir()) == ["metadata.yaml", "nms.bin", "nms.xml"]
    dets, _ = load_backend(path)(images)
    assert (dets - onnx_dets).abs().max().item() < 1e-2


@needs_openvino
def test_openvino_static_export_runs_smaller_inputs_unpadded(
    model, images, reference, export_dir, tmp_path, log_messages
):
    """A static IR declares its export shape, yet runs a smaller input as it is (same outputs as PyTorch on that
    input, no padding), compiled once per shape with the most recent MAX_SHAPES kept; an IR whose metadata does not
    say reshapeable (another tool's) keeps the padding path."""
    import yaml

    from yoloseg.engine.predictor import Predictor
    from yoloseg.export.backends import openvino_core

    path = _export(model, export_dir, "static", format="openvino", imgsz=list(RUN_SIZE))
    declared = openvino_core().read_model(str(path / "static.xml")).inputs[0].get_partial_shape()
    assert declared.is_static and [d.get_length() for d in declared] == [1, 3, *RUN_SIZE]
    backend = load_backend(path)
    assert backend.reshapeable and not backend.dynamic and tuple(backend.imgsz) == RUN_SIZE
    y, protos = backend(images)  # the declared shape
    assert ((y - reference[0]).abs().max() / reference[0].abs().max()).item() < 1e-3
    small = images[:, :, :64, :]  # 64 x 96: a stride multiple under the export size
    with torch.no_grad():
        y_ref, protos_ref = model(small)
    for n in (1, 2):  # a batch of 2 runs as two (the static batch is 1)
        y, protos = backend(small[:n])
        assert y.shape == y_ref[:n].shape and protos.shape == protos_ref[:n].shape  # 8 x 12 cells at stride 8
        assert ((y - y_ref[:n]).abs().max() / y_ref.abs().max()).item() < 1e-3
        assert (protos - protos_ref[:n]).abs().max().item() < 1e-3
    assert list(backend.by_shape) == [(64, 96)]  # other shapes than the declared one, the most recent last
    backend(images[:1, :, :32, :32])
    backend(small[:1])
    assert list(backend.by_shape) == [(32, 32), (64, 96)]
    backend.MAX_SHAPES = 1
    backend(images[:1, :, :32, :64])
    assert list(backend.by_shape) == [(32, 64)]  # the least recently used shapes left

    predictor = Predictor(backend, {"imgsz": list(RUN_SIZE), "verbose": False})
    frame = np.full((30, 90, 3), 100, np.uint8)  # wide: letterboxed to 32 x 96, not padded to 128 x 96
    assert tuple(predictor.preprocess([frame]).shape) == (1, 3, 32, 96)
    predictor.predict(frame)  # compiled for 32 x 96 before the timed stages
    assert list(backend.by_shape)[-1] == (32, 96)

    def unreshapeable(shape):  # a graph that cannot take a new shape after all: padded, with a warning
        raise RuntimeError("shape inference failed")

    fragile = load_backend(path)
    fragile._reshaped = unreshapeable
    y, protos = fragile(small[:1])
    assert not fragile.reshapeable and any("padding inputs" in m for m in log_messages)
    assert y.shape[2] == reference[0].shape[2] and protos.shape[2:] == protos_ref.shape[2:]

    foreign = tmp_path / "foreign_openvino_model"
    foreign.mkdir()
    for f in path.iterdir():
        (foreign / f.name).write_bytes(f.read_bytes())
    meta = yaml.safe_load((foreign / "metadata.yaml").read_text())
    meta.pop("reshapeable")
    (foreign / "metadata.yaml").write_text(yaml.safe_dump(meta))
    static = load_backend(foreign)
    assert not static.reshapeable
    y, protos = static(small[:1])  # padded to 128 x 96: all the anchors, prototypes cropped back
    assert y.shape[2] == reference[0].shape[2] and protos.shape[2:] == protos_ref.shape[2:]
    assert tuple(Predictor(static, {"imgsz": list(RUN_SIZE), "verbose": False}).preprocess([frame]).shape) == (
        1, 3, *RUN_SIZE
    )  # fmt: skip


@needs_openvino
def test_openvino_backends_released_in_any_order_leave_signals_working(model, export_dir):
    """OpenVINO's CPU plugin points the calling thread's signal stack at a buffer of its Core and puts the previous
    one back when that Core goes; Cores released in creation order left the thread's signal stack dangling, and the
    next signal with a Python handler (a child process exiting, under a DataLoader's SIGCHLD handler) killed the
    process with SIGSEGV. Backends share one Core; checked in a child process, as a failure kills its process."""
    path = _export(model, export_dir, "static", format="openvino", imgsz=list(RUN_SIZE))
    script = f"""
import gc, os, signal, torch
from yoloseg.export.backends import load_backend
first, second = load_backend({str(path)!r}), load_backend({str(path)!r})
first(torch.zeros(1, 3, 32, 32))
second(torch.zeros(1, 3, 32, 32))
del first
gc.collect()
del second
gc.collect()
signal.signal(signal.SIGUSR1, lambda *args: print("handled", flush=True))
os.kill(os.getpid(), signal.SIGUSR1)
"""
    run = run_python(script)
    assert run.returncode == 0 and "handled" in run.stdout, f"rc {run.returncode}: {run.stderr[-500:]}"


@needs_openvino
def test_openvino_half_runs_bf16_where_pytorch_would(model, images, export_dir, monkeypatch, log_messages):
    """predict's half=True sets OpenVINO's bf16 inference precision on a CPU with bf16 hardware (where PyTorch's
    half=True autocasts to bf16), half=False puts back the precision the backend was opened with (fp32), and a CPU
    without bf16 hardware keeps fp32 with a warning; each precision's compiled models are kept for switching back."""
    import openvino as ov

    import yoloseg.engine.inference as inference
    from yoloseg.engine.predictor import Predictor

    path = _export(model, export_dir, "static", format="openvino", imgsz=list(RUN_SIZE))
    backend = load_backend(path)
    fp32, _ = backend(images)
    hardware_bf16 = inference.cpu_bf16_supported()
    monkeypatch.setattr(inference, "cpu_bf16_supported", lambda: True)
    Predictor(backend, {"imgsz": list(RUN_SIZE), "half": True, "verbose": False})
    assert backend.config["INFERENCE_PRECISION_HINT"] == "bf16" and backend.compiled is None
    y, _ = backend(images)
    if hardware_bf16:  # really run in bf16: close to fp32, not equal
        assert backend.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
        error = ((y - fp32).abs().max() / fp32.abs().max()).item()
        assert 1e-5 < error < 0.05, error
    bf16_compiled = backend.compiled
    Predictor(backend, {"imgsz": list(RUN_SIZE), "half": False, "verbose": False})
    assert backend.config == backend.opened_config and backend.config["INFERENCE_PRECISION_HINT"] == "f32"
    assert torch.equal(backend(images)[0], fp32)
    Predictor(backend, {"imgsz": list(RUN_SIZE), "half": True, "verbose": False})
    assert backend.compiled is bf16_compiled  # switching back compiles nothing again
    Predictor(backend, {"imgsz": list(RUN_SIZE), "half": False, "verbose": False})
    dynamic = load_backend(_export(model, export_dir, "dyn", format="openvino", dynamic=True))
    Predictor(dynamic, {"half": True, "verbose": False})  # compiled at load: compiled again at once, not when timed
    assert dynamic.config["INFERENCE_PRECISION_HINT"] == "bf16" and dynamic.compiled is not None
    monkeypatch.setattr(inference, "cpu_bf16_supported", lambda: False)
    Predictor(backend, {"imgsz": list(RUN_SIZE), "half": True, "verbose": False})
    assert backend.config["INFERENCE_PRECISION_HINT"] == "f32"
    assert any("no bf16 hardware" in m for m in log_messages)


@needs_openvino
def test_openvino_val_half_runs_bf16_with_the_fp32_accuracy(model, export_dir, monkeypatch):
    """val(half=True) on an OpenVINO model runs it in bf16 on bf16 hardware, with the fp32 mAPs within 0.02; a cached
    predictor sharing the backend with val runs its own precision again."""
    import yoloseg.engine.inference as inference
    from yoloseg.model import YOLO

    data = shared_path("data", "shapes-ref-seg", "data.yaml")
    if not inference.cpu_bf16_supported():
        monkeypatch.setattr(inference, "cpu_bf16_supported", lambda: True)  # the setting is checked, bf16 emulated
    path = _export(model, export_dir, "square", format="openvino", imgsz=128)
    yolo = YOLO(str(path))
    full = yolo.val(data=str(data), batch=1, plots=False, verbose=False)
    assert yolo.backend.config["INFERENCE_PRECISION_HINT"] == "f32"
    half = yolo.val(data=str(data), batch=1, half=True, plots=False, verbose=False)
    assert yolo.backend.config["INFERENCE_PRECISION_HINT"] == "bf16"
    image = np.full((128, 128, 3), 90, np.uint8)
    yolo.predict(image, half=False, verbose=False)  # val and the cached predictor share the backend:
    yolo.val(data=str(data), batch=1, half=True, plots=False, verbose=False)  # each run sets its own precision
    assert yolo.backend.config["INFERENCE_PRECISION_HINT"] == "bf16"
    yolo.predict(image, half=False, verbose=False)
    assert yolo.backend.config["INFERENCE_PRECISION_HINT"] == "f32"
    assert full.seg.map > 0.2  # the trained checkpoint finds the shapes at 128 (0.256)
    assert abs(half.seg.map - full.seg.map) < 0.02 and abs(half.box.map - full.box.map) < 0.02


@needs_openvino
@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf not installed (pip install 'yoloseg[int8]')")
def test_openvino_int8_quantizes_with_the_accuracy_close(model, export_dir):
    """int8=True calibrates on the dataset's val images and writes an IR whose convolutions take int8-quantised inputs
    (FakeQuantize in front of them), that says int8 in its metadata, and whose mAPs stay within 0.05 of fp32."""
    import yaml

    from yoloseg.export.backends import openvino_core
    from yoloseg.model import YOLO

    data = str(shared_path("data", "shapes-ref-seg", "data.yaml"))
    full = _export(model, export_dir, "square", format="openvino", imgsz=128)
    path = _export(model, export_dir, "int8", format="openvino", imgsz=128, int8=True, data=data)
    types = [op.get_type_name() for op in openvino_core().read_model(str(path / "int8.xml")).get_ops()]
    assert types.count("FakeQuantize") > types.count("Convolution") // 2 > 30
    assert "FakeQuantize" not in [
        op.get_type_name() for op in openvino_core().read_model(str(full / "square.xml")).get_ops()
    ]
    assert yaml.safe_load((path / "metadata.yaml").read_text())["int8"] is True
    reference = YOLO(str(full)).val(data=data, batch=1, plots=False, verbose=False)
    quantised = YOLO(str(path)).val(data=data, batch=1, plots=False, verbose=False)
    assert abs(quantised.seg.map - reference.seg.map) < 0.05 and abs(quantised.box.map - reference.box.map) < 0.05
    assert quantised.seg.map != reference.seg.map  # really another model


@needs_openvino
def test_openvino_int8_calibration_data_is_checked_before_any_work(model, tmp_path, monkeypatch):
    """A missing data= or a dataset without enough val images fails at once, naming the fix, and writes nothing;
    calibration batches are the val images letterboxed as predict letterboxes them, read one batch at a time."""
    import yoloseg.export.openvino as ov_export
    from yoloseg.data.augment.letterbox import letterbox

    real_find_spec = importlib.util.find_spec  # nncf need not be installed: the checks come before it is used
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: real_find_spec("os") if name == "nncf" else real_find_spec(name, *a),
    )
    monkeypatch.setattr(ov_export, "export_onnx", lambda *a, **k: pytest.fail("exported before checking data="))
    with pytest.raises(ValueError, match="pass data=<dataset.yaml>"):
        export_model(model, {"format": "openvino", "int8": True}, tmp_path / "m.pt")
    data = tmp_path / "tiny"
    for split in ("train", "val"):
        (data / "images" / split).mkdir(parents=True)
        (data / "labels" / split).mkdir(parents=True)
    sizes = [(50, 80), (90, 40)]
    for i, (h, w) in enumerate(sizes):
        for split in ("train", "val"):
            cv2.imwrite(str(data / "images" / split / f"{i}.png"), np.full((h, w, 3), (10 * i, 100, 200), np.uint8))
    (data / "data.yaml").write_text(f"path: {data}\ntrain: images/train\nval: images/val\nnames: [a]\n")
    with pytest.raises(ValueError, match="2 calibration images .* fewer than batch=4"):
        export_model(
            model, {"format": "openvino", "int8": True, "data": str(data / "data.yaml"), "batch": 4}, tmp_path / "m.pt"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    groups = ov_export.calibration_groups(str(data / "data.yaml"), batch=1)
    assert [len(g) for g in groups] == [1, 1]
    batch = ov_export.calibration_batch(groups[0], (64, 64))
    expected = letterbox(cv2.imread(str(groups[0][0])), (64, 64))[0][..., ::-1].transpose(2, 0, 1) / 255
    assert batch.shape == (1, 3, 64, 64) and batch.dtype == np.float32 and np.allclose(batch[0], expected)


def test_unsupported_formats_are_clear(model, tmp_path):
    for fmt in ("engine", "tflite", "coreml", "ncnn"):
        with pytest.raises(ValueError, match="supported formats are onnx, torchscript, openvino"):
            resolve_format(fmt)
    with pytest.raises(ValueError, match="not a known export format"):
        export_model(model, {"format": "onyx"}, tmp_path / "m.pt")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA device"):
            export_model(model, {"format": "torchscript", "half": True}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="torchscript"):
        export_model(model, {"format": "torchscript", "nms": True}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="not a model yoloseg can run"):
        load_backend(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@needs_openvino
def test_openvino_int8_without_nncf_says_what_to_install(model, tmp_path):
    if importlib.util.find_spec("nncf") is not None:
        pytest.skip("nncf is installed; the missing-package message cannot be shown")
    with pytest.raises(ImportError, match="pip install nncf"):
        export_model(model, {"format": "openvino", "int8": True, "data": "coco8-seg.yaml"}, tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_no_file(model, tmp_path, monkeypatch):
    import yoloseg.export as export

    def boom(net, file, cfg, metadata, sample):
        from yoloseg.utils.files import atomic_path

        with atomic_path(file) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("exporter failed")

    monkeypatch.setitem(export.EXPORTERS, "torchscript", boom)
    with pytest.raises(RuntimeError, match="exporter failed"):
        export_model(model, {"format": "torchscript", "imgsz": EXPORT_SIZE}, tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_shared_reference_is_used_when_present():
    """The agreement tests above are strongest with the trained checkpoint; say so when it is missing."""
    if not CHECKPOINT.is_file():
        shared_path("reference", "yolo11n-seg-shapes.pt")  # skips with the reason
    assert CHECKPOINT.is_file()


@needs_onnx
def test_benchmark_rows_and_table(tmp_path, monkeypatch):
    from yoloseg.model import YOLO
    from yoloseg.utils.benchmarks import benchmark

    class FakeMetrics:
        results_dict = {"metrics/mAP50-95(M)": 0.5}

    calls = []

    def fake_val(self, **kwargs):  # validation itself is tested elsewhere; here only what benchmark does with it
        calls.append((self.backend is not None, kwargs["data"]))
        return FakeMetrics()

    monkeypatch.setattr(YOLO, "val", fake_val)
    rows = benchmark(
        YOLO("yolo11n-seg.yaml"), data="shapes.yaml", imgsz=64, formats=["pytorch", "onnx", "engine"], save_dir=tmp_path
    )
    assert [r["format"] for r in rows] == ["pytorch", "onnx", "engine"]
    assert [r["status"] for r in rows[:2]] == ["ok", "ok"] and rows[2]["status"].startswith("failed: ValueError")
    assert rows[1]["size_mb"] > 1 and rows[1]["metrics/mAP50-95(M)"] == 0.5 and rows[1]["inference_ms"] > 0
    assert calls == [(False, "shapes.yaml"), (True, "shapes.yaml")]
    assert (tmp_path / "yolo11n-seg.onnx").is_file()
    table = (tmp_path / "benchmarks.log").read_text()
    assert "metrics/mAP50-95(M)" in table and "onnx" in table
    assert json.loads((tmp_path / "benchmarks.json").read_text())[1]["format"] == "onnx"


@pytest.mark.parametrize("fmt", [pytest.param(f, marks=m) for f, m in FORMAT_MARKS.items() if f != "torchscript"])
def test_runtimes_use_the_pinned_cpus_only(fmt, model, export_dir, monkeypatch):
    """Pinned to fewer CPUs than the machine has (taskset, a cpuset), ONNX Runtime and OpenVINO get that many
    threads instead of one per core of the machine; unpinned they keep their own default."""
    import yoloseg.export.backends as backends

    path = _export(model, export_dir, "dyn", format=fmt, dynamic=True)

    def threads(backend) -> int:
        if fmt == "onnx":
            return backend.session.get_session_options().intra_op_num_threads
        return int(backend.compiled.get_property("INFERENCE_NUM_THREADS"))

    monkeypatch.setattr(backends, "restricted_cpus", lambda: None)
    default = threads(load_backend(path))
    monkeypatch.setattr(backends, "restricted_cpus", lambda: 1)
    pinned = load_backend(path)
    assert threads(pinned) == 1
    assert default != 1 or (os.cpu_count() or 1) == 1
    if fmt == "onnx":  # idle ORT threads sleep instead of spinning on the cores the Python pre/postprocessing uses
        options = pinned.session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_restricted_cpus(monkeypatch):
    from yoloseg.utils import torch_utils

    monkeypatch.setattr(torch_utils.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(torch_utils.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert torch_utils.usable_cpus() == 2 and torch_utils.restricted_cpus() == 2
    monkeypatch.setattr(torch_utils.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert torch_utils.restricted_cpus() is None

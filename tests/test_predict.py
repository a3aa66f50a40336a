"""Prediction: agreement with the incumbent's recorded predictions, sources, saving, streaming, TTA."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yoloseg.data.sources import StreamReader, load_sources
from yoloseg.engine.deferred import DeferredBranches, input_window, mask_region
from yoloseg.engine.predictor import Predictor
from yoloseg.results import Results

from .conftest import SHARED, shared_path

BOX_TOL = 1.0  # px
CONF_TOL = 0.002
MASK_IOU_MIN = 0.98


# ---------------------------------------------------------------- helpers
@functools.lru_cache(maxsize=2)
def _reference_model(name: str):
    from yoloseg.nn.graph import YOLOModel
    from yoloseg.nn.official import load_official_checkpoint

    ckpt = load_official_checkpoint(shared_path("reference", f"{name}.pt"))
    model = YOLOModel(ckpt["yaml"])
    model.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    model.names = ckpt["names"]
    return model.eval().fuse()


def _tiny_model(nc: int = 3):
    """A randomly initialised yolo11n-seg (callers pass a tiny conf when they need detections from it)."""
    from yoloseg.nn.graph import YOLOModel

    torch.manual_seed(0)
    model = YOLOModel("yolo11n-seg.yaml", nc=nc)
    model.names = {i: f"c{i}" for i in range(nc)}
    return model.eval()


def rle_decode(rle: dict) -> np.ndarray:
    """COCO compressed RLE {'size': [h, w], 'counts': str} -> (h, w) uint8 (column-major runs, 0s first)."""
    h, w = rle["size"]
    s = rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = s[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(np.uint8)
    return flat.reshape(w, h).T


def _golden(name: str) -> list[dict]:
    return json.loads(shared_path("reference", "golden", f"{name}.predictions.json").read_text())["images"]


def compare_with_golden(result: Results, entry: dict) -> dict:
    """Match our detections to the recorded ones (same class, closest box); returns the error figures."""
    gold = entry["detections"]
    n = len(result)
    stats = {"total": len(gold), "ours": n, "matched": 0, "box": 0.0, "conf": 0.0, "iou": 1.0}
    if not gold or not n:
        return stats
    assert list(result.masks.data.shape[1:]) == entry["mask_shape"]
    boxes = result.boxes.xyxy.numpy().astype(np.float64)
    cls = result.boxes.cls.numpy().astype(int)
    conf = result.boxes.conf.numpy().astype(np.float64)
    masks = result.masks.data.numpy()
    free = np.ones(n, bool)
    for g in gold:
        err = np.abs(boxes - np.array(g["xyxy"])).max(1)
        err[(cls != g["cls"]) | ~free] = np.inf
        j = int(err.argmin())
        if not np.isfinite(err[j]) or err[j] > 5 * BOX_TOL:
            continue
        free[j] = False
        gm = rle_decode(g["mask_rle"]).astype(bool)
        om = masks[j].astype(bool)
        union = (gm | om).sum()
        iou = (gm & om).sum() / union if union else 1.0
        stats["matched"] += 1
        stats["box"] = max(stats["box"], float(err[j]))
        stats["conf"] = max(stats["conf"], abs(conf[j] - g["conf"]))
        stats["iou"] = min(stats["iou"], float(iou))
    return stats


def _cases(name: str) -> list:
    """One pytest param per recorded (image, imgsz, retina): 24 per checkpoint, ~0.15 s each."""
    file = SHARED / "reference" / "golden" / f"{name}.predictions.json"
    if not file.is_file():
        return [pytest.param(name, None, 0, False, id=f"{name}-absent")]
    out = []
    for e in json.loads(file.read_text())["images"]:
        case_id = f"{name[12:]}-{Path(e['image']).name}-{e['imgsz']}-{'retina' if e['retina_masks'] else 'default'}"
        out.append(pytest.param(name, e["image"], e["imgsz"], e["retina_masks"], id=case_id))
    return out


# ---------------------------------------------------------------- agreement with the incumbent
@pytest.mark.parametrize(
    "name, image, imgsz, retina",
    _cases("yolo11n-seg-shapes") + _cases("yolo11n-seg-coco128"),
)
def test_agreement_with_incumbent(name, image, imgsz, retina):
    shared_path("reference", "golden", f"{name}.predictions.json")  # skips when the reference is absent
    entry = next(
        e for e in _golden(name) if e["image"] == image and e["imgsz"] == imgsz and e["retina_masks"] == retina
    )
    predictor = Predictor(_reference_model(name), {"imgsz": imgsz, "retina_masks": retina, "verbose": False})
    (result,) = predictor.predict(str(shared_path("data", image)))
    assert result.orig_shape == tuple(entry["orig_shape"])
    s = compare_with_golden(result, entry)
    assert s["ours"] == s["total"], s
    assert s["matched"] == s["total"], s
    assert s["box"] <= BOX_TOL and s["conf"] <= CONF_TOL and s["iou"] >= MASK_IOU_MIN, s


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools' numpy 2 copy-keyword notice
def test_rle_decoder_matches_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    entry = next(e for e in _golden("yolo11n-seg-coco128") if e["image"].endswith("061.jpg") and e["imgsz"] == 640)
    for g in entry["detections"]:
        rle = dict(g["mask_rle"], counts=g["mask_rle"]["counts"].encode())
        np.testing.assert_array_equal(rle_decode(g["mask_rle"]), mask_api.decode(rle))


@pytest.mark.parametrize("retina", [False, True])
def test_polygons_match_golden(retina):
    """masks.xy equals the recorded polygons (original pixels; the recording is rounded to 0.01 px)."""
    name, image = "yolo11n-seg-coco128", "coco8-seg/images/val/000000000061.jpg"
    entry = next(e for e in _golden(name) if e["image"] == image and e["imgsz"] == 640 and e["retina_masks"] == retina)
    predictor = Predictor(_reference_model(name), {"imgsz": 640, "retina_masks": retina, "verbose": False})
    (r,) = predictor.predict(str(shared_path("data", image)))
    assert len(entry["detections"]) == len(r) > 20
    for g in entry["detections"]:
        j = int(np.abs(r.boxes.xyxy.numpy() - np.array(g["xyxy"])).max(1).argmin())
        ours, theirs = r.masks.xy[j], np.array(g["polygon_xy"], np.float32).reshape(-1, 2)
        assert ours.dtype == np.float32 and ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, atol=0.0051)


def test_batch_matches_single_images():
    model = _reference_model("yolo11n-seg-shapes")
    files = [str(shared_path("data", f"shapes-ref-seg/images/val/0000{i}.jpg")) for i in range(3)]
    single = [Predictor(model, {"imgsz": 256, "verbose": False}).predict(f)[0] for f in files]
    batched = Predictor(model, {"imgsz": 256, "batch": 3, "verbose": False}).predict(files)
    assert [r.path for r in batched] == files
    for a, b in zip(single, batched):
        assert len(a) == len(b)
        torch.testing.assert_close(a.boxes.data, b.boxes.data, atol=1e-3, rtol=1e-4)
        assert torch.equal(a.masks.data, b.masks.data)


def test_console_output_and_saving(tmp_path, capsys):
    model = _reference_model("yolo11n-seg-coco128")
    bus = str(shared_path("data", "images", "bus.jpg"))
    args = {
        "imgsz": 320,
        "save": True,
        "save_txt": True,
        "save_conf": True,
        "save_crop": True,
        "project": str(tmp_path),
    }
    results = Predictor(model, args).predict(bus)
    out = capsys.readouterr().out
    assert f"image 1/1 {bus}: 320x256 " in out
    assert "Speed: " in out and "per image at shape (1, 3, 320, 256)" in out
    save_dir = tmp_path / "predict"
    assert f"Results saved to {save_dir}" in out
    assert (save_dir / "bus.jpg").is_file()
    lines = (save_dir / "labels" / "bus.txt").read_text().splitlines()
    assert len(lines) == len(results[0])
    assert all(len(ln.split()) % 2 == 0 for ln in lines)  # cls + pairs + conf
    assert any((save_dir / "crops").rglob("bus*.jpg"))
    # a second run numbers a new folder
    Predictor(model, {**args, "verbose": False}).predict(bus)
    assert (tmp_path / "predict2" / "bus.jpg").is_file()


def test_retina_and_default_masks_agree():
    model = _reference_model("yolo11n-seg-shapes")
    img = str(shared_path("data", "shapes-ref-seg/images/val/00002.jpg"))
    (a,) = Predictor(model, {"imgsz": 320, "verbose": False}).predict(img)
    (b,) = Predictor(model, {"imgsz": 320, "retina_masks": True, "verbose": False}).predict(img)
    assert b.masks.data.shape[1:] == a.orig_shape
    assert a.masks.data.shape[1:] == (320, 320)
    torch.testing.assert_close(a.boxes.data, b.boxes.data)


def test_crop_masks_false_keeps_pixels_outside_boxes():
    model = _reference_model("yolo11n-seg-shapes")
    img = str(shared_path("data", "shapes-ref-seg/images/val/00001.jpg"))
    (a,) = Predictor(model, {"imgsz": 256, "verbose": False}).predict(img)
    (b,) = Predictor(model, {"imgsz": 256, "crop_masks": False, "verbose": False}).predict(img)
    assert len(a) == len(b)
    assert bool((b.masks.data >= a.masks.data).all())  # uncropped masks contain the cropped ones


def test_classes_filter_and_max_det():
    model = _reference_model("yolo11n-seg-shapes")
    img = str(shared_path("data", "images", "bus.jpg"))
    (r,) = Predictor(model, {"imgsz": 256, "classes": [2], "verbose": False}).predict(img)
    assert len(r) and set(r.boxes.cls.tolist()) == {2.0}
    (r,) = Predictor(model, {"imgsz": 256, "max_det": 3, "verbose": False}).predict(img)
    assert len(r) <= 3
    # postprocessed in inference mode, as the incumbent: inference tensors, which a clone turns into ordinary ones
    assert r.boxes.data.is_inference() and r.masks.data.is_inference()
    boxes = r.boxes.data.clone()
    boxes[:, 0] += 1
    assert not boxes.is_inference()


def test_tta_runs_and_agrees_roughly():
    model = _reference_model("yolo11n-seg-shapes")
    img = str(shared_path("data", "shapes-ref-seg/images/val/00002.jpg"))
    (plain,) = Predictor(model, {"imgsz": 256, "verbose": False}).predict(img)
    (tta,) = Predictor(model, {"imgsz": 256, "augment": True, "verbose": False}).predict(img)
    assert len(tta) > 0 and tta.masks.data.shape[1:] == plain.masks.data.shape[1:]
    # every confident plain detection is found by TTA with a close box and an overlapping mask
    for j in range(len(plain)):
        if plain.boxes.conf[j] < 0.5:
            continue
        err = (tta.boxes.xyxy - plain.boxes.xyxy[j]).abs().amax(1)
        k = int(err.argmin())
        assert err[k] < 8
        inter = (tta.masks.data[k].bool() & plain.masks.data[j].bool()).sum()
        union = (tta.masks.data[k].bool() | plain.masks.data[j].bool()).sum()
        assert inter / union > 0.7
    (tta_r,) = Predictor(model, {"imgsz": 256, "augment": True, "retina_masks": True, "verbose": False}).predict(img)
    assert tta_r.masks.data.shape[1:] == tta_r.orig_shape


def test_model_is_not_modified():
    model = _tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    Predictor(model, {"imgsz": 64, "verbose": False}).predict(np.zeros((64, 64, 3), np.uint8))
    assert model.training and not model.is_fused()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


class _Backend:
    """A stand-in export backend: fixed input size, not PyTorch (no auto letterbox)."""

    def __init__(self, model, imgsz=(256, 256), names=None):
        self.model, self.stride, self.names = model, 32, names or model.names
        self.pt, self.dynamic, self.imgsz, self.fp16, self.device = False, False, imgsz, False, "cpu"
        self.shapes = []

    def __call__(self, im):
        self.shapes.append(tuple(im.shape))
        return self.model(im)


def test_backend_interface_uses_fixed_size():
    model = _reference_model("yolo11n-seg-shapes")
    backend = _Backend(model)
    bus = str(shared_path("data", "images", "bus.jpg"))
    (r,) = Predictor(backend, {"imgsz": 320, "verbose": False}).predict(bus)
    assert backend.shapes == [(1, 3, 256, 256)]  # the export size, padded square (no auto)
    assert r.masks.data.shape[1:] == (256, 256) and len(r) > 0


class _End2EndBackend(_Backend):
    """A stand-in for an export with in-graph NMS (and optionally in-graph masks), dynamic shapes."""

    def __init__(self, model, masks: bool):
        from yoloseg.export.postprocess import End2End

        graph = End2End(model, len(model.names), conf=0.25, iou=0.7, max_det=300, masks=masks)
        super().__init__(graph, names=model.names)
        self.dynamic, self.end2end, self.nms, self.masks = True, True, True, masks


@pytest.mark.parametrize("masks", [False, True])
@pytest.mark.parametrize("retina", [False, True])
def test_end2end_backends_match_pytorch(masks, retina):
    model = _reference_model("yolo11n-seg-shapes")
    img = str(shared_path("data", "shapes-ref-seg/images/val/00002.jpg"))
    args = {"imgsz": 256, "retina_masks": retina, "verbose": False}
    (ref,) = Predictor(model, args).predict(img)
    (got,) = Predictor(_End2EndBackend(model, masks), {**args, "conf": 0.3}).predict(img)
    keep = ref.boxes.conf > 0.3
    ref = ref[keep]
    assert len(got) == len(ref) > 0
    torch.testing.assert_close(got.boxes.data, ref.boxes.data, atol=1e-3, rtol=1e-4)
    inter = (got.masks.data.bool() & ref.masks.data.bool()).flatten(1).sum(1)
    union = (got.masks.data.bool() | ref.masks.data.bool()).flatten(1).sum(1)
    assert float((inter / union).min()) > (0.999 if not (masks and retina) else 0.95)


def test_reuse_and_update_args():
    model = _tiny_model()
    p = Predictor(model, {"imgsz": 64, "verbose": False})
    assert p.reusable_for({"conf": 0.5, "imgsz": 96})
    p.update_args({"conf": 0.5, "imgsz": 96})
    assert p.args["conf"] == 0.5 and p.imgsz == (96, 96)
    assert not p.reusable_for({"device": "cuda:0"})
    assert not p.reusable_for({}, model=_tiny_model())
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # trained in place: the fused copy is stale
    assert not p.reusable_for({})
    p = Predictor(model, {"imgsz": 64, "verbose": False})
    assert p.reusable_for({})
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.weight = torch.nn.Parameter(conv.weight.detach().clone())  # a parameter replaced, not updated in place
    assert not p.reusable_for({})
    p = Predictor(model, {"imgsz": 64, "verbose": False})
    parent, name = next((m, n) for m in model.modules() for n, c in m.named_children() if c is conv)
    setattr(
        parent,
        name,
        torch.nn.Conv2d(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None
        ),
    )
    assert not p.reusable_for({})  # a submodule swapped
    events = []
    p2 = Predictor(model, {"imgsz": 64, "verbose": False}, callbacks={"on_predict_start": [events.append]})
    p2.predict(np.zeros((64, 64, 3), np.uint8))
    assert events == [p2]


# ---------------------------------------------------------------- sources
def _write_images(folder: Path, n: int, size=(48, 64)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"im{i}.png"
        img = np.full((*size, 3), (40 * i) % 256, np.uint8)
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


def _collect(sources):
    paths, images, infos, frames = [], [], [], []
    for b in sources:
        paths += b.paths
        images += b.images
        infos += b.infos
        frames += b.frames
    return paths, images, infos, frames


def test_folder_with_corrupt_image_warns_and_continues(tmp_path, caplog):
    good = _write_images(tmp_path / "imgs" / "sub", 2)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "imgs" / "notes.md").write_text("ignored")
    import logging

    logger = logging.getLogger("yoloseg")
    logger.addHandler(caplog.handler)
    try:
        paths, images, _, _ = _collect(load_sources(str(tmp_path / "imgs")))
    finally:
        logger.removeHandler(caplog.handler)
    assert paths == [str(p) for p in good]
    assert all(im.shape == (48, 64, 3) for im in images)
    assert "broken.jpg" in caplog.text


def test_explicit_bad_sources_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_sources(str(tmp_path / "missing.jpg"))
    (tmp_path / "a.xyz").write_text("x")
    with pytest.raises(ValueError, match=r"a\.xyz.*unsupported"):
        load_sources(str(tmp_path / "a.xyz"))
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    with pytest.raises(ValueError, match="bad.jpg"):
        list(load_sources(str(tmp_path / "bad.jpg")))
    with pytest.raises(TypeError, match="unsupported source type"):
        load_sources(3.5)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):  # at the call, not at the first next()
        Predictor(_tiny_model(), {"imgsz": 64}).predict(str(tmp_path / "missing.jpg"), stream=True)


def test_txt_list_glob_and_batching(tmp_path):
    files = _write_images(tmp_path / "imgs", 5)
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(["imgs/im0.png", str(files[3]), "imgs/missing.png", ""]))
    paths, _, infos, _ = _collect(load_sources(str(lst)))
    assert paths == [str(tmp_path / "imgs" / "im0.png"), str(files[3])]
    assert infos[0] == f"image 1/2 {paths[0]}"
    batches = list(load_sources(str(tmp_path / "imgs" / "im*.png"), batch=2))
    assert [len(b.paths) for b in batches] == [2, 2, 1]


def test_in_memory_sources():
    from PIL import Image

    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 255  # red in RGB
    paths, images, infos, frames = _collect(load_sources([rgb[..., ::-1].copy(), Image.fromarray(rgb), rgb[..., 0]]))
    assert paths == ["image0.jpg", "image1.jpg", "image2.jpg"] and frames == [None] * 3
    assert images[0][0, 0].tolist() == [0, 0, 255] and images[1][0, 0].tolist() == [0, 0, 255]  # BGR
    assert images[2].shape == (20, 30, 3)
    with pytest.raises(TypeError, match="uint8"):
        load_sources(np.zeros((8, 8, 3), np.float32))
    for empty in (np.zeros((0, 8, 3), np.uint8), np.zeros((8, 0), np.uint8), Image.new("RGB", (0, 5))):
        with pytest.raises(ValueError, match="source 0: the image is empty"):
            load_sources(empty)


def test_tensor_source_is_fed_as_is():
    model = _reference_model("yolo11n-seg-shapes")
    img = cv2.imread(str(shared_path("data", "shapes-ref-seg/images/val/00001.jpg")))
    t = torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255  # 256x256, RGB 0-1
    (r_t,) = Predictor(model, {"imgsz": 256, "verbose": False}).predict(t)
    (r_np,) = Predictor(model, {"imgsz": 256, "verbose": False}).predict(img)
    assert r_t.orig_shape == (256, 256) and r_t.path == "image0.jpg"
    torch.testing.assert_close(r_t.boxes.data, r_np.boxes.data, atol=1e-3, rtol=1e-4)
    with pytest.raises(ValueError, match="multiples of the model stride"):
        load_sources(torch.zeros(1, 3, 50, 64), stride=32)
    for empty in (torch.zeros(0, 3, 64, 64), torch.zeros(1, 3, 0, 64)):
        with pytest.raises(ValueError, match="tensor source: the tensor is empty"):
            load_sources(empty, stride=32)


def _write_video(path: Path, n: int = 7, size=(64, 96)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (size[1], size[0]))
    for i in range(n):
        writer.write(np.full((*size, 3), i * 30, np.uint8))
    writer.release()


def test_video_with_vid_stride_and_saving(tmp_path):
    video = tmp_path / "clip.avi"
    _write_video(video, 7)
    paths, images, infos, frames = _collect(load_sources(str(video), vid_stride=3))
    assert frames == [1, 2, 3] and len(images) == 3  # frames 0, 3, 6 of 7
    assert infos[0] == f"video 1/1 (frame 1/3) {video}"
    assert abs(int(images[1].mean()) - 90) <= 3  # the 4th frame
    model = _tiny_model()
    args = {"imgsz": 64, "save": True, "save_txt": True, "project": str(tmp_path / "runs"), "verbose": False}
    results = Predictor(model, {**args, "conf": 0.0001}).predict(str(video))
    assert len(results) == 7
    saved = list((tmp_path / "runs" / "predict").glob("clip.*"))
    assert len(saved) == 1 and saved[0].stat().st_size > 0
    cap = cv2.VideoCapture(str(saved[0]))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 7
    cap.release()
    assert not list((tmp_path / "runs" / "predict").glob(".*partial*"))


def test_stream_reader_on_a_video_file(tmp_path):
    video = tmp_path / "clip.avi"
    _write_video(video, 6)
    with StreamReader(str(video), vid_stride=2, buffer=True) as reader:
        frames = [f for f, _ in reader]
    assert frames == [1, 2, 3]


def test_url_source_served_locally(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # downloads land in the temp dir
    (tmp_path / "tmp").mkdir()
    folder = tmp_path / "www"
    _write_images(folder, 1, size=(40, 50))
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/im0.png"
        paths, images, _, _ = _collect(load_sources(url))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert Path(paths[0]).name == "im0.png" and images[0].shape == (40, 50, 3)
    assert Path(paths[0]).is_relative_to(tmp_path / "tmp")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_stream_mode_is_lazy_and_bounded(tmp_path):
    files = _write_images(tmp_path / "many", 12, size=(480, 640))
    model = _tiny_model()
    predictor = Predictor(model, {"imgsz": 64, "verbose": False, "conf": 0.0001})
    gen = predictor.predict(str(tmp_path / "many"), stream=True)
    assert not isinstance(gen, list)
    first = next(gen)
    assert first.path == str(files[0])
    del first
    tracemalloc.start()
    next(gen)
    base, _ = tracemalloc.get_traced_memory()
    for _ in gen:
        pass
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # nothing accumulates: a 480x640 BGR image is 0.9 MB, ten of them would be 9 MB
    assert current - base < 3_000_000


def test_empty_results_for_blank_image():
    model = _reference_model("yolo11n-seg-shapes")
    (r,) = Predictor(model, {"imgsz": 64, "conf": 0.99, "verbose": False}).predict(np.full((64, 64, 3), 114, np.uint8))
    assert len(r) == 0 and r.masks is None and r.boxes.data.shape == (0, 6)
    assert r.verbose() == "(no detections), "


def test_compile_failure_warns_and_runs_eagerly(monkeypatch, log_messages):
    """compile=True whose compilation fails (e.g. no C++ compiler) warns once and gives the eager results."""
    model = _reference_model("yolo11n-seg-shapes")
    image = str(shared_path("data", "shapes-ref-seg/images/val/00000.jpg"))
    calls = []

    def broken_compile(module, mode=None):
        calls.append(mode)

        def run(*args, **kwargs):
            raise RuntimeError("no working C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    eager = Predictor(model, {"imgsz": 256, "verbose": False}).predict(image)[0]
    compiled = Predictor(model, {"imgsz": 256, "verbose": False, "compile": "max-autotune"})
    first, second = compiled.predict(image)[0], compiled.predict(image)[0]
    assert calls == ["max-autotune"]
    assert sum("compile='max-autotune' failed" in m and "no working C++ compiler" in m for m in log_messages) == 1
    for r in (first, second):
        torch.testing.assert_close(r.boxes.data, eager.boxes.data)
        assert torch.equal(r.masks.data, eager.masks.data)
    assert not compiled.reusable_for({"compile": False})


@pytest.mark.slow
def test_compile_gives_the_same_predictions():
    """A real torch.compile (inductor, needs a C++ compiler; ~1 min on 2 cores): same detections as eager."""
    model = _reference_model("yolo11n-seg-shapes")
    image = str(shared_path("data", "shapes-ref-seg/images/val/00000.jpg"))
    eager = Predictor(model, {"imgsz": 256, "verbose": False}).predict(image)[0]
    compiled = Predictor(model, {"imgsz": 256, "verbose": False, "compile": True})
    result = compiled.predict(image)[0]
    assert compiled.forward.compiled is not None  # it compiled rather than fell back
    torch.testing.assert_close(result.boxes.data, eager.boxes.data, atol=1e-3, rtol=1e-4)
    inter = (result.masks.data.bool() & eager.masks.data.bool()).sum()
    assert inter / (result.masks.data.bool() | eager.masks.data.bool()).sum() > 0.99


def _conv_calls(monkeypatch) -> list[int]:
    """Eager convolutions of the model's forward, nn.Conv2d or fused Conv blocks (a TorchScript graph runs none; the
    CPU predictor then runs the box and prototype branches and the box decoding eagerly where they are needed), one
    entry each."""
    from yoloseg.engine import inference
    from yoloseg.engine.inference import ConvSiLU

    calls, deferred = [], []
    conv_forward, fused_forward = torch.nn.Conv2d._conv_forward, ConvSiLU.forward

    def spy(self, x, weight, bias):
        if not deferred:
            calls.append(1)
        return conv_forward(self, x, weight, bias)

    def fused_spy(self, x):
        if not deferred:
            calls.append(1)
        return fused_forward(self, x)

    def deferring(method):
        def run(*args, **kwargs):
            deferred.append(1)
            try:
                return method(*args, **kwargs)
            finally:
                deferred.pop()

        return run

    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", spy)
    monkeypatch.setattr(ConvSiLU, "forward", fused_spy)
    for name in ("complete_boxes", "complete_all", "complete_coeffs", "protos_for"):  # deferred branches, decoding
        monkeypatch.setattr(DeferredBranches, name, deferring(getattr(DeferredBranches, name)))
    # nor the fusion's own calls (its input-size probe and check), once per predictor
    monkeypatch.setattr(inference, "fuse_conv_silu", deferring(inference.fuse_conv_silu))
    return calls


def test_channels_last_preprocess_is_the_same_input():
    """On a CPU the letterboxed HWC images become the channels-last input directly (no transposing copy): the same
    values as the NCHW path, in channels-last memory."""
    images = [np.random.default_rng(i).integers(0, 255, (50, 70, 3), dtype=np.uint8) for i in range(2)]
    images[1][:] = (10, 20, 30)  # BGR
    model = _tiny_model()
    nhwc = Predictor(model, {"imgsz": 64, "verbose": False}).preprocess(images)
    nchw = Predictor(model, {"imgsz": 64, "verbose": False, "channels_last": False}).preprocess(images)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and nchw.is_contiguous()
    assert nhwc.dtype == nchw.dtype == torch.float32 and torch.equal(nhwc, nchw)
    assert torch.equal(nhwc[1, :, 32, 32], torch.tensor([30, 20, 10]) / 255)  # RGB


def test_repeated_calls_run_a_frozen_graph_with_the_same_predictions(monkeypatch):
    """A CPU predictor called again and again traces its model into a frozen TorchScript graph at the third call,
    outside the timed stages; later calls, at any shape, run the graph (no eager module calls) with the eager
    predictions."""
    import yoloseg.engine.predictor as predictor_module

    model = _reference_model("yolo11n-seg-shapes")
    image = str(shared_path("data", "shapes-ref-seg/images/val/00000.jpg"))
    eager = Predictor(model, {"imgsz": 256, "verbose": False, "jit": False})
    expected = [eager.predict(image)[0]]
    expected.append(Predictor(model, {"imgsz": 192, "verbose": False, "jit": False}).predict(image)[0])
    assert len(expected[0]) >= 3 and len(expected[1]) >= 1
    trace = torch.jit.trace

    def slow_trace(*args, **kwargs):
        time.sleep(0.5)  # the trace is setup: it must not show in the reported inference time
        return trace(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "trace", slow_trace)
    predictor = Predictor(model, {"imgsz": 256, "verbose": False})
    calls = _conv_calls(monkeypatch)
    runs = []
    for k in range(predictor_module.GRAPH_AFTER + 1):
        calls.clear()
        runs.append((predictor.predict(image)[0], len(calls)))
        if k == 0:
            assert predictor.forward.graph is None
    assert [n > 0 for _, n in runs] == [True] * (predictor_module.GRAPH_AFTER - 1) + [True, False]  # trace, then none
    assert predictor.forward.graph is not None
    assert eager.forward.graph is None
    assert all(r.speed["inference"] < 400 for r, _ in runs)
    predictor.update_args({"imgsz": 192})
    calls.clear()
    runs.append((predictor.predict(image)[0], len(calls)))
    assert runs[-1][1] == 0  # the new shape ran through the same graph
    for (r, _), e in zip(runs, [expected[0]] * (len(runs) - 1) + [expected[1]]):
        torch.testing.assert_close(r.boxes.data, e.boxes.data, atol=1e-3, rtol=1e-5)
        assert (r.masks.data != e.masks.data).float().mean() < 1e-4
    assert not predictor.reusable_for({"jit": False})


def test_graph_only_where_it_pays(tmp_path, monkeypatch):
    """One call on a short list of images stays eager; a long list or a video gets the graph from its third batch."""
    import yoloseg.engine.predictor as predictor_module

    monkeypatch.setattr(predictor_module, "GRAPH_MIN_LEFT", 5)
    model = _tiny_model()
    folder = tmp_path / "few"
    _write_images(folder, 6)
    few = Predictor(model, {"imgsz": 64, "verbose": False})
    assert len(few.predict(str(folder))) == 6 and few.forward.graph is None  # 4 left at the third image
    many = tmp_path / "many"
    _write_images(many, 8)
    long = Predictor(model, {"imgsz": 64, "verbose": False})
    calls = _conv_calls(monkeypatch)
    long.predict(str(many))
    assert long.forward.graph is not None and len(calls) > 0
    video = tmp_path / "clip.mp4"
    _write_video(video)
    clip = Predictor(model, {"imgsz": 64, "verbose": False})
    calls.clear()
    assert len(clip.predict(str(video))) == 7 and clip.forward.graph is not None
    with_graph = len(calls)
    off = Predictor(model, {"imgsz": 64, "verbose": False, "jit": False})
    calls.clear()
    off.predict(str(video))
    assert off.forward.graph is None
    per_frame = len(calls) / 7
    assert per_frame > 50 and per_frame == int(per_frame)
    # eager: frames 1-2, the trace and the check at another shape; frames 3-7 ran no eager convolution
    assert with_graph == (predictor_module.GRAPH_AFTER - 1 + 2) * per_frame
    monkeypatch.setattr(torch, "compile", lambda module, mode=None: module)
    compiled = Predictor(model, {"imgsz": 64, "verbose": False, "compile": True})
    assert not compiled.forward.graphs  # torch.compile, when asked for, replaces the graph


def test_graph_is_traced_at_the_micro_batch_size(tmp_path, monkeypatch):
    """A batched CPU predictor runs micro-batches: the trace uses one, not the whole batch."""
    import yoloseg.engine.inference as inference
    import yoloseg.engine.predictor as predictor_module

    monkeypatch.setattr(inference, "CPU_MICRO_BATCH_PIXELS", 2 * 64 * 64)
    monkeypatch.setattr(predictor_module, "GRAPH_MIN_LEFT", 16)  # the third batch of 4 leaves 16 of the 24 images
    traced = []
    real_trace = inference.CompiledForward._trace
    monkeypatch.setattr(
        inference.CompiledForward, "_trace", lambda self, x: traced.append(x.shape) or real_trace(self, x)
    )
    _write_images(tmp_path, 24)
    predictor = Predictor(_tiny_model(), {"imgsz": 64, "verbose": False, "batch": 4})
    assert len(predictor.predict(str(tmp_path))) == 24
    assert traced == [(2, 3, 64, 64)] and predictor.forward.graph is not None


def test_graph_serves_other_shapes_and_batches():
    from yoloseg.engine.inference import CPU_MICRO_BATCH_PIXELS, CompiledForward, forward_batched, inference_copy

    model = inference_copy(_tiny_model(), torch.device("cpu"))
    forward = CompiledForward(model, graphs=True)
    forward.prepare(torch.rand(1, 3, 64, 96).contiguous(memory_format=torch.channels_last))
    assert forward.graph is not None
    x = torch.rand(5, 3, 96, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        got = forward_batched(forward, x)
        expected = model(x)
    for a, b in zip(got, expected):  # the same kernels on the same weights: the same bits
        assert torch.equal(a, b)
    assert CPU_MICRO_BATCH_PIXELS // (96 * 64) >= 5  # one call at batch 5 (it was traced at batch 1)
    # a traced function with the weights as constants, not a ScriptModule per submodule (~6x cheaper to make)
    assert isinstance(forward.graph, torch.jit.ScriptFunction)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit in the stand-in trace
def test_graph_that_differs_at_another_shape_is_dropped(monkeypatch, log_messages):
    """A size baked into the trace fails the check at a second shape: a warning, and the model stays eager."""
    from yoloseg.engine.inference import CompiledForward, inference_copy

    model = inference_copy(_tiny_model(), torch.device("cpu"))
    baked = CompiledForward(model, graphs=True, fuse=False)  # the stand-in traces the module: no opaque weights

    def trace_fixed_size(self, x):
        return torch.jit.freeze(torch.jit.trace(_FixedSize(self.model), x, check_trace=False).eval())

    monkeypatch.setattr(CompiledForward, "_trace", trace_fixed_size)
    baked.prepare(torch.rand(1, 3, 64, 96))
    assert baked.graph is None and not baked.graphs
    assert any("differs from the model at another input shape" in m for m in log_messages)


class _FixedSize(torch.nn.Module):
    """A stand-in for a trace with a size baked in: crops every input to 64x96 before the model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x[..., :64, :96])


def test_graph_leaves_the_global_random_stream_and_executor_setting_alone():
    """The check at another shape draws from its own generator; the graph runs under TorchScript's plain interpreter
    (no profiling runs) and the caller's thread keeps its executor setting."""
    from yoloseg.engine.inference import CompiledForward, inference_copy

    forward = CompiledForward(inference_copy(_tiny_model(), torch.device("cpu")), graphs=True)
    x = torch.rand(1, 3, 64, 64)
    state = torch.random.get_rng_state()
    forward.prepare(x)
    assert forward.graph is not None and torch.equal(torch.random.get_rng_state(), state)
    seen = []
    run = forward.graph

    def spy(images, *packed):
        seen.append(torch._C._get_graph_executor_optimize())
        return run(images, *packed)

    forward.graph = spy
    with torch.inference_mode():
        forward(x)
    assert seen == [False] and torch._C._get_graph_executor_optimize()


def test_bf16_graph_gives_the_autocast_numbers():
    """A bf16 graph is traced under autocast with the pre-cast weights and runs outside it: the eager autocast
    outputs, fp32."""
    from yoloseg.engine.inference import CompiledForward, inference_copy

    model = inference_copy(_reference_model("yolo11n-seg-shapes"), torch.device("cpu"))
    forward = CompiledForward(model, bf16=True, graphs=True)
    x = torch.rand(1, 3, 192, 256).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        eager = forward(x)
    forward.prepare(x)
    assert forward.graph is not None
    with torch.inference_mode():
        got = forward(x)
    assert all(g.dtype == torch.float32 for g in got)
    for a, b in zip(got, eager):  # boxes decoded in fp32 as eagerly (bf16 would be ~1 px off at 200 px)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_tracing_failure_warns_once_and_stays_eager(monkeypatch, log_messages):
    import yoloseg.engine.predictor as predictor_module

    def broken_trace(*args, **kwargs):
        raise RuntimeError("cannot trace this")

    monkeypatch.setattr(torch.jit, "trace", broken_trace)
    model = _tiny_model()
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    predictor = Predictor(model, {"imgsz": 64, "verbose": False, "conf": 0.0001})
    plain = Predictor(model, {"imgsz": 64, "verbose": False, "conf": 0.0001, "jit": False}).predict(image)[0]
    for _ in range(predictor_module.GRAPH_AFTER + 2):
        r = predictor.predict(image)[0]
        torch.testing.assert_close(r.boxes.data, plain.boxes.data)
    assert sum("tracing the model failed" in m and "cannot trace this" in m for m in log_messages) == 1
    assert not predictor.forward.graphs and predictor.forward.graph is None


def _box_iou_diag(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    return inter / ((a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter)


def test_half_on_a_cpu_with_bf16_hardware_autocasts_and_keeps_predictions(monkeypatch):
    """half=True on a CPU with AMX / AVX512-BF16 runs the convolutions in bf16 autocast (emulated here, so slow, and
    forced by patching the hardware check): fp32 outputs, boxes decoded in fp32, the same objects found."""
    import yoloseg.engine.inference as inference

    model = _reference_model("yolo11n-seg-shapes")
    image = str(shared_path("data", "shapes-ref-seg/images/val/00000.jpg"))
    eager = Predictor(model, {"imgsz": 256, "verbose": False}).predict(image)[0]
    monkeypatch.setattr(inference, "cpu_bf16_supported", lambda: True)
    half = Predictor(model, {"imgsz": 256, "verbose": False, "half": True})
    assert half.forward.bf16 and not half.fp16
    assert next(half.model.parameters()).dtype == torch.float32  # autocast, not a bf16 copy of the weights
    calls = []
    conv_forward, fused_forward = torch.nn.Conv2d._conv_forward, inference.ConvSiLU.forward

    def spy(self, x, weight, bias):
        out = conv_forward(self, x, weight, bias)
        calls.append(out.dtype)
        return out

    def fused_spy(self, x):  # a Conv block fused with its SiLU (on bf16 hardware; not where bf16 is emulated)
        out = fused_forward(self, x)
        calls.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", spy)
    monkeypatch.setattr(inference.ConvSiLU, "forward", fused_spy)
    r = half.predict(image)[0]
    assert calls.count(torch.bfloat16) > 50  # the convolutions did run in bf16
    y, (p3, levels) = half.infer(half.preprocess([cv2.imread(image)]))  # deferred branches: see DeferredBranches
    assert all(t.dtype == torch.float32 for t in (y, p3, *levels))
    assert len(eager) >= 3 and len(r) == len(eager)
    order_r, order_e = r.boxes.xyxy[:, 0].argsort(), eager.boxes.xyxy[:, 0].argsort()
    assert torch.equal(r.boxes.cls[order_r], eager.boxes.cls[order_e])
    assert _box_iou_diag(r.boxes.xyxy[order_r], eager.boxes.xyxy[order_e]).min() > 0.95
    torch.testing.assert_close(r.boxes.conf[order_r], eager.boxes.conf[order_e], atol=0.03, rtol=0)
    inter = (r.masks.data[order_r] * eager.masks.data[order_e]).sum((1, 2))
    union = ((r.masks.data[order_r] + eager.masks.data[order_e]) > 0).sum((1, 2))
    assert (inter / union).min() > 0.95


def test_bf16_predictor_feeds_bf16_inputs_with_the_fp32_numbers(monkeypatch):
    """Under CPU bf16 the predictor casts the uint8 input to bf16 itself (the first convolution would cast it anyway):
    every 0-255 value becomes what fp32 division then the cast give, and the outputs equal those from an fp32 input.
    Test-time augmentation resamples the input first, so it keeps fp32."""
    import yoloseg.engine.inference as inference

    monkeypatch.setattr(inference, "cpu_bf16_supported", lambda: True)
    model = _reference_model("yolo11n-seg-shapes")
    half = Predictor(model, {"imgsz": 64, "verbose": False, "half": True})
    image = np.arange(64 * 64 * 3, dtype=np.int64).reshape(64, 64, 3).__mod__(256).astype(np.uint8)
    x = half.preprocess([image])
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    reference = torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None].float().div(255)
    assert torch.equal(x, reference.to(torch.bfloat16))
    assert len(torch.unique(x)) == 256
    with torch.inference_mode():
        (y_bf16, (p3_bf16, _)), (y_fp32, (p3_fp32, _)) = half.infer(x), half.infer(reference)
    assert torch.equal(y_bf16, y_fp32) and torch.equal(p3_bf16, p3_fp32)
    half.update_args({"augment": True})
    assert half.preprocess([image]).dtype == torch.float32
    fp32 = Predictor(model, {"imgsz": 64, "verbose": False})
    assert fp32.preprocess([image]).dtype == torch.float32


def test_bf16_forward_keeps_bf16_weights_and_the_autocast_numbers():
    """Under CPU bf16 autocast the forward holds its own copy with bf16 convolution weights (autocast would cast
    every fp32 weight again on each call): bit-identical outputs, the weight casts gone, the DFL projection and the
    caller's model left fp32."""
    from torch.profiler import ProfilerActivity, profile

    from yoloseg.engine.inference import CompiledForward, inference_copy

    model = inference_copy(_tiny_model(), torch.device("cpu"))
    forward = CompiledForward(model, bf16=True, fuse=False)  # see test_conv_silu_fusion_* for the fused blocks
    convs = [m for m in forward.model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    dfl = forward.model.model[-1].dfl.conv
    assert dfl.weight.dtype == torch.float32 and all(m.weight.dtype == torch.bfloat16 for m in convs if m is not dfl)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x = torch.rand(1, 3, 64, 96).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            got = forward(x)
    assert all(torch.equal(a.float(), b) for a, b in zip(expected, got)) and got[0].dtype == torch.float32
    casts = sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")
    assert casts < len(convs) // 4, casts  # the input, the head's fp32 decoding: not one per weight


def test_conv_silu_fusion_keeps_the_outputs_and_traces_with_its_weights_as_inputs():
    """Each BN-fused Conv block with SiLU becomes one oneDNN convolution with a SiLU post-op, at the first input and
    in place: the model's outputs within fp32 rounding, the branches a deferred head runs on windows left as they
    were, and a traced graph that takes the reordered weights as inputs gives the eager outputs at another shape."""
    import copy

    from yoloseg.engine.deferred import defer_head
    from yoloseg.engine.inference import CompiledForward, ConvSiLU, inference_copy

    if not torch.backends.mkldnn.is_available():
        pytest.skip("this PyTorch build has no oneDNN (mkldnn)")
    model = inference_copy(_reference_model("yolo11n-seg-shapes"), torch.device("cpu"))
    head = defer_head(model)
    unfused = copy.deepcopy(model)
    forward = CompiledForward(model, graphs=True)
    assert not forward.packed
    x = torch.rand(1, 3, 192, 256).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected, got = unfused(x), forward(x)  # fused at the first input, before its forward
    fused = [m for m in forward.model.modules() if isinstance(m, ConvSiLU)]
    assert forward.model is model and len(forward.packed) == len(fused) > 50
    deferred = forward.model.get_submodule(head)
    windowed = [m for branch in (deferred.cv2, deferred.cv4, deferred.proto) for m in branch.modules()]
    assert windowed and not any(isinstance(m, ConvSiLU) for m in windowed)
    assert any(isinstance(m, ConvSiLU) for m in deferred.cv3.modules())  # the class maps run whole: fused
    class_maps, levels = got
    for a, b in zip((*expected[0], *expected[1]), (*class_maps, *levels)):
        torch.testing.assert_close(b, a, atol=2e-4, rtol=1e-4)
    forward.prepare(x)  # traced; checked against the eager model at another shape
    assert forward.graph is not None
    other = torch.rand(2, 3, 128, 96).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        graph, eager = forward(other), forward._call(other)
    assert all(torch.equal(a, b) for a, b in zip((*graph[0], *graph[1]), (*eager[0], *eager[1])))


def test_fused_blocks_are_laid_out_for_their_real_input_sizes():
    """The reorder of each fused block's weights is told the block's input size at the first input (oneDNN held to
    AVX2 reordered weights laid out for no size again on every call): the sizes scaled from the 64x64 probe equal
    those a forward at that shape feeds the blocks."""
    from yoloseg.engine.inference import _block_input_sizes, inference_copy
    from yoloseg.nn.blocks import Conv

    model = inference_copy(_tiny_model(), torch.device("cpu"))
    blocks = [m for m in model.modules() if isinstance(m, Conv)]
    seen: dict[int, list[int]] = {}

    def record(module, args):
        seen.setdefault(id(module), list(args[0].shape))

    hooks = [b.register_forward_pre_hook(record) for b in blocks]
    for shape in ((1, 3, 64, 96), (2, 3, 160, 128), (1, 3, 480, 640)):
        seen.clear()
        with torch.inference_mode():
            model(torch.zeros(shape).contiguous(memory_format=torch.channels_last))
        ran = [b for b in blocks if id(b) in seen]
        expected = [seen[id(b)] for b in ran]
        assert len(ran) > 50 and _block_input_sizes(model, ran, shape) == expected
    for h in hooks:
        h.remove()


def test_conv_silu_fusion_falls_back_where_the_fused_kernel_fails(monkeypatch):
    from yoloseg.engine import inference

    def unsupported(*args, **kwargs):
        raise RuntimeError("no fused kernel on this CPU")

    monkeypatch.setattr(inference, "_conv_silu_eager", unsupported)
    model = inference.inference_copy(_tiny_model(), torch.device("cpu"))
    forward = inference.CompiledForward(model, graphs=True, fuse=True)
    x = torch.rand(1, 3, 64, 96).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert all(torch.equal(a, b) for a, b in zip(forward(x), model(x)))
    assert forward.packed == [] and not any(isinstance(m, inference.ConvSiLU) for m in forward.model.modules())


@pytest.mark.skipif(
    not __import__("yoloseg.engine.inference", fromlist=["cpu_bf16_supported"]).cpu_bf16_supported(),
    reason="needs a CPU with bf16 hardware (AMX or AVX512-BF16)",
)
def test_bf16_fused_blocks_stay_as_close_to_fp32_as_autocast():
    """On bf16 hardware the bf16 forward fuses its Conv blocks with SiLU (one rounding to bf16 per block instead of
    two): each of its outputs stays about as close to the fp32 one as plain autocast's."""
    from yoloseg.engine.deferred import defer_head
    from yoloseg.engine.inference import CompiledForward, inference_copy

    model = inference_copy(_reference_model("yolo11n-seg-shapes"), torch.device("cpu"))
    defer_head(model)  # outputs: the class maps and the level features, as the CPU predictor runs it
    fused, plain = CompiledForward(model, bf16=True), CompiledForward(model, bf16=True, fuse=False)
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref, a, b = model(x), fused(x), plain(x)
    if not fused.packed:  # e.g. oneDNN held below AVX-512 by ONEDNN_MAX_CPU_ISA: the fallback, tested above
        pytest.skip("oneDNN's fused bf16 convolution does not run here")
    assert not plain.packed
    for r, f, p in zip((*ref[0], *ref[1]), (*a[0], *a[1]), (*b[0], *b[1])):
        err_fused = float((f - r).abs().mean() / r.abs().mean())
        err_plain = float((p - r).abs().mean() / r.abs().mean())
        assert err_fused < 0.02 and err_fused < 1.25 * err_plain, (err_fused, err_plain)


def test_half_on_a_cpu_without_bf16_hardware_warns_and_runs_fp32(monkeypatch, log_messages):
    import yoloseg.engine.inference as inference

    monkeypatch.setattr(inference, "cpu_bf16_supported", lambda: False)
    model = _tiny_model()
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    half = Predictor(model, {"imgsz": 64, "verbose": False, "half": True, "conf": 0.0001})
    plain = Predictor(model, {"imgsz": 64, "verbose": False, "conf": 0.0001})
    assert not half.forward.bf16 and not half.fp16
    assert any("half=True on cpu" in m and "running fp32" in m for m in log_messages)
    torch.testing.assert_close(half.predict(image)[0].boxes.data, plain.predict(image)[0].boxes.data)


def test_deferred_prototypes_give_the_full_forwards_masks(monkeypatch):
    """A CPU predictor runs the box branch only around the anchors that may pass conf, the mask coefficients around
    the kept anchors and the prototypes over the region their masks read: boxes and masks are bit-identical to the
    full forward's, scores to a few ulps (plain, retina, uncropped, batched, traced, small maps that take PyTorch's
    native kernel), a frame without detections runs no prototypes, and the caller's model is left as it was."""
    import yoloseg.engine.predictor as predictor_module
    from yoloseg.nn.blocks import Proto

    model = _reference_model("yolo11n-seg-shapes")
    files = sorted(shared_path("data", "shapes-ref-seg/images/val").glob("*.jpg"))[:6]
    images = [cv2.imread(str(f)) for f in files]
    images.append(np.ascontiguousarray(images[0][40:, 90:]))  # objects cut by the image edges
    # a 6:1 panorama with objects at one end: at imgsz 384 its P3 map is 8 x 48, where a window around them (8 x 24)
    # would take PyTorch's native kernel while the whole map took oneDNN's
    images.append(np.concatenate([images[0]] + [np.full_like(images[0], 114)] * 5, 1))
    cases = [
        {"conf": 0.001},  # hundreds of boxes: windows spanning most of the map
        {"conf": 0.25, "retina_masks": True},
        {"conf": 0.25, "crop_masks": False},
        {"conf": 0.1, "batch": 3, "imgsz": 320},
        {"conf": 0.05, "batch": 3, "imgsz": 128},  # micro-batches of 2 and 1; small maps
        {"conf": 0.05, "imgsz": 384},
        {"conf": 0.1, "augment": True},  # TTA: boxes around the candidates, every anchor's coefficients
    ]
    defer = predictor_module.defer_head
    for case in cases:
        args = {"imgsz": 256, "verbose": False, **case}
        runs = []
        for how in (defer, lambda m: None):
            monkeypatch.setattr(predictor_module, "defer_head", how)
            predictor = Predictor(model, args)
            runs.append([r for _ in range(predictor_module.GRAPH_AFTER) for r in predictor.predict(images)])
        deferred, full = runs
        assert sum(len(r) for r in full) >= 10
        for a, b in zip(deferred, full):
            # scores a few ulps apart at most: on AVX-512 PyTorch's sigmoid rounds a tensor's last elements (its
            # scalar tail) apart from the rest, and the deferred head takes it over its columns, the full one over all
            assert torch.equal(a.boxes.xyxy, b.boxes.xyxy) and torch.equal(a.boxes.cls, b.boxes.cls)
            torch.testing.assert_close(a.boxes.conf, b.boxes.conf, rtol=1e-6, atol=0)
            assert (a.masks is None) == (b.masks is None)
            if a.masks is not None:
                assert torch.equal(a.masks.data, b.masks.data)
    monkeypatch.setattr(predictor_module, "defer_head", defer)
    assert not model.model[-1].defer_branches
    regions = [mask_region(r.boxes.xyxy[:1], (256, 256), (64, 64)) for r in runs[1][:3]]
    windows = [input_window(r, 3, 2, (32, 32)) for r in regions]
    assert any(w != (0, 32, 0, 32) for w in windows)  # small objects: a window smaller than the map

    proto_calls, proto_forward = [], Proto.forward
    monkeypatch.setattr(Proto, "forward", lambda self, x: proto_calls.append(x.shape[2:]) or proto_forward(self, x))
    predictor = Predictor(model, {"imgsz": 256, "verbose": False})
    assert len(predictor.predict(np.full((256, 256, 3), 114, np.uint8))[0]) == 0
    assert proto_calls == []  # nothing detected: no prototypes
    assert len(predictor.predict(images[0])[0]) and len(proto_calls) == 1


def test_prototypes_of_detections_far_apart_run_on_separate_windows(monkeypatch):
    """An image whose detections lie far apart runs the prototypes on a window per group of nearby detections, not on
    one window over all of them: the masks stay bit-identical to the full forward's, and less of the map is run."""
    import yoloseg.engine.predictor as predictor_module
    from yoloseg.nn.blocks import Proto

    model = _reference_model("yolo11n-seg-shapes")
    image = cv2.imread(str(sorted(shared_path("data", "shapes-ref-seg/images/val").glob("*.jpg"))[0]))
    wide = np.concatenate([image, np.full((256, 1024, 3), 114, np.uint8), image], 1)  # objects at both ends
    calls, proto_forward = [], Proto.forward
    monkeypatch.setattr(Proto, "forward", lambda self, x: calls.append(tuple(x.shape[2:])) or proto_forward(self, x))
    args = {"imgsz": 1536, "verbose": False, "jit": False}
    deferred = Predictor(model, args).predict(wide)[0]
    split, calls[:] = list(calls), []
    monkeypatch.setattr(predictor_module, "defer_head", lambda m: None)
    full = Predictor(model, args).predict(wide)[0]
    calls = [c for c in calls if c != (8, 8)]  # the 64 x 64 probe that lays out the fused blocks' weights
    assert len(full) >= 4 and calls == [(32, 192)]  # the full forward: the whole P3 map
    assert len(split) >= 2 and sum(h * w for h, w in split) < 32 * 192 / 2
    assert torch.equal(deferred.boxes.xyxy, full.boxes.xyxy) and torch.equal(deferred.masks.data, full.masks.data)


def test_mask_regions_are_each_boxs_mask_region_and_unite_to_theirs():
    from yoloseg.engine.deferred import mask_regions

    generator = torch.Generator().manual_seed(0)
    for k in range(300):
        xy = torch.rand(1 + k % 5, 2, generator=generator) * torch.tensor([700.0, 500.0]) - 30  # some off the image
        boxes = torch.cat((xy, xy + torch.rand(len(xy), 2, generator=generator) * (200 if k % 2 else 5)), 1)
        regions = mask_regions(boxes, (480, 640), (120, 160))
        assert regions == [mask_region(b[None], (480, 640), (120, 160)) for b in boxes]
        union = tuple(f(r[i] for r in regions) for i, f in enumerate((min, max, min, max)))
        assert union == mask_region(boxes, (480, 640), (120, 160))
    boxes[0, 0] = float("nan")
    assert set(mask_regions(boxes, (480, 640), (120, 160))) == {(0, 120, 0, 160)}


def test_windows_of_regions_merge_only_where_one_costs_no_more():
    """Regions far apart keep their own windows, regions close together share one, and every region lies in the valid
    part (inside the ring) of a window."""
    from yoloseg.engine.deferred import WINDOW_CALL_PIXELS, _windows

    far = _windows([(2, 6, 2, 6), (50, 54, 150, 154)], 3, 2, (32, 96), 0)  # output regions, maps 2x the input
    assert len(far) == 2
    near = _windows([(2, 6, 2, 6), (8, 12, 10, 14)], 3, 2, (32, 96), 0)
    assert len(near) == 1
    many = _windows([(4 * k, 4 * k + 2, 4 * k, 4 * k + 2) for k in range(6)], 3, 2, (32, 96), 0)
    assert len(many) == 1  # a chain of neighbours: merged one by one
    for regions, windows in ((far, [(2, 6, 2, 6), (50, 54, 150, 154)]), (near, [(2, 6, 2, 6), (8, 12, 10, 14)])):
        for r0, r1, c0, c1 in windows:
            assert any(2 * y0 + 3 * (y0 > 0) <= r0 and r1 <= 2 * y1 - 3 * (y1 < 32) and
                       2 * x0 + 3 * (x0 > 0) <= c0 and c1 <= 2 * x1 - 3 * (x1 < 96)
                       for y0, y1, x0, x1 in regions)  # fmt: skip
    apart = sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in far)
    joined = _windows([(2, 54, 2, 154)], 3, 2, (32, 96), 0)[0]
    assert apart + WINDOW_CALL_PIXELS < (joined[1] - joined[0]) * (joined[3] - joined[2])


def test_windows_grow_past_the_native_kernels_size_on_the_step_grid():
    """A window that would hold too few values for oneDNN grows along its shorter side, in steps of WINDOW_STEP, until
    it spans min_area pixels (or the whole map), still holds its region and stays within the map."""
    from yoloseg.engine.deferred import MIN_WINDOW, WINDOW_STEP

    generator = torch.Generator().manual_seed(0)
    for k in range(300):
        h, w = (int(v) for v in torch.randint(8, 90, (2,), generator=generator))
        r0, c0 = (
            int(torch.randint(0, h, (1,), generator=generator)),
            int(torch.randint(0, w, (1,), generator=generator)),
        )
        region = (r0, min(r0 + 1 + k % 7, h), c0, min(c0 + 1 + k % 5, w))
        min_area = (0, 577, 641, 1500)[k % 4]
        y0, y1, x0, x1 = input_window(region, 2, 1, (h, w), min_area)
        assert 0 <= y0 <= max(region[0] - 2, 0) and min(region[1] + 2, h) <= y1 <= h
        assert 0 <= x0 <= max(region[2] - 2, 0) and min(region[3] + 2, w) <= x1 <= w
        assert (y1 - y0) * (x1 - x0) >= min_area or (y1 - y0, x1 - x0) == (h, w)
        for size, full in ((y1 - y0, h), (x1 - x0, w)):
            assert size == full or (size >= MIN_WINDOW and size % WINDOW_STEP == 0)
    assert input_window((10, 11, 10, 11), 2, 1, (60, 80)) == (0, 24, 0, 24)
    assert input_window((10, 11, 10, 11), 2, 1, (60, 80), 641) == (0, 32, 0, 24)  # 24 x 24 x 32 channels: native


def test_prototype_windows_hold_the_full_maps_values():
    """The window the predictor picks for the masks of small and large boxes anywhere (edges included) gives, over
    every prototype pixel they read, exactly the values of the prototypes computed on the whole feature map."""
    import math

    from yoloseg.nn.blocks import Proto

    proto = _reference_model("yolo11n-seg-coco128").model[-1].proto
    generator = torch.Generator().manual_seed(0)
    feats = torch.randn(1, proto.cv1.conv.in_channels, 60, 80, generator=generator)
    feats = feats.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        full = proto(feats)[0]
        for k in range(40):
            size = torch.rand(2, generator=generator) * (4 if k % 2 else 120) + 1
            corner = torch.rand(2, generator=generator) * torch.tensor([640.0, 480.0]) - size / 2
            box = torch.cat((corner, corner + size))[None]
            y0, y1, x0, x1 = input_window(mask_region(box, (480, 640), (120, 160)), Proto.RING, 2, (60, 80))
            window = proto(feats[:, :, y0:y1, x0:x1])[0]
            # bilinear upsampling by 4 reads the proto pixels within one of the box (a superset here)
            r0, c0 = (max(math.floor(v / 4) - 1, 0) for v in (box[0, 1].item(), box[0, 0].item()))
            r1, c1 = (math.ceil(v / 4) + 2 for v in (box[0, 3].item(), box[0, 2].item()))
            r1, c1 = min(r1, 120), min(c1, 160)
            if r1 <= r0 or c1 <= c0:
                continue  # wholly outside the image
            got = window[:, r0 - 2 * y0 : r1 - 2 * y0, c0 - 2 * x0 : c1 - 2 * x0]
            assert got.shape[1:] == (r1 - r0, c1 - c0) and torch.equal(got, full[:, r0:r1, c0:c1]), (k, box)

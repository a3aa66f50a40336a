"""Model definitions: parameter counts, state-dict layout, outputs, fusing, golden forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yoloseg.nn.graph import YOLOModel, guess_scale, unscaled_name
from yoloseg.nn.info import count_flops, count_layers

from .conftest import run_python, shared_path


def _reference_scales() -> dict[str, tuple[int, int, int, int, float]]:
    """name -> (layers, params, fused_layers, fused_params, gflops) from seg-scales.txt."""
    rows = {}
    for line in shared_path("reference", "seg-scales.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        p = line.split()
        if p[0] in "nsmlx":  # yolo11 seg rows: scale depth width max_ch layers params grads gflops fl fp fg
            rows[f"yolo11{p[0]}-seg"] = (int(p[4]), int(p[5]), int(p[8]), int(p[9]), float(p[7]))
        else:  # name layers params gflops fused_layers fused_params fused_gflops
            layers = int(p[1]) if p[1] != "-" else -1
            fused_layers = int(p[4]) if p[4] != "-" else -1
            rows[p[0]] = (layers, int(p[2]), fused_layers, int(p[5]), float(p[3]))
    return rows


def _parse_state_dict_listing(name: str) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for line in shared_path("reference", name).read_text().splitlines():
        key, shape = line.split(" ", 1)
        dims = shape.strip().strip("[]")
        out.append((key, tuple(int(d) for d in dims.split(",")) if dims else ()))
    return out


def test_scale_from_file_name():
    assert guess_scale("yolo11n-seg.yaml") == "n"
    assert guess_scale("path/to/yolov8x.yaml") == "x"
    assert guess_scale("yolo11-seg.yaml") is None
    assert unscaled_name("yolo11s-seg.yaml") == "yolo11-seg.yaml"
    assert unscaled_name("yolov8m.yaml") == "yolov8.yaml"


def test_parameter_counts_match_reference_for_all_20_models():
    rows = _reference_scales()
    assert len(rows) == 20
    for name, (layers, params, fused_layers, fused_params, _) in rows.items():
        model = YOLOModel(f"{name}.yaml")
        assert sum(p.numel() for p in model.parameters()) == params, name
        if layers > 0:
            assert count_layers(model) == layers, name
        model.eval().fuse()
        assert sum(p.numel() for p in model.parameters()) == fused_params, name
        if fused_layers > 0:
            assert count_layers(model) == fused_layers, name


@pytest.mark.parametrize(
    "name,listing", [("yolo11n-seg", "yolo11n-seg.state_dict.txt"), ("yolo11n", "yolo11n.state_dict.txt")]
)
def test_state_dict_keys_order_and_shapes(name, listing):
    expected = _parse_state_dict_listing(listing)
    got = [(k, tuple(v.shape)) for k, v in YOLOModel(f"{name}.yaml").state_dict().items()]
    assert got == expected


def test_unscaled_yaml_builds_n_with_warning(caplog):
    model = YOLOModel("yolo11-seg.yaml")
    assert model.yaml["scale"] == "n"
    assert sum(p.numel() for p in model.parameters()) == 2876848


def test_outputs_any_multiple_of_32_and_nc_override():
    model = YOLOModel("yolo11n-seg.yaml", nc=3).eval()
    x = torch.rand(2, 3, 96, 160)
    with torch.no_grad():
        y, protos = model(x)
    anchors = (12 * 20) + (6 * 10) + (3 * 5)
    assert y.shape == (2, 4 + 3 + 32, anchors)
    assert protos.shape == (2, 32, 24, 40)
    model.train()
    feats, coeffs, protos = model(x)
    assert [f.shape for f in feats] == [(2, 64 + 3, 12, 20), (2, 67, 6, 10), (2, 67, 3, 5)]
    assert coeffs.shape == (2, 32, anchors)


def test_fuse_keeps_outputs():
    torch.manual_seed(0)
    model = YOLOModel("yolo11n-seg.yaml", nc=4).eval()
    # non-trivial BatchNorm statistics so that folding is actually exercised
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y0, p0 = model(x)
        model.fuse()
        y1, p1 = model(x)
    assert model.is_fused()
    assert (y1 - y0).abs().max() <= 1e-5 * y0.abs().max()
    assert (p1 - p0).abs().max() <= 1e-5 * p0.abs().max()


def test_fusing_stays_cheap_in_a_fresh_process():
    """A process's first predict fuses its model: the fused convolutions are built without random initialisation and
    without the machinery that imports sympy (nn.utils.skip_init's to_empty did, ~0.7 s on the first call)."""
    code = (
        "import sys, torch\n"
        "from yoloseg.nn.graph import YOLOModel\n"
        "m = YOLOModel('yolo11n-seg.yaml', nc=2).eval()\n"
        "m.fuse()\n"
        "assert m.is_fused()\n"
        "print('sympy' in sys.modules, all(p.device.type == 'cpu' for p in m.parameters()))\n"
    )
    out = run_python(code)
    assert out.returncode == 0 and out.stdout.split() == ["False", "True"], out.stdout + out.stderr


def test_gflops_within_3_percent_of_reference():
    rows = _reference_scales()
    for name in ("yolo11n-seg", "yolo11n"):
        gflops = count_flops(YOLOModel(f"{name}.yaml"), 640)
        assert abs(gflops - rows[name][4]) <= 0.03 * rows[name][4], (name, gflops)


def _reference_model():
    from yoloseg.nn.official import load_official_checkpoint

    ckpt = load_official_checkpoint(shared_path("reference", "yolo11n-seg-coco128.pt"))
    model = YOLOModel(ckpt["yaml"])
    model.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    return model.eval()


def test_golden_forward_unfused_and_fused():
    golden = np.load(shared_path("reference", "golden", "forward.npz"))
    model = _reference_model()
    x = torch.from_numpy(golden["input_rgb_hwc_uint8"]).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y, protos = model(x)
        ref0, refp = torch.from_numpy(golden["output0"]), torch.from_numpy(golden["protos"])
        assert (y - ref0).abs().max() <= 1e-4 * ref0.abs().max()
        assert (protos - refp).abs().max() <= 1e-4 * refp.abs().max()
        model.fuse()
        y_fused, _ = model(x)
        ref_fused = torch.from_numpy(golden["output0_fused"])
        assert (y_fused - ref_fused).abs().max() <= 1e-4 * ref_fused.abs().max()


def test_decoding_a_subset_of_anchors_gives_the_whole_decodings_values():
    """decode_columns on any subset of anchors (any count, any batch, 1 or 2 threads) gives bit for bit the boxes
    of decoding every anchor, and the scores to an ulp or two: the CPU predictor decodes only the anchors that may
    pass conf. (A 1×1 convolution over a dim-1 softmax, as the DFL was first written, rounds the boxes differently
    with the number of columns. On AVX-512 PyTorch's sigmoid rounds the scalar tail of a tensor, its last few
    elements, apart from its vectorised body: a score can land in either.)"""
    from yoloseg.nn.heads import Segment

    gen = torch.Generator().manual_seed(0)
    head = Segment(80, 32, 64, ch=(64, 128, 256)).eval()
    head.stride = torch.tensor([8.0, 16.0, 32.0])
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            for (h, w), batch, scale in (((480, 640), 1, 5.0), ((128, 96), 3, 20.0), ((256, 1536), 2, 1.0)):
                shape = [(batch, head.no, h // s, w // s) for s in (8, 16, 32)]
                feats = [
                    (torch.randn(s, generator=gen) * scale).contiguous(memory_format=torch.channels_last) for s in shape
                ]
                with torch.inference_mode():
                    full = head.decode(feats)
                    n = full.shape[2]
                    x = torch.cat([f.reshape(batch, head.no, -1) for f in feats], 2)
                    anchors, strides = head.anchor_points(feats)
                    for k in sorted({1, 7, 9, 100, 321, n // 2, n}):
                        idx = torch.stack([torch.randperm(n, generator=gen)[:k].sort().values for _ in range(batch)])
                        cols = torch.gather(x, 2, idx[:, None].expand(-1, head.no, -1))
                        y = head.decode_columns(cols, anchors[:, idx].transpose(0, 1), strides[:, idx].transpose(0, 1))
                        expected = torch.gather(full, 2, idx[:, None].expand(-1, full.shape[1], -1))
                        assert torch.equal(y[:, :4], expected[:, :4])
                        torch.testing.assert_close(y[:, 4:], expected[:, 4:], rtol=1e-6, atol=0)
    finally:
        torch.set_num_threads(threads)

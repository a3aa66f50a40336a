"""Two-process training through torch.distributed's own launcher, gloo backend on the CPU."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

from yoloseg.data.synthetic import generate_shapes
from yoloseg.engine.distributed import _free_port


def test_two_process_gloo_training(tmp_path):
    data = generate_shapes(tmp_path / "tiny", n_train=8, n_val=4, imgsz=64, seed=4)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
        "-m", "yoloseg", "segment", "train", f"data={data}", "model=yolo11n-seg.yaml", "epochs=1", "imgsz=64",
        "batch=4", "workers=0", "device=cpu", "plots=False", f"project={tmp_path / 'runs'}", "name=ddp",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    with open(run / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1"]
    assert (run / "weights" / "best.pt").is_file()
    assert not (tmp_path / "runs" / "ddp2").exists()  # only rank 0 makes a run folder

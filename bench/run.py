"""Run every benchmark and write bench/results/<date>.json (also `python -m bench`).

python bench/run.py [--quick] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "compute_floor": ["compute_floor.py"],
    "predict": ["predict_latency.py"],
    "val": ["val_time.py"],
    "loader": ["loader_throughput.py"],
    "train_epoch": ["train_epoch.py"],
    "stream_memory": ["stream_memory.py"],
    "openvino_precision": ["openvino_precision.py"],
    "malloc_ab": ["malloc_ab.py"],
    "incumbent_config": ["incumbent_config.py"],
}


def last_json(text: str) -> dict:
    """The last JSON object printed (one line or indented over several)."""
    decoder, found, i = json.JSONDecoder(), {}, 0
    while (i := text.find("{", i)) != -1:
        try:
            found, end = decoder.raw_decode(text, i)
            i = end
        except json.JSONDecodeError:
            i += 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=list(BENCHES))
    args = parser.parse_args()
    results = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine()}
    for name in args.only:
        cmd = [sys.executable, str(HERE / BENCHES[name][0])]
        if args.threads and name not in ("loader", "stream_memory"):
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        results[name] = last_json(out.stdout) if out.returncode == 0 else {"error": out.stderr[-2000:]}
        print(name, json.dumps(results[name]), flush=True)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"{results['date']}.json"
    if out.exists():  # a run of some benchmarks (--only) updates the day's file instead of replacing it
        results = {**json.loads(out.read_text()), **results}
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""benchmarks/gpu_suite.py's dry run: it names every part it would run on a GPU, skips each with a clear line, and
the checks a CPU can do pass (the main job's flags, the notebooks' DEVICE line, kernels and bench at a tiny size)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("kernels", "bench float32 n 32768", "bench bfloat16 n 32768", "main job", "notebook 02", "notebook 08",
         "bench float32 n 131072", "bench bfloat16 n 131072")


def test_gpu_suite_dry_run_names_and_skips_every_part(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--dry-run", "--out",
                        str(tmp_path)], env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for part in PARTS:
        assert f"[{part}] limit" in r.stdout and f"[{part}] skipped: dry run" in r.stdout, part
    assert "saelab train --out" in r.stdout and "--harvest.compute_dtype bfloat16" in r.stdout
    assert "TrainConfig has" in r.stdout  # says whether --train.autocast / --train.compile are passed
    for line in ("flags of `saelab harvest` parse: ok", "flags of `saelab train` parse: ok",
                 "[kernels on CPU (dry run)] ok", "[bench on CPU, tiny (dry run)] ok"):
        assert line in r.stdout, line
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dry_run"] and {p["part"] for p in summary["parts"]} >= set(PARTS)
    assert all(row["ok"] for row in json.loads((tmp_path / "kernels_cpu.json").read_text())["kernels"])
    assert (tmp_path / "summary.md").read_text().startswith("| part | status |")

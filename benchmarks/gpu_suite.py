"""The GPU suite: every CUDA check and GPU measurement of issue 41, as one command with a time limit per part, that
finishes within `--budget` seconds (default 450: under 8 minutes on one H200) and writes everything to `--out`.

    python benchmarks/gpu_suite.py --out runs/gpu-suite          # on a machine with CUDA
    python benchmarks/gpu_suite.py --dry-run --out /tmp/suite    # anywhere: what would run; the CPU-cheap pieces

Parts, in order (each a subprocess with its own limit, so one hang cannot eat the budget; a part whose limit no
longer fits in what is left of the budget is skipped and says so):
  kernels      the sparse kernels against the dense reference for every family, float32 and bfloat16, values and
               gradients (benchmarks/gpu_check.py; its tolerances), and the tiny GPT-2 forward on CUDA
  bench        bench_sae's table at d 768, n 32768, k 32, batch 4096 in float32 and bfloat16: saelab's steps, the
               dense reference, eai-sparsify (its Triton kernels), SAE Lens, against one encoder product
  main job     `saelab harvest` (SmolLM2, bfloat16, 2M tokens; tokens/s) then `saelab train` on that cache (steps/s)
  notebook 02, notebook 08   in fast mode (SAELAB_FAST=1) with DEVICE = "cuda"
  bench 131k   the bench table at n 131072 (float32, bfloat16), when the budget still allows
Out: one log per part, kernels.json, bench_*.json, main_job/, notebooks/, summary.json and summary.md.

A dry run (`--dry-run`, or no CUDA) prints each part's command and skips it ("skipped: ..."), then checks what a CPU
can: the main job's flags parse, notebooks 02 and 08 have the DEVICE line the suite sets, the kernel check (float32)
and the bench table at a tiny size on the CPU; it exits 0 when those pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
OPTIONAL_TRAIN_FLAGS = {"autocast": ("bf16", "bfloat16", "true"), "compile": ("true",)}
"""TrainConfig fields the main job turns on when this saelab has them (feature-detected, not assumed), with the values
tried in order: the first that the field's type names (a bool field: 'true')."""
HARVEST_TOKENS = 2_000_000
CPU_LIMIT_S = 600
"""The dry run's CPU pieces' limit: seconds on an idle 2-core machine, minutes on a loaded one (CI)."""
BENCH_SHAPE = ["--d", "768", "--k", "32", "--batch", "4096", "--repeats", "5"]


@dataclass
class Part:
    """One part of the suite: its commands (run in order), its time limit, and whether it needs CUDA."""

    name: str
    commands: list[list[str]]
    limit_s: int
    cuda: bool = True
    env: dict = field(default_factory=dict)
    optional: bool = False
    """Run only when the budget still has its limit (the 131072-latent bench)."""


def optional_train_flags() -> tuple[list[str], str]:
    """(the flags, a line saying which TrainConfig fields were found) for autocast and compile."""
    from saelab.training.config import TrainConfig

    types = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    flags = []
    for name, values in OPTIONAL_TRAIN_FLAGS.items():
        value = next((v for v in values if f'"{v}"' in types.get(name, "") or f"'{v}'" in types.get(name, "")
                      or (v == "true" and types.get(name) == "bool")), None)
        flags += [f"--train.{name}", value] if value else []
    have = types.keys()
    found = [n for n in OPTIONAL_TRAIN_FLAGS if n in have]
    missing = [n for n in OPTIONAL_TRAIN_FLAGS if n not in have]
    line = (f"TrainConfig has {', '.join(found) or 'neither autocast nor compile'}"
            + (f"; without {', '.join(missing)} (not passed)" if missing else "") + f": main job flags {flags or '[]'}")
    return flags, line


def parts(out: Path) -> list[Part]:
    train_flags, _ = optional_train_flags()
    bench = str(ROOT / "benchmarks" / "bench_sae.py")
    harvest = ["--device", "cuda", "--harvest.compute_dtype", "bfloat16", "--harvest.max_tokens", str(HARVEST_TOKENS)]
    suite = str(Path(__file__).resolve())
    return [
        Part("kernels", [[PY, str(ROOT / "benchmarks" / "gpu_check.py"), "--skip-bench", "--json",
                          str(out / "kernels.json")]], 60),
        Part("bench float32 n 32768", [[PY, bench, "--device", "cuda", "--n", "32768", *BENCH_SHAPE, "--dtype",
                                        "float32", "--json", str(out / "bench_32k_float32.json")]], 60),
        Part("bench bfloat16 n 32768", [[PY, bench, "--device", "cuda", "--n", "32768", *BENCH_SHAPE, "--dtype",
                                         "bfloat16", "--json", str(out / "bench_32k_bfloat16.json")]], 60),
        Part("main job", [
            [PY, "-m", "saelab", "harvest", "--device", "cuda", "--compute_dtype", "bfloat16", "--max_tokens",
             str(HARVEST_TOKENS)],
            [PY, "-m", "saelab", "train", "--out", str(out / "main_job" / "run"), *harvest, "--train.epochs", "4",
             "--train.progress", "false", *train_flags]], 150, env={"SAELAB_FAST": ""}),
        Part("notebook 02", [[PY, suite, "--run-notebook", "02", "--out", str(out / "notebooks")]], 60,
             env={"SAELAB_FAST": "1", "SAELAB_SOLUTIONS": "1"}),
        Part("notebook 08", [[PY, suite, "--run-notebook", "08", "--out", str(out / "notebooks")]], 60,
             env={"SAELAB_FAST": "1", "SAELAB_SOLUTIONS": "1"}),
        Part("bench float32 n 131072", [[PY, bench, "--device", "cuda", "--n", "131072", *BENCH_SHAPE, "--dtype",
                                         "float32", "--skip-dense", "--json", str(out / "bench_131k_float32.json")]],
             60, optional=True),
        Part("bench bfloat16 n 131072", [[PY, bench, "--device", "cuda", "--n", "131072", *BENCH_SHAPE, "--dtype",
                                          "bfloat16", "--skip-dense", "--json",
                                          str(out / "bench_131k_bfloat16.json")]], 60, optional=True),
    ]


def run_part(part: Part, limit_s: float, log: Path) -> dict:
    """Run the part's commands in order under one time limit (its whole process group killed at the limit)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **part.env}
    t0, rc, status = time.perf_counter(), 0, "ok"
    walls = []
    with open(log, "w") as f:
        for cmd in part.commands:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            c0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=max(1.0, limit_s - (time.perf_counter() - t0)))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc, status = None, f"timed out after {limit_s:.0f} s"
            walls.append(round(time.perf_counter() - c0, 2))
            if rc != 0:
                status = status if rc is None else f"failed (exit {rc})"
                break
    return {"part": part.name, "status": status, "seconds": round(time.perf_counter() - t0, 1),
            "command_seconds": walls, "log": log.name}


def main_job_figures(out: Path, harvest_seconds: float | None) -> dict:
    """Harvest tokens/s (the harvest command's wall time, model load included) and train steps/s (log.jsonl)."""
    figures = {}
    run = out / "main_job" / "run"
    log = run / "log.jsonl"
    if harvest_seconds:
        figures["harvest_tokens_per_s_incl_load"] = round(HARVEST_TOKENS / harvest_seconds)
    if log.exists():
        recs = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        steps = [r for r in recs if "seconds" in r]
        if steps and steps[-1]["seconds"]:
            figures["train_steps"] = steps[-1]["step"]
            figures["train_steps_per_s"] = round(steps[-1]["step"] / steps[-1]["seconds"], 2)
    metrics = run / "report" / "metrics.json"
    if metrics.exists():
        figures["test_nmse"] = json.loads(metrics.read_text()).get("final", {}).get("nmse")
    return figures


def device_cells(number: str):
    """(notebook `number`'s path, the notebook, its code cells that set DEVICE = "auto")."""
    import nbformat

    path = next((ROOT / "notebooks").glob(f"{number}_*.ipynb"))
    nb = nbformat.read(path, as_version=4)
    return path, nb, [c for c in nb.cells if c.cell_type == "code" and 'DEVICE = "auto"' in c.source]


def dry_run_checks(out: Path) -> list[dict]:
    """What a CPU can check of the suite: the main job's flags parse, the notebooks have the DEVICE line the suite
    sets, the kernel check (float32) and the bench's --dtype/--json at a tiny size."""
    from saelab.cli import build_parser

    results = []
    for part in parts(out):
        if part.name == "main job":
            for cmd in part.commands:
                try:
                    build_parser().parse_args(cmd[3:])
                    status = "ok"
                except SystemExit:
                    status = "failed (the flags do not parse)"
                print(f"[main job] flags of `saelab {cmd[3]}` parse: {status}", flush=True)
                results.append({"part": f"main job flags ({cmd[3]}, dry run)", "status": status})
        if part.name.startswith("notebook"):
            path, _, cells = device_cells(part.name.split()[-1])
            status = "ok" if cells else 'failed (no DEVICE = "auto" line)'
            print(f"[{part.name}] {path.name} sets DEVICE in {len(cells)} cell(s): {status}", flush=True)
            results.append({"part": f"{part.name} DEVICE line (dry run)", "status": status})
    check = str(ROOT / "benchmarks" / "gpu_check.py")
    bench = str(ROOT / "benchmarks" / "bench_sae.py")
    for part in (Part("kernels on CPU (dry run)", [[PY, check, "--device", "cpu", "--dtypes", "float32",
                                                    "--skip-bench", "--skip-forward", "--json",
                                                    str(out / "kernels_cpu.json")]], CPU_LIMIT_S, cuda=False),
                 Part("bench on CPU, tiny (dry run)", [[PY, bench, "--device", "cpu", "--d", "64", "--n", "1024",
                                                        "--k", "8", "--batch", "256", "--repeats", "1",
                                                        "--skip-dense", "--json", str(out / "bench_tiny_cpu.json")]],
                      CPU_LIMIT_S, cuda=False)):
        r = run_part(part, part.limit_s, out / f"{part.name.split(' (')[0].replace(' ', '_').replace(',', '')}.log")
        print(f"[{part.name}] {r['status']} in {r['seconds']} s", flush=True)
        results.append(r)
    return results


def run_notebook(number: str, out: Path, cell_timeout: int = 600) -> int:
    """Execute notebook `number` with DEVICE = "cuda" (a copy; notebooks/ is untouched) into `out`."""
    import nbformat
    from nbclient import NotebookClient

    path, nb, cells = device_cells(number)
    if not cells:
        print(f"{path.name} has no line DEVICE = \"auto\" to set to cuda")
        return 2
    for c in cells:
        c.source = c.source.replace('DEVICE = "auto"', 'DEVICE = "cuda"', 1)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:  # the executed copy, with the failing cell's error when one failed
        nbformat.write(nb, out / path.name)
    print(f"{path.name} with DEVICE = 'cuda': {time.perf_counter() - t0:.1f} s")
    return 0


def write_summary(out: Path, results: list[dict], extra: dict) -> None:
    (out / "summary.json").write_text(json.dumps({**extra, "parts": results}, indent=1))
    lines = ["| part | status | seconds |", "|---|---|---|"]
    lines += [f"| {r['part']} | {r['status']} | {r.get('seconds', '')} |" for r in results]
    for name in sorted(extra.get("main_job", {})):
        lines.append(f"| main job: {name} | {extra['main_job'][name]} | |")
    for kernels in sorted(out.glob("kernels*.json")):
        rows = json.loads(kernels.read_text())["kernels"]
        lines += ["", f"**{kernels.stem}** (sparse kernels against the dense reference; worst relative difference "
                      "over the loss and every gradient):", "", "| family | dtype | worst | tolerance | result |",
                  "|---|---|---|---|---|"]
        for r in rows:
            worst = "-" if r["worst_relative"] is None else f"{r['worst_relative']:.2e}"
            lines.append(f"| {r['family']} | {r['dtype']} | {worst} | {r['tolerance']:g} | "
                         f"{'ok' if r['ok'] else r.get('error', 'FAIL')} |")
    for bench in sorted(out.glob("bench_*.json")):
        table = json.loads(bench.read_text())
        lines += ["", f"**{bench.stem}** ({table['dtype']}, d {table['shape']['d']} n {table['shape']['n']} "
                      f"k {table['shape']['k']} batch {table['shape']['batch']}; x one encoder product):", "",
                  "| step | seconds | x floor |", "|---|---|---|"]
        lines += [f"| {name} | {row['seconds']:.4f} | {row['x_floor_median'] or float('nan'):.2f} |"
                  for name, row in table["steps"].items() if row["seconds"] == row["seconds"]]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "runs" / "gpu-suite"), help="folder for every result")
    ap.add_argument("--dry-run", action="store_true", help="print what would run, skip the CUDA parts (automatic "
                    "without CUDA), run the kernel check tiny on the CPU")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for the whole suite")
    ap.add_argument("--run-notebook", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.run_notebook:
        return run_notebook(args.run_notebook, out)
    import torch

    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    dry = args.dry_run or not cuda
    _, flags_line = optional_train_flags()
    print(f"gpu suite: torch {torch.__version__}, {torch.cuda.get_device_name() if cuda else 'no CUDA'}; "
          f"budget {args.budget:.0f} s; out {out}" + ("; DRY RUN" if dry else ""), flush=True)
    print(flags_line, flush=True)
    start, results, harvest_seconds = time.perf_counter(), [], None
    for part in parts(out):
        left = args.budget - (time.perf_counter() - start)
        print(f"[{part.name}] limit {part.limit_s} s: " + " && ".join(" ".join(c) for c in part.commands), flush=True)
        if dry and part.cuda:
            print(f"[{part.name}] skipped: {'dry run' if args.dry_run else 'no CUDA'}", flush=True)
            results.append({"part": part.name, "status": "skipped (dry run)"})
            continue
        if part.limit_s > left and (part.optional or left < 30):
            print(f"[{part.name}] skipped: {left:.0f} s of the budget left", flush=True)
            results.append({"part": part.name, "status": f"skipped ({left:.0f} s of the budget left)"})
            continue
        r = run_part(part, min(part.limit_s, left), out / f"{part.name.replace(' ', '_')}.log")
        if part.name == "main job" and r["command_seconds"]:
            harvest_seconds = r["command_seconds"][0]
        print(f"[{part.name}] {r['status']} in {r['seconds']} s", flush=True)
        results.append(r)
    if dry:
        results += dry_run_checks(out)
    extra = {"dry_run": dry, "torch": torch.__version__, "device": torch.cuda.get_device_name() if cuda else None,
             "budget_s": args.budget, "seconds": round(time.perf_counter() - start, 1), "train_flags": flags_line,
             "main_job": main_job_figures(out, harvest_seconds)}
    write_summary(out, results, extra)
    print(f"gpu suite: {extra['seconds']} s; summary in {out / 'summary.md'}", flush=True)
    ran = [r for r in results if not r["status"].startswith("skipped")]
    return 0 if all(r["status"] == "ok" for r in ran) else 1


if __name__ == "__main__":
    sys.exit(main())

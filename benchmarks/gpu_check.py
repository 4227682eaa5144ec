"""CUDA checks and GPU timings, as one script for a machine with a GPU (`benchmarks/gpu_suite.py` runs it as its
first part).

1. the sparse kernels equal the dense autograd reference (values and gradients) for every registered family's
   examples (`Family.examples`: TopK, Multi-TopK, BatchTopK, Matryoshka, JumpReLU, ReLU, transcoders), in each
   `--dtypes` (both paths in that dtype; tolerance on the largest difference over the tensor's largest magnitude:
   1e-4 in float32, 3e-2 in bfloat16);
2. the tiny GPT-2's truncated forward on CUDA (bf16 and fp32) matches the CPU fp32 one;
3. bench_sae's table on CUDA (train step vs one encoder product, dense reference, peers when installed).

Usage: python benchmarks/gpu_check.py [--skip-bench] [--skip-forward] [--device cpu --dtypes float32] [--json F]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saelab.sae.config import SAEConfig  # noqa: E402
from saelab.sae.families import FAMILIES  # noqa: E402
from saelab.sae.model import SAE  # noqa: E402

TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2}
"""Largest |sparse - dense| over the largest |dense|, per tensor (the loss and each parameter's gradient)."""


def check_kernels(device, dtype: str = "float32") -> list[dict]:
    """One row per family example: the worst relative difference of the sparse path from the dense reference."""
    rows = []
    examples = {name: changes for fam in FAMILIES.values() for name, changes in fam.examples().items()}
    for name, changes in examples.items():
        torch.manual_seed(0)
        d = 64
        width = 2 * d if changes.get("activation") == "transcoder" else d
        x = (torch.randn(512, width) * 3 + 1).to(device, getattr(torch, dtype))
        try:
            worst = _worst_difference(name, changes, x, d, device, dtype)
        except Exception as e:  # noqa: BLE001 - one family's failure is a row, not the end of the check
            rows.append({"family": name, "dtype": dtype, "device": str(device), "worst_relative": None,
                         "tolerance": TOLERANCE[dtype], "ok": False, "error": f"{e.__class__.__name__}: {e}"[:300]})
            print(f"kernels {name} {dtype}: FAIL ({rows[-1]['error']})", flush=True)
            continue
        ok = worst < TOLERANCE[dtype]
        rows.append({"family": name, "dtype": dtype, "device": str(device), "worst_relative": worst,
                     "tolerance": TOLERANCE[dtype], "ok": ok})
        print(f"kernels {name} {dtype}: max relative diff sparse vs dense {worst:.2e} (loss and every parameter's "
              f"gradient; tol {TOLERANCE[dtype]:g}) -> {'OK' if ok else 'FAIL'}", flush=True)
    return rows


def _worst_difference(name: str, changes: dict, x, d: int, device, dtype: str) -> float:
    """The largest difference over the loss and every parameter's gradient, each over its largest magnitude."""
    grads = []
    for kernel in ("sparse", "dense"):
        sae = SAE(SAEConfig(d_in=d, n_latents=1024, k=8, k_aux=32, kernel=kernel, dtype=dtype, **changes),
                  seed=1, device=device)
        if name == "jumprelu":  # thresholds high enough that the codes are sparse (the sparse path runs)
            with torch.no_grad():
                pre = sae.pre_acts(sae.preprocess(sae.split(x)[0])[0])
                sae.threshold.fill_(float(pre.flatten().topk(8 * len(x)).values[-1]))
        dead = torch.zeros(1024, dtype=torch.bool, device=device)
        dead[::3] = True
        out = sae(x, dead_mask_N=dead)
        out.losses["total"].backward()
        grads.append([out.losses["total"].detach()] + [p.grad for p in sae.parameters()])
    return max(float((a.float() - b.float()).abs().max()) / max(float(b.float().abs().max()), 1e-12)
               for a, b in zip(*grads))


def check_tiny_forward(device) -> list[dict]:
    from saelab.lm.models import load_lm
    from saelab.lm.sites import run_to_site

    ids = torch.randint(1, 250, (4, 64))
    ref = run_to_site(load_lm("tiny-gpt2"), ids, "resid_post", 2).float()
    rows = []
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 5e-2)):
        lm = load_lm("tiny-gpt2", device=device, dtype=dtype)
        got = run_to_site(lm, ids, "resid_post", 2).float().cpu()
        rel = float((got - ref).norm() / ref.norm())
        ok = rel < tol
        rows.append({"check": f"tiny GPT-2 forward {dtype}", "relative": rel, "tolerance": tol, "ok": ok})
        print(f"tiny GPT-2 truncated forward on {device} {dtype}: relative error vs CPU fp32 {rel:.1e} "
              f"(tol {tol}) -> {'OK' if ok else 'FAIL'}", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--skip-forward", action="store_true", help="leave out the tiny GPT-2 check")
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run of the kernel checks")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    ap.add_argument("--json", default=None, help="write the checks' rows here")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device; nothing to check")
        return 1
    device = torch.device(args.device)
    print(f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'} torch {torch.__version__}")
    kernels = [row for dtype in args.dtypes.split(",") for row in check_kernels(device, dtype)]
    if args.json:  # written now too, so a failing forward check below leaves the kernels' rows
        Path(args.json).write_text(json.dumps({"kernels": kernels, "ok": all(r["ok"] for r in kernels)}, indent=1))
    forward = [] if args.skip_forward else check_tiny_forward(device)
    ok = all(r["ok"] for r in kernels + forward)
    if args.json:
        Path(args.json).write_text(json.dumps({"kernels": kernels, "forward": forward, "ok": ok}, indent=1))
    if not args.skip_bench:
        bench = Path(__file__).with_name("bench_sae.py")
        for shape in (["--d", "576", "--n", "16384", "--k", "32", "--batch", "4096"],
                      ["--d", "768", "--n", "131072", "--k", "32", "--batch", "16384"]):
            subprocess.run([sys.executable, str(bench), "--device", "cuda", "--repeats", "10", *shape], check=False)
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

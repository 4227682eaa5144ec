"""CUDA checks and GPU timings, as one script for a machine with a GPU.

1. the sparse kernels equal the dense autograd reference on CUDA (values and gradients; TopK,
   Multi-TopK and AuxK), with the tolerance printed;
2. the tiny GPT-2's truncated forward on CUDA (bf16 and fp32) matches the CPU fp32 one;
3. bench_sae's table on CUDA (train step vs one encoder product, dense reference, peers when installed).

Usage: python benchmarks/gpu_check.py [--skip-bench]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saelab.sae.config import SAEConfig  # noqa: E402
from saelab.sae.model import SAE


def check_kernels(device) -> bool:
    ok = True
    torch.manual_seed(0)
    x = (torch.randn(512, 64) * 3 + 1).to(device)
    families = {"topk": {}, "multi_topk": {"multi_topk": True}, "batchtopk": {"activation": "batchtopk"},
                "matryoshka": {"activation": "batchtopk", "matryoshka_widths": [64, 192, 448]},
                "jumprelu": {"activation": "jumprelu", "l0_coef": 0.01, "jumprelu_bandwidth": 0.05}}
    for multi, family in families.items():
        grads = []
        for kernel in ("sparse", "dense"):
            sae = SAE(SAEConfig(d_in=64, n_latents=1024, k=8, k_aux=32, kernel=kernel, **family),
                      seed=1, device=device)
            if "l0_coef" in family:  # thresholds high enough that the codes are sparse (the sparse path runs)
                with torch.no_grad():
                    sae.threshold.fill_(float(sae.pre_acts(sae.preprocess(x)[0]).flatten().topk(8 * len(x)).values[-1]))
            dead = torch.zeros(1024, dtype=torch.bool, device=device)
            dead[::3] = True
            out = sae(x, dead_mask_N=dead)
            out.losses["total"].backward()
            grads.append([out.losses["total"].detach()] + [p.grad for p in sae.parameters()])
        diffs = [float((a - b).abs().max()) for a, b in zip(*grads)]
        scale = [float(b.abs().max()) for b in grads[1]]
        worst = max(d / max(s, 1e-12) for d, s in zip(diffs, scale))
        good = worst < 1e-4
        ok &= good
        print(f"kernels {multi}: max relative diff sparse vs dense {worst:.2e} "
              f"(loss and every parameter's gradient) -> {'OK' if good else 'FAIL'}")
    return ok


def check_tiny_forward(device) -> bool:
    from saelab.lm.models import load_lm
    from saelab.lm.sites import run_to_site

    ids = torch.randint(1, 250, (4, 64))
    ref = run_to_site(load_lm("tiny-gpt2"), ids, "resid_post", 2).float()
    ok = True
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 5e-2)):
        lm = load_lm("tiny-gpt2", device=device, dtype=dtype)
        got = run_to_site(lm, ids, "resid_post", 2).float().cpu()
        rel = float((got - ref).norm() / ref.norm())
        good = rel < tol
        ok &= good
        print(f"tiny GPT-2 truncated forward on {device} {dtype}: relative error vs CPU fp32 {rel:.1e} "
              f"(tol {tol}) -> {'OK' if good else 'FAIL'}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--skip-bench", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device; nothing to check")
        return 1
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}")
    ok = check_kernels(device) & check_tiny_forward(device)
    if not args.skip_bench:
        bench = Path(__file__).with_name("bench_sae.py")
        for shape in (["--d", "576", "--n", "16384", "--k", "32", "--batch", "4096"],
                      ["--d", "768", "--n", "131072", "--k", "32", "--batch", "16384"]):
            subprocess.run([sys.executable, str(bench), "--device", "cuda", "--repeats", "10", *shape], check=False)
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

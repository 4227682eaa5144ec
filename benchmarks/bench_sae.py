"""One TopK SAE train step vs one dense encoder product, in the same run (issue: SAE core).

Prints the time of: one x @ W_enc product of the step's shape (the floor), saelab's full train
step (forward, backward, Adam, decoder projection and renorm), a dense-autograd reference step,
and, when installed, SAE Lens's and EleutherAI sparsify's TopK steps; each as a ratio to the
product. Also peak RSS. Usage: python benchmarks/bench_sae.py [--d 576 --n 16384 --k 32 --batch 4096]
[--dtype bfloat16: every step's weights and batch in bf16, peers' too] [--json FILE: the table as JSON]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from saelab.sae.config import SAEConfig
from saelab.sae.families.matryoshka import parse_widths
from saelab.sae.model import SAE


def timeit(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def saelab_step(x, cfg, device, aux_dead_fraction=0.0, jumprelu_at_k: bool = False):
    sae = SAE(cfg, device=device)
    if jumprelu_at_k:  # a trained JumpReLU's regime: thresholds that keep about k latents a token on this batch
        with torch.no_grad():
            pre = sae.pre_acts(sae.preprocess(x)[0])
            sae.threshold.fill_(float(pre.flatten().topk(cfg.k * len(x)).values[-1]))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4, eps=6.25e-10, fused=True)
    dead = None
    if aux_dead_fraction:
        dead = torch.rand(cfg.n_latents, device=device) < aux_dead_fraction

    def step():
        with record_function("step: forward"):
            out = sae(x, dead_mask_N=dead)
        with record_function("step: backward"):
            out.losses["total"].backward()
        with record_function("step: decoder grad projection"):
            sae.project_decoder_grad_()
        with record_function("step: Adam"):
            opt.step()
            opt.zero_grad(set_to_none=True)
        with record_function("step: decoder renorm"):
            sae.normalize_decoder_()
    return step


def profile(name: str, step, floor_fn, steps: int = 3, top: int = 14) -> None:
    """torch.profiler over `steps` steps: the phases, then the operators by self time, in units of the floor
    product timed right before and right after the profiled window (so a slow phase of the machine scales both)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step()
    before = timeit(floor_fn, 1, warmup=0)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    floor = (before + timeit(floor_fn, 1, warmup=0)) / 2
    events = prof.key_averages()
    unit = floor * steps * 1e6  # profiler times are in microseconds
    phases = [e for e in events if e.key.startswith("step: ")]
    total = sum(e.cpu_time_total for e in phases) / unit
    print(f"\nprofile of {name} ({steps} steps; {total:.2f} x floor with the profiler on), per step in units of "
          f"the floor:")
    for e in sorted(phases, key=lambda e: -e.cpu_time_total):
        print(f"  {e.key:38s} {e.cpu_time_total / unit:6.3f}")
    ops = sorted((e for e in events if not e.key.startswith("step: ")), key=lambda e: -e.self_cpu_time_total)
    print(f"  {'operator (self time)':38s} {'x floor':>6s} {'calls':>6s}")
    for e in ops[:top]:
        print(f"  {e.key[:38]:38s} {e.self_cpu_time_total / unit:6.3f} {e.count // steps:6d}")


def dense_reference_step(x, cfg, device):
    """Plain autograd TopK SAE: dense latents, dense decoder product, dense backward."""
    like = {"device": device, "dtype": x.dtype}
    W_enc = torch.nn.Parameter(torch.randn(cfg.n_latents, cfg.d_in, **like) / cfg.d_in**0.5)
    W_dec = torch.nn.Parameter(W_enc.detach().clone())
    b_enc = torch.nn.Parameter(torch.zeros(cfg.n_latents, **like))
    b_pre = torch.nn.Parameter(torch.zeros(cfg.d_in, **like))
    params = [W_enc, W_dec, b_enc, b_pre]
    opt = torch.optim.Adam(params, lr=1e-4, fused=True)

    def step():
        pre = F.linear(x - b_pre, W_enc, b_enc)
        top = pre.topk(cfg.k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        recon = z @ W_dec + b_pre
        loss = (recon - x).pow(2).sum(-1).mean() / (x - x.mean(0)).pow(2).sum(-1).mean()
        loss.backward()
        with torch.no_grad():
            g = W_dec.grad
            g -= (g * W_dec).sum(-1, keepdim=True) * W_dec
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            W_dec.div_(W_dec.norm(dim=-1, keepdim=True))
    return step


def sparsify_step(x, cfg, device):
    from sparsify import SaeConfig, SparseCoder  # optional extra

    sae = SparseCoder(cfg.d_in, SaeConfig(num_latents=cfg.n_latents, k=cfg.k), device=device, dtype=x.dtype)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)

    def step():
        out = sae(x)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sae.set_decoder_norm_to_unit_norm()
    return step


def saelens_step(x, cfg, device):
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig  # optional extra

    scfg = TopKTrainingSAEConfig(d_in=cfg.d_in, d_sae=cfg.n_latents, k=cfg.k, device=str(device), dtype=cfg.dtype)
    sae = TopKTrainingSAE(scfg)
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    from sae_lens.saes.sae import TrainStepInput

    def step():
        out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None,
                                                       n_training_steps=0, is_logging_step=False))
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip-dense", action="store_true")
    ap.add_argument("--profile", action="store_true", help="also print a torch.profiler breakdown of saelab's steps")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="the weights and batch of every step (saelab's, the reference's, the peers')")
    ap.add_argument("--json", default=None, help="also write the table here")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.d, device=device).to(getattr(torch, args.dtype))
    print(f"device={device} threads={torch.get_num_threads()} d={args.d} n={args.n} k={args.k} "
          f"batch={args.batch} dtype={args.dtype} torch={torch.__version__}")

    def config(**changes) -> SAEConfig:  # every step's SAE in --dtype
        return SAEConfig(dtype=args.dtype, **changes)

    cfg = config(d_in=args.d, n_latents=args.n, k=args.k)
    W = torch.randn(args.n, args.d, device=device).to(x.dtype)
    steps = {"x @ W_enc (floor)": lambda: F.linear(x, W),
             "saelab step (TopK)": saelab_step(x, cfg, device),
             "saelab step (TopK + AuxK, 10% dead)": saelab_step(x, cfg, device, 0.1),
             "saelab step (Multi-TopK)": saelab_step(
                 x, config(d_in=args.d, n_latents=args.n, k=args.k, multi_topk=True), device),
             "saelab step (BatchTopK)": saelab_step(
                 x, config(d_in=args.d, n_latents=args.n, k=args.k, activation="batchtopk"), device),
             "saelab step (Matryoshka BatchTopK, 5 prefixes)": saelab_step(
                 x, config(d_in=args.d, n_latents=args.n, k=args.k, activation="batchtopk",
                              matryoshka_widths=parse_widths("doubling:5", args.n)), device),
             "saelab step (JumpReLU, L0 ~ k)": saelab_step(
                 x, config(d_in=args.d, n_latents=args.n, k=args.k, activation="jumprelu", k_aux=0,
                              l0_coef=1e-3), device, jumprelu_at_k=True),
             "saelab step (JumpReLU at init, dense)": saelab_step(
                 x, config(d_in=args.d, n_latents=args.n, k=args.k, activation="jumprelu", k_aux=0,
                              l0_coef=1e-3), device)}
    if not args.skip_dense:
        steps["dense autograd reference"] = dense_reference_step(x, cfg, device)
    for name, make in (("eai-sparsify", sparsify_step), ("sae-lens", saelens_step)):
        try:
            steps[name] = make(x, cfg, device)
        except ImportError:
            steps[f"{name} (not installed)"] = None
        except Exception as e:  # noqa: BLE001 - a peer's API change must not hide our numbers
            steps[f"{name} (failed: {e.__class__.__name__}: {str(e)[:60]})"] = None
    # Interleaved rounds: every candidate is timed once per round, so machine noise hits all alike.
    times = {name: [] for name in steps}
    for name, fn in list(steps.items()):
        if fn is not None:
            try:
                fn()  # warm-up
            except Exception as e:  # noqa: BLE001 - a step that cannot run at this shape or dtype is a row
                print(f"{name}: failed: {e.__class__.__name__}: {str(e)[:160]}")
                steps[name] = None
    for _ in range(args.repeats):
        for name, fn in steps.items():
            if fn is not None:
                times[name].append(timeit(fn, 1, warmup=0))
    rows = [(name, statistics.median(t) if t else float("nan")) for name, t in times.items()]
    base = rows[0][1]
    floor_times = times["x @ W_enc (floor)"]
    # Each round's step over the same round's floor, then the median: a slow phase of the machine that spans
    # a round scales both, so these ratios vary less than the ratio of the medians.
    # Best over best: each pass's least disturbed round (the machine's capability when nothing interferes).
    print(f"\n{'step':45s} {'seconds':>9s} {'x floor':>8s}   {'per round: median (range)':26s} {'best/best':>9s}")
    for name, t in rows:
        per_round = sorted(a / b for a, b in zip(times[name], floor_times))
        spread = f"{statistics.median(per_round):.2f} ({per_round[0]:.2f}-{per_round[-1]:.2f})" if per_round else ""
        best = f"{min(times[name]) / min(floor_times):.2f}" if per_round else ""
        print(f"{name:45s} {t:9.3f} {t / base:8.2f}   {spread:26s} {best:>9s}")
    ours = rows[1][1]
    if not args.skip_dense:
        dense = [t for n, t in rows if n.startswith("dense")][0]
        print(f"\nsaelab step is {dense / ours:.1f}x faster than the dense autograd reference")
    if args.json:
        table = {name: {"seconds": t, "x_floor_median": statistics.median(a / b for a, b in
                                                                          zip(times[name], floor_times))
                        if times[name] else None} for name, t in rows}
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "dtype": args.dtype, "torch": torch.__version__, "repeats": args.repeats,
                       "shape": {"d": args.d, "n": args.n, "k": args.k, "batch": args.batch}, "steps": table}, f,
                      indent=1)
    if args.profile:
        for name, fn in steps.items():
            if name.startswith("saelab") and fn is not None:
                profile(name, fn, steps["x @ W_enc (floor)"])
    from saelab.sae.kernels import WORKSPACE_BYTES

    gpu_rows, gpu_n = 16384, 131072
    rows = max(1, min(gpu_rows, WORKSPACE_BYTES // (gpu_n * 4)))
    print(f"pre-activation workspace at the GPU shape (batch {gpu_rows}, n {gpu_n}, fp32): "
          f"{rows * gpu_n * 4 / 2**30:.1f} GiB in chunks of {rows} rows "
          f"(unbounded: {gpu_rows * gpu_n * 4 / 2**30:.1f} GiB); freed when training ends")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB" + (f"; peak CUDA {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
                                       if device.type == "cuda" else ""))


if __name__ == "__main__":
    main()

"""Data-parallel training step: PyTorch's DistributedDataParallel against saelab's hand-written flat all-reduce, in
the same run (issue 41). Two Trainers of one config, one per `TrainConfig.data_parallel`, take turns: each round
times `--steps` steps of each (the order alternating between rounds), and reports the ratio DDP / all-reduce of that
round's median step. Launch with torchrun (gloo on CPU, NCCL on CUDA):

    OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 benchmarks/bench_ddp.py [--d-in 576 --n-latents 4096 --k 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.distributed as dist

from saelab.training.trainer import TrainConfig, Trainer


def step_times(tr: Trainer, steps: int, device) -> list[float]:
    times = []
    for _ in range(steps):
        x = tr.data.batch(tr.step % tr.steps_per_epoch)
        dist.barrier()
        t0 = time.perf_counter()
        tr._step(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dist.barrier()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--n-latents", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024, help="the global batch (each rank holds batch / world rows)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5, help="timed steps of each mode per round")
    ap.add_argument("--json", help="write the results here (rank 0)")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", rank % torch.cuda.device_count()) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    x = torch.randn(args.batch * 8, args.d_in, generator=torch.Generator().manual_seed(0))
    trainers = {}
    for mode in ("ddp", "allreduce"):
        cfg = TrainConfig(n_latents=args.n_latents, k=args.k, k_aux=256, batch_size=args.batch, epochs=10**6, lr=1e-4,
                          eval_every=10**9, checkpoint_every=0, progress=False, data_parallel=mode)
        trainers[mode] = Trainer(cfg, x, device=device)
        step_times(trainers[mode], 2, device)  # warm-up
    rounds = []
    for r in range(args.rounds):
        order = ("ddp", "allreduce") if r % 2 == 0 else ("allreduce", "ddp")
        med = {mode: statistics.median(step_times(trainers[mode], args.steps, device)) for mode in order}
        rounds.append({**med, "ratio": med["ddp"] / med["allreduce"]})
    if rank == 0:
        ratios = [r["ratio"] for r in rounds]
        result = {"world": world, "backend": dist.get_backend(), "device": str(device), "torch": torch.__version__,
                  "shape": {"d": args.d_in, "n": args.n_latents, "k": args.k, "batch": args.batch}, "rounds": rounds,
                  "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
        for i, r in enumerate(rounds):
            print(f"round {i}: ddp {r['ddp'] * 1e3:.1f} ms  allreduce {r['allreduce'] * 1e3:.1f} ms  "
                  f"ratio {r['ratio']:.3f}")
        print(f"DDP / hand-written all-reduce, {world} ranks ({dist.get_backend()}, {device}), d {args.d_in} "
              f"n {args.n_latents} k {args.k} batch {args.batch}: median {result['ratio_median']:.3f} "
              f"(range {result['ratio_min']:.3f}-{result['ratio_max']:.3f}) over {args.rounds} rounds")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

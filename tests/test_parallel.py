"""Data parallelism (saelab.training.parallel): two gloo ranks on CPU, each with half of every global batch, train
the SAE one process trains on the whole batches, through PyTorch's DistributedDataParallel and through saelab's
hand-written all-reduce; every family trains under DDP without its search for unused parameters."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import sys, torch, torch.distributed as dist
torch.set_num_threads(1)
from saelab.sae.families import FAMILIES
from saelab.training.trainer import Trainer, TrainConfig
out, runs = sys.argv[1], sys.argv[2:]
world = int(__import__("os").environ.get("WORLD_SIZE", "1"))
if world > 1:
    dist.init_process_group("gloo")
rank = dist.get_rank() if world > 1 else 0
x = torch.randn(4096, 32, generator=torch.Generator().manual_seed(0)) * 2 + 0.5
results = {}
for run in runs:
    mode, family = run.split(":")
    changes = {name: c for fam in FAMILIES.values() for name, c in fam.examples().items()}[family]
    data = torch.cat([x, x.flip(1)], 1) if changes.get("activation") == "transcoder" else x
    cfg = TrainConfig(n_latents=1024, k=8, k_aux=32, batch_size=256, epochs=1.0 if family == "topk" else 0.125,
                      lr=2e-3, dead_tokens=256, eval_every=10**9, log_every=1, checkpoint_every=0, progress=False,
                      data_parallel=mode, **changes)
    tr = Trainer(cfg, data)
    tr.train()
    results[run] = {"state": {k: v.clone() for k, v in tr.sae.state_dict().items()}, "history": tr.history}
torch.save(results, f"{out}.{rank}.pt")
if world > 1:
    dist.destroy_process_group()
"""


def _run(tmp_path, name, runs, port=None):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    launch = [sys.executable] if port is None else [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                                                   "2", "--master-port", str(port)]
    r = subprocess.run([*launch, str(script), str(tmp_path / name), *runs], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return torch.load(tmp_path / f"{name}.0.pt")


def _assert_same(a, b, tol):
    for k in a["state"]:
        torch.testing.assert_close(a["state"][k], b["state"][k], atol=tol, rtol=tol, msg=k)
    assert [r["step"] for r in a["history"]] == [r["step"] for r in b["history"]]
    for ra, rb in zip(a["history"], b["history"]):
        for k in ("total", "nmse", "mse", "aux", "l0", "dead_frac"):
            assert (k in ra) == (k in rb), (ra["step"], k)
            if k in ra:
                assert ra[k] == pytest.approx(rb[k], abs=tol, rel=tol), (ra["step"], k)


@pytest.mark.slow
def test_two_gloo_ranks_train_the_one_process_sae_through_ddp_and_the_hand_written_all_reduce(tmp_path):
    one = _run(tmp_path, "one", ["ddp:topk"])["ddp:topk"]
    two = _run(tmp_path, "two", ["ddp:topk", "allreduce:topk"], port=29571)
    assert any("aux" in r for r in one["history"]), "AuxK never ran: the test would not cover it"
    assert len(one["history"]) == 16
    _assert_same(one, two["ddp:topk"], 1e-5)
    _assert_same(one, two["allreduce:topk"], 1e-5)


@pytest.mark.slow
def test_every_family_trains_under_ddp_and_its_ranks_stay_equal(tmp_path):
    from saelab.sae.families import FAMILIES

    names = sorted(name for fam in FAMILIES.values() for name in fam.examples())
    _run(tmp_path, "fam", [f"ddp:{n}" for n in names], port=29572)
    r0, r1 = torch.load(tmp_path / "fam.0.pt"), torch.load(tmp_path / "fam.1.pt")
    for run in r0:
        for k, v in r0[run]["state"].items():
            assert torch.equal(v, r1[run]["state"][k]), (run, k)  # DDP's average is the same on both ranks
        assert r0[run]["history"], run

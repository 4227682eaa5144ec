"""Latents sharded across ranks (`TrainConfig.shard_latents`): two gloo processes train the SAE one process trains,
checkpoints and the saved SAE are ordinary folders, a run resumes at another world size, the rest is refused."""

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from saelab.sae.model import SAE
from saelab.training.sharded import check_sharding
from saelab.training.trainer import TrainConfig, Trainer

CFG = TrainConfig(n_latents=64, k=4, k_aux=8, batch_size=64, epochs=4.0, lr=3e-3, dead_tokens=128, log_every=1,
                  eval_every=8, checkpoint_every=8, keep_checkpoints=2, progress=False, warmup_frac=0.0,
                  decay_frac=0.0, grad_clip=0.5)
"""32 steps of 64 tokens; latents die within two batches (AuxK fires); a constant learning rate, so a resumed
run extended to more epochs is the longer run."""

EMA = {"ema_decay": 0.9, "kernel": "dense"}
"""A second pair of runs: the weight average (gathered into checkpoints, swapped in to evaluate and save) and the
plain-autograd kernel."""


def data(d: int = 16):
    """(train, held-out) rows: sparse positive mixtures of 6 directions plus noise (some latents die)."""
    g = torch.Generator().manual_seed(0)
    F = torch.randn(6, d, generator=g)
    rows = []
    for n in (512, 128):
        c = torch.rand(n, 6, generator=g) * (torch.rand(n, 6, generator=g) < 0.3)
        rows.append(c @ F + 0.05 * torch.randn(n, d, generator=g))
    return rows


SCRIPT = """
import shutil, sys, torch, torch.distributed as dist
torch.set_num_threads(1)
from dataclasses import replace
from test_sharded import CFG, EMA, data
from saelab.training.trainer import Trainer
mode, out = sys.argv[1], sys.argv[2]
train, held = data()
if mode == "two":  # under torchrun: latents sharded over 2 gloo ranks
    dist.init_process_group("gloo")
    cfg = replace(CFG, shard_latents=True)
    tr = Trainer(cfg, train, out + "/two", eval_cache=held)
    tr.train()
    if dist.get_rank() == 0:
        torch.save(tr.sae.state_dict(), out + "/gathered.pt")
    Trainer(replace(cfg, epochs=2.0, checkpoint_every=5), train, out + "/part", eval_cache=held).train()
    if dist.get_rank() == 0:
        shutil.copytree(out + "/part", out + "/part2")
    dist.barrier()
    tr = Trainer(cfg, train, out + "/part2", eval_cache=held)  # each rank reads its rows of the checkpoint
    print(f"rank {dist.get_rank()} resumed at {tr.step}")
    tr.train()
    Trainer(replace(cfg, **EMA), train, out + "/ema2", eval_cache=held).train()
    dist.barrier()
    dist.destroy_process_group()
else:  # one process: the reference, then the sharded run's checkpoint resumed (and extended) here
    Trainer(CFG, train, out + "/one", eval_cache=held).train()
    Trainer(replace(CFG, **EMA), train, out + "/ema1", eval_cache=held).train()
    tr = Trainer(CFG, train, out + "/part", eval_cache=held)
    print("resumed at", tr.step)
    tr.train()
"""


def _run(args, tmp_path, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def _log(folder):
    return [json.loads(x) for x in (folder / "log.jsonl").read_text().splitlines()]


def _close_logs(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) > 32
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys(), ra["step"]
        for k in ra:
            if k not in ("seconds",):
                assert ra[k] == pytest.approx(rb[k], abs=1e-5), (ra["step"], k)


def _close_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=k)


@pytest.mark.slow
def test_two_gloo_ranks_train_the_sae_of_one_process_and_resume_at_another_world_size(tmp_path):
    script = tmp_path / "sharded_run.py"
    script.write_text(SCRIPT)
    out2 = _run(["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29561", str(script), "two",
          str(tmp_path)], tmp_path)
    out = _run([str(script), "one", str(tmp_path)], tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"

    # the same SAE and the same loss history (AuxK included: it fired), held-out evaluations too
    _close_weights(SAE.load(one / "sae").state_dict(), SAE.load(two / "sae").state_dict())
    log_one, log_two = _log(one), _log(two)
    _close_logs(log_one, log_two)
    assert sum(r.get("aux", 0) > 0 for r in log_two) > 16 and sum("eval_nmse" in r for r in log_two) == 4
    assert max(r.get("dead_frac", 0) for r in log_two) > 0

    # the saved folder is an ordinary SAE: what rank 0 gathered, at the whole width
    saved, gathered = SAE.load(two / "sae"), torch.load(tmp_path / "gathered.pt")
    assert saved.cfg.n_latents == 64 and all(torch.equal(v, gathered[k]) for k, v in saved.state_dict().items())
    # a checkpoint too: the one process's, Adam's moments included
    ck_one, ck_two = sorted((one / "checkpoints").glob("step-*")), sorted((two / "checkpoints").glob("step-*"))
    assert [p.name for p in ck_one] == [p.name for p in ck_two] == ["step-0000016", "step-0000024"]
    _close_weights(load_file(ck_one[-1] / "optim.safetensors"), load_file(ck_two[-1] / "optim.safetensors"))
    _close_weights(SAE.load(ck_one[-1]).state_dict(), SAE.load(ck_two[-1]).state_dict())

    # two ranks' checkpoint (step 15 of a 16-step run) resumed in one process and on two ranks, each extended to
    # the reference's length
    assert "resumed at 15" in out and "rank 0 resumed at 15" in out2 and "rank 1 resumed at 15" in out2
    for part in ("part", "part2"):
        _close_weights(SAE.load(one / "sae").state_dict(), SAE.load(tmp_path / part / "sae").state_dict())
        _close_logs(log_one, _log(tmp_path / part))

    # the weight average and the dense kernel: the same again, the checkpoint's average included
    ema1, ema2 = tmp_path / "ema1", tmp_path / "ema2"
    _close_weights(SAE.load(ema1 / "sae").state_dict(), SAE.load(ema2 / "sae").state_dict())
    _close_logs(_log(ema1), _log(ema2))
    last = sorted((ema2 / "checkpoints").glob("step-*"))[-1].name
    _close_weights(load_file(ema1 / "checkpoints" / last / "ema.safetensors"),
                   load_file(ema2 / "checkpoints" / last / "ema.safetensors"))


@pytest.mark.parametrize("change", [{}, {"kernel": "dense"}, {"ema_decay": 0.9, "normalize": "dataset_unit_norm"}])
def test_one_shard_is_the_ordinary_training_pass(change):
    """The sharded pass in one process (no collectives) against the family's own, step by step."""
    train, held = data()
    cfg = replace(CFG, checkpoint_every=0, **change)
    a, b = Trainer(cfg, train, eval_cache=held), Trainer(replace(cfg, shard_latents=True), train, eval_cache=held)
    a.train()
    b.train()
    _close_weights(a.sae.state_dict(), b.sae.state_dict())
    _close_logs([{k: v for k, v in r.items() if k != "seconds"} for r in a.history],
                [{k: v for k, v in r.items() if k != "seconds"} for r in b.history])
    assert any(r.get("aux", 0) > 0 for r in b.history)


def test_unsupported_settings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="3 does not divide it.*n_latents=66"):
        check_sharding(CFG, world=3)
    with pytest.raises(ValueError, match="trains topk SAEs.*'relu' family.*without --train.shard_latents"):
        Trainer(replace(CFG, activation="relu", shard_latents=True), data()[0])
    with pytest.raises(ValueError, match="not Multi-TopK"):
        check_sharding(replace(CFG, multi_topk=True), world=2)
    with pytest.raises(ValueError, match="not compiled.*without --train.compile"):
        check_sharding(replace(CFG, compile=True), world=2)
    with pytest.raises(ValueError, match="k <= n_latents / world"):
        check_sharding(replace(CFG, k=40), world=2)
    batches = list(data()[0].split(64))
    with pytest.raises(ValueError, match="drop --on-the-fly"):
        Trainer(replace(CFG, shard_latents=True), batches, tokens=512)


def test_the_flag_comes_from_the_command_line():
    from saelab.cli import build_parser
    from saelab.flags import build_dataclass

    args = build_parser().parse_args(["train", "--train.shard_latents", "true"])
    assert build_dataclass(TrainConfig, args, "train.").shard_latents is True


@pytest.mark.slow
def test_cli_main_job_with_sharded_latents_under_torchrun(tmp_path):
    env = {**os.environ, "SAELAB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                        "29566", "-m", "saelab", "train", "--out", str(tmp_path / "run"),
                        "--harvest.model", "tiny-gpt2", "--harvest.corpus", "synthetic", "--harvest.max_tokens", "6300",
                        "--harvest.store_dtype", "float32", "--eval-tokens", "1260", "--train.n_latents", "128",
                        "--train.k", "4", "--train.batch_size", "256", "--train.epochs", "1", "--train.progress",
                        "false", "--train.shard_latents", "true", "--train.checkpoint_every", "5"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("test normalized MSE") == 1  # rank 0 reports, on the whole SAE
    sae = SAE.load(tmp_path / "run" / "sae")
    assert sae.cfg.n_latents == 128 and sae.W_dec.shape == (128, sae.cfg.d_in)
    assert SAE.load(sorted((tmp_path / "run" / "checkpoints").glob("step-*"))[-1]).cfg.n_latents == 128

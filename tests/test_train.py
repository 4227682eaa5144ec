"""Trainer: learning, exact resume after a kill, data-parallel equivalence, the CLI main job."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from saelab.harvest import HarvestConfig, harvest
from saelab.sae import SAE
from saelab.train import TrainConfig, Trainer

HCFG = HarvestConfig(model="tiny-gpt2", corpus="synthetic", layer=2, max_tokens=63 * 160, batch_size=32,
                     shard_contexts=32, store_dtype="float32", outlier_factor=None)
TCFG = TrainConfig(n_latents=256, k=8, batch_size=512, epochs=3.0, eval_every=10, checkpoint_every=0,
                   progress=False, lr=2e-3, dead_tokens=2048)


@pytest.fixture(scope="module")
def caches(tmp_path_factory, tiny_lm):
    root = tmp_path_factory.mktemp("caches")
    train = harvest(HCFG, root / "train", lm=tiny_lm, progress=False)
    held = harvest(replace(HCFG, split="heldout", max_tokens=63 * 40), root / "held", lm=tiny_lm, progress=False)
    return train, held


def test_training_reduces_heldout_nmse_and_logs(tmp_path, caches):
    train, held = caches
    tr = Trainer(TCFG, train, tmp_path, eval_cache=held)
    before = tr.evaluate()["nmse"]
    tr.train()
    after = tr.evaluate()
    assert after["nmse"] < 0.7 * before
    assert abs(after["l0"] - 8) < 1e-6
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == tr.total_steps and any("eval_nmse" in x for x in lines)
    sae = SAE.load(tmp_path / "sae")
    assert sae.cfg.model == "tiny-gpt2" and sae.cfg.layer == 2 and sae.cfg.tokens_seen == tr.total_steps * 512
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(256))


def test_lr_schedule_warmup_and_decay(caches):
    tr = Trainer(replace(TCFG, warmup_frac=0.1, decay_frac=0.5), caches[0], "unused")
    T, base = tr.total_steps, TCFG.lr
    assert tr.lr_at(0) < base and tr.lr_at(T // 4) == base and tr.lr_at(T - 1) < 0.1 * base


def test_default_lr_follows_paper_scaling():
    assert TrainConfig(n_latents=2**14).learning_rate() == pytest.approx(2e-4)
    assert TrainConfig(n_latents=2**16).learning_rate() == pytest.approx(1e-4)


def _weights(folder):
    return SAE.load(folder / "sae").state_dict()


TRAIN_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from dataclasses import replace
from saelab.harvest import ActivationCache
from saelab.train import Trainer, TrainConfig
cfg = TrainConfig(n_latents=256, k=8, batch_size=512, epochs={epochs}, eval_every=10**9, checkpoint_every=2,
                  keep_checkpoints=2, progress=False, lr=2e-3, dead_tokens=2048, k_aux=32)
Trainer(cfg, ActivationCache(sys.argv[1]), sys.argv[2]).train()
"""


def test_killed_training_resumes_to_the_same_weights(tmp_path, caches):
    train, _ = caches
    script = tmp_path / "t.py"
    script.write_text(TRAIN_SCRIPT.format(epochs=6.0))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run([sys.executable, str(script), str(train.folder), str(tmp_path / "ref")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(train.folder), str(run)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((run / "checkpoints").glob("step-000001[0-9]")):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "sae").exists(), "training finished before the kill; nothing was tested"
    resumed = subprocess.run([sys.executable, str(script), str(train.folder), str(run)], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    a, b = _weights(tmp_path / "ref"), _weights(run)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-6, msg=k)
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # no duplicated log lines after the resume
    assert len(list((run / "checkpoints").glob("step-*"))) <= 2


@pytest.mark.slow
def test_two_process_data_parallel_matches_single_process(tmp_path, caches):
    train, _ = caches
    script = tmp_path / "ddp.py"
    script.write_text(
        "import sys, torch, torch.distributed as dist\n"
        "torch.set_num_threads(1)\n"
        "from saelab.harvest import ActivationCache\n"
        "from saelab.train import Trainer, TrainConfig\n"
        "ddp = len(sys.argv) > 3\n"
        "if ddp: dist.init_process_group('gloo')\n"
        "cfg = TrainConfig(n_latents=256, k=8, batch_size=512, epochs=1.0, eval_every=10**9, checkpoint_every=0,"
        " progress=False, lr=2e-3, dead_tokens=1024, k_aux=32)\n"
        "Trainer(cfg, ActivationCache(sys.argv[1]), sys.argv[2]).train()\n"
        "if ddp: dist.destroy_process_group()\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, str(script), str(train.folder), str(tmp_path / "one")], env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          "29532", str(script), str(train.folder), str(tmp_path / "two"), "ddp"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    # Same global batches; only the order of float sums differs (documented tolerance).
    for k in ("W_enc", "W_dec", "b_enc", "b_pre"):
        torch.testing.assert_close(a[k], b[k], atol=2e-4, rtol=1e-3, msg=k)
    assert torch.equal(a["tokens_since_fired"], b["tokens_since_fired"])


def test_cli_main_job_end_to_end_on_tiny_model(tmp_path):
    env = {**os.environ, "SAELAB_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-m", "saelab", "train", "--out", str(tmp_path / "run"),
                        "--harvest.model", "tiny-gpt2", "--harvest.corpus", "synthetic", "--harvest.max_tokens", "6300",
                        "--harvest.store_dtype", "float32", "--eval-tokens", "1260", "--train.n_latents", "128",
                        "--train.k", "4", "--train.batch_size", "256", "--train.epochs", "2",
                        "--train.progress", "false", "--train.aux_coef", "1/16"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "held-out normalized MSE" in r.stdout
    metrics = json.loads((tmp_path / "run" / "report" / "metrics.json").read_text())
    assert 0 < metrics["final"]["nmse"] < 2 and metrics["train"]["aux_coef"] == 1 / 16
    assert (tmp_path / "run" / "report" / "curves.html").exists()
    assert SAE.load(tmp_path / "run" / "sae").cfg.n_latents == 128


def test_cli_help_explains_every_field():
    from saelab.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    assert len(flags) > 40
    empty = [a.dest for a in flags if not a.help or a.help.startswith(" (default")]
    assert not empty, f"flags without an explanation: {empty}"
    for name, parser in build_parser()._subparsers._group_actions[0].choices.items():
        assert "usage:" in parser.format_help(), name  # argparse %-formats help: a stray % would raise here
    assert "1% of" in sub.format_help()  # the harvest's outlier note keeps its percent sign


def test_on_the_fly_training_through_a_shuffle_buffer(tmp_path, tiny_lm, caches):
    from saelab.harvest import ShuffleBuffer, stream_activations

    hcfg = replace(HCFG, max_tokens=63 * 128)
    stream = ShuffleBuffer(stream_activations(hcfg, lm=tiny_lm), batch_size=512, capacity=2048)
    tr = Trainer(replace(TCFG, epochs=1.0), None, tmp_path, eval_cache=caches[1], stream=stream,
                 stream_tokens=hcfg.max_tokens, provenance={"model": "tiny-gpt2", "layer": 2})
    before = tr.evaluate()["nmse"]
    tr.train()
    assert tr.step == (63 * 128) // 512
    assert tr.evaluate()["nmse"] < 0.9 * before
    assert SAE.load(tmp_path / "sae").cfg.layer == 2


@pytest.mark.slow
def test_cli_main_job_under_torchrun_two_processes(tmp_path):
    env = {**os.environ, "SAELAB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                        "29533", "-m", "saelab", "train", "--out", str(tmp_path / "run"),
                        "--harvest.model", "tiny-gpt2", "--harvest.corpus", "synthetic", "--harvest.max_tokens", "6300",
                        "--harvest.store_dtype", "float32", "--eval-tokens", "1260", "--train.n_latents", "128",
                        "--train.k", "4", "--train.batch_size", "256", "--train.epochs", "1",
                        "--train.progress", "false"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("held-out normalized MSE") == 1  # only rank 0 reports
    recs = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in recs if "nmse" in r]
    assert steps and steps == sorted(set(steps))  # one writer
    assert SAE.load(tmp_path / "run" / "sae").cfg.n_latents == 128

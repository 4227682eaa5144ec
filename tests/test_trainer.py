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
from conftest import tiny_harvest_config

from saelab.sae.model import SAE
from saelab.training.trainer import TrainConfig, Trainer

HCFG = tiny_harvest_config()
TCFG = TrainConfig(n_latents=256, k=8, batch_size=512, epochs=3.0, eval_every=10, checkpoint_every=0,
                   progress=False, lr=2e-3, dead_tokens=2048)


def test_training_reduces_heldout_nmse_and_logs(tmp_path, caches):
    train, held = caches
    tr = Trainer(TCFG, train, tmp_path, eval_cache=held)
    before = tr.heldout_metrics()["nmse"]
    tr.train()
    after = tr.heldout_metrics()
    assert after["nmse"] < 0.7 * before
    assert abs(after["l0"] - 8) < 1e-6
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == tr.total_steps and any("eval_nmse" in x for x in lines)
    sae = SAE.load(tmp_path / "sae")
    assert sae.cfg.model == "tiny-gpt2" and sae.cfg.layer == 2 and int(sae.tokens_seen) == tr.total_steps * 512
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(256))
    # the data record: what the evaluations read (its split, the positions its harvest left out)
    m = train.manifest
    assert sae.data_record == {k: m[k] for k in ("corpus", "corpus_hash", "split", "context", "exclude_first",
                                                 "outlier_factor")}
    sae.save(tmp_path / "again")
    assert SAE.load(tmp_path / "again").data_record == sae.data_record


def test_lr_schedule_warmup_and_decay(caches, tmp_path):
    tr = Trainer(replace(TCFG, warmup_frac=0.1, decay_frac=0.5), caches[0], tmp_path)
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
from saelab.acts.cache import ActivationCache
from saelab.training.trainer import Trainer, TrainConfig
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
        "from saelab.acts.cache import ActivationCache\n"
        "from saelab.training.trainer import Trainer, TrainConfig\n"
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


@pytest.mark.slow
def test_cli_on_the_fly_under_torchrun_two_processes(tmp_path):
    """Each rank streams its own slice; the ranks start from rank 0's initialisation and stop together."""
    env = {**os.environ, "SAELAB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                        "29535", "-m", "saelab", "train", "--out", str(tmp_path / "run"), "--on-the-fly",
                        "--harvest.model", "tiny-gpt2", "--harvest.corpus", "synthetic", "--harvest.max_tokens", "6300",
                        "--harvest.store_dtype", "float32", "--eval-tokens", "1260", "--train.n_latents", "128",
                        "--train.k", "4", "--train.batch_size", "256", "--shuffle-buffer", "1024",
                        "--train.progress", "false"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("test normalized MSE") == 1
    recs = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in recs if "nmse" in x]
    assert steps and steps == sorted(set(steps)) and steps[-1] <= 6300 // 256
    assert SAE.load(tmp_path / "run" / "sae").cfg.n_latents == 128


def test_cli_main_job_end_to_end_on_tiny_model(tmp_path):
    env = {**os.environ, "SAELAB_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-m", "saelab", "train", "--out", str(tmp_path / "run"),
                        "--harvest.model", "tiny-gpt2", "--harvest.corpus", "synthetic", "--harvest.max_tokens", "6300",
                        "--harvest.store_dtype", "float32", "--eval-tokens", "1260", "--train.n_latents", "128",
                        "--train.k", "4", "--train.batch_size", "256", "--train.epochs", "2",
                        "--train.progress", "false", "--train.aux_coef", "1/16"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "test normalized MSE" in r.stdout and "validation normalized MSE" in r.stdout
    metrics = json.loads((tmp_path / "run" / "report" / "metrics.json").read_text())
    assert 0 < metrics["final"]["nmse"] < 2 and metrics["train"]["sae"]["aux_coef"] == 1 / 16
    assert metrics["final"]["nmse"] != metrics["validation"]["nmse"]  # two halves of the held-out documents
    evals = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if "eval_nmse" in x]
    assert evals[-1]["eval_nmse"] == pytest.approx(metrics["validation"]["nmse"], rel=1e-6)  # the curves: validation
    test_manifest = json.loads(next((tmp_path / "home" / "acts").glob("*-synthetic-test-*/manifest.json")).read_text())
    assert metrics["final"]["tokens"] == test_manifest["n_tokens"]  # the report: the test cache
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
    from saelab.acts.stream import StreamShuffleBuffer, stream_activations

    hcfg = replace(HCFG, max_tokens=63 * 128)
    stream = StreamShuffleBuffer(stream_activations(hcfg, lm=tiny_lm), batch_size=512, capacity=2048)
    tr = Trainer(replace(TCFG, epochs=1.0), None, tmp_path, eval_cache=caches[1], stream=stream,
                 stream_tokens=hcfg.max_tokens, provenance={"model": "tiny-gpt2", "layer": 2})
    before = tr.heldout_metrics()["nmse"]
    tr.train()
    assert tr.step == (63 * 128) // 512
    assert tr.heldout_metrics()["nmse"] < 0.9 * before
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
    assert r.stdout.count("test normalized MSE") == 1  # only rank 0 reports
    recs = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in recs if "nmse" in r]
    assert steps and steps == sorted(set(steps))  # one writer
    assert SAE.load(tmp_path / "run" / "sae").cfg.n_latents == 128


BUSY_SCRIPT = """
import sys, time
from saelab.acts.cache import ActivationCache
from saelab.training.trainer import Trainer, TrainConfig
cfg = TrainConfig(n_latents=256, k=8, batch_size=512, epochs=300.0, eval_every=10**9, checkpoint_every=0,
                  progress=False, lr=2e-3, log_every=1)
Trainer(cfg, ActivationCache(sys.argv[1]), sys.argv[2]).train()
"""


def test_a_second_run_on_a_busy_folder_is_refused_and_the_first_is_untouched(tmp_path, caches):
    train, _ = caches
    run = tmp_path / "run"
    script = tmp_path / "busy.py"
    script.write_text(BUSY_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SAELAB_HOME": str(tmp_path / "home")}
    first = subprocess.Popen([sys.executable, str(script), str(train.folder), str(run)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "log.jsonl").exists():
        time.sleep(0.05)
    assert (run / "log.jsonl").exists(), "the first run did not start"
    second = subprocess.run([sys.executable, "-m", "saelab", "train", "--out", str(run), "--harvest.model", "tiny-gpt2",
                             "--train.progress", "false"], env=env, capture_output=True, text=True, timeout=120)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 2
    assert f"in use by another training run (pid {first.pid})" in second.stderr and "--out" in second.stderr
    assert "Traceback" not in second.stderr
    steps = [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))  # one writer, nothing mixed in or lost
    assert SAE.load(run / "sae").cfg.n_latents == 256


def test_resume_extends_a_run_survives_a_torn_log_line_and_refuses_to_shorten(tmp_path, caches):
    train, held = caches
    cfg = replace(TCFG, epochs=2.0, checkpoint_every=3, eval_every=10**9, log_every=1)
    first = Trainer(cfg, train, tmp_path)
    first.train()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir())  # kept for a later extension
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"step": 99, "nms')  # a line torn by a kill
    longer = Trainer(replace(cfg, epochs=4.0), train, tmp_path)
    assert 0 < longer.step < first.total_steps  # resumed from the last checkpoint
    longer.train()
    assert longer.step == longer.total_steps > first.total_steps
    steps = [json.loads(x)["step"] for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, longer.total_steps + 1))
    with pytest.raises(ValueError, match="can extend a run, not shorten it"):
        Trainer(replace(cfg, epochs=1.0), train, tmp_path)
    with pytest.raises(ValueError, match="another training config"):
        Trainer(replace(cfg, epochs=4.0, k=4), train, tmp_path)


def test_keep_checkpoints_zero_leaves_none(tmp_path, caches):
    tr = Trainer(replace(TCFG, checkpoint_every=2, keep_checkpoints=0), caches[0], tmp_path)
    tr.train()
    assert not (tmp_path / "checkpoints").exists() and (tmp_path / "sae" / "cfg.json").exists()


def test_auxk_reads_the_dead_mask_after_this_batch_updates_it(tmp_path, caches, monkeypatch):
    """As the released code: a latent that fires in the current batch is not 'dead' for that batch's AuxK."""
    tr = Trainer(replace(TCFG, epochs=1.0, k_aux=64), caches[0], tmp_path)
    tr.sae.tokens_since_fired.fill_(10**9)  # every latent dead before the step
    import saelab.sae.auxk

    seen = {}
    original = saelab.sae.auxk.aux_loss

    def spy(sae, x_n, recon_n, pre_BN, dead_mask_N, *args):
        seen["dead"] = dead_mask_N.clone()
        return original(sae, x_n, recon_n, pre_BN, dead_mask_N, *args)

    monkeypatch.setattr(saelab.sae.auxk, "aux_loss", spy)
    x = tr.data.batch(0)
    out = tr.sae(x, dead_mask_fn=tr._update_dead)
    assert "aux" in out.losses and out.fired_N.any()
    assert not (seen["dead"] & out.fired_N).any()  # fired latents were revived before AuxK read the mask
    assert int(seen["dead"].sum()) == 256 - int(out.fired_N.sum())


def test_weight_ema_is_bias_corrected_and_saved_with_unit_decoder_rows(tmp_path, caches):
    from saelab.training.ema import WeightEMA

    lin = torch.nn.Linear(3, 2)
    ema = WeightEMA(lin, 0.9)
    with torch.no_grad():
        lin.weight.fill_(2.0)
    ema.update()
    torch.testing.assert_close(ema.averaged()[0], torch.full((2, 3), 2.0))  # not pulled towards zero
    with torch.no_grad():
        lin.weight.fill_(4.0)
    ema.update()  # (0.1*0.9*2 + 0.1*4) / (1 - 0.81)
    torch.testing.assert_close(ema.averaged()[0], torch.full((2, 3), (0.18 + 0.4) / 0.19))
    with ema.swapped_in():
        assert torch.allclose(lin.weight, ema.averaged()[0])
    assert torch.all(lin.weight == 4.0)

    train, held = caches
    tr = Trainer(replace(TCFG, ema_decay=0.95), train, tmp_path / "ema", eval_cache=held)
    tr.train()
    sae = SAE.load(tmp_path / "ema" / "sae")
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(256))
    info = json.loads((tmp_path / "ema" / "sae" / "cfg.json").read_text())["ema"]
    assert info["steps"] == tr.total_steps and info["decoder_norm_min"] < 1.0  # an average of unit rows is shorter
    live = Trainer(TCFG, train, tmp_path / "live", eval_cache=held)
    live.train()
    assert not torch.allclose(sae.W_enc, SAE.load(tmp_path / "live" / "sae").W_enc, atol=1e-4)


def test_a_run_with_ema_resumes_to_the_same_average(tmp_path, caches):
    import shutil

    train, _ = caches
    cfg = replace(TCFG, ema_decay=0.9, checkpoint_every=9, keep_checkpoints=100)
    Trainer(cfg, train, tmp_path / "ref").train()
    mid = tmp_path / "ref" / "checkpoints" / "step-0000018"
    shutil.copytree(mid, tmp_path / "cut" / "checkpoints" / mid.name)  # as if killed after step 18
    resumed = Trainer(cfg, train, tmp_path / "cut")
    assert resumed.step == 18 and resumed.ema.steps == 18
    resumed.train()
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "cut")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-6, msg=k)
    shutil.rmtree(tmp_path / "cut" / "sae")
    with pytest.raises(ValueError, match="ema_decay"):
        Trainer(replace(cfg, ema_decay=None), train, tmp_path / "cut")


def test_rescaled_encoder_init_reconstructs_random_unit_inputs_at_unit_norm(caches):
    from saelab.sae.config import SAEConfig

    sae = SAE(SAEConfig(d_in=64, n_latents=512, k=8), seed=0)
    sae.init_from_data(caches[0].sample(2048, seed=0).float()[:, :64] if caches[0].d_model >= 64
                       else torch.randn(2048, 64))
    g = torch.Generator().manual_seed(5)
    u = torch.randn(128, 64, generator=g)
    x_n = u / u.norm(dim=1, keepdim=True) + sae.b_pre

    def out_norm():
        from saelab.sae.activation_fns import make_activation

        with torch.no_grad():
            acts, idx = make_activation("topk", 512, 8).select(sae.pre_acts(x_n))
            return float((sae.decode_normalized(acts, idx) - sae.b_pre).norm(dim=1).mean())

    before = out_norm()
    factor = sae.rescale_encoder_init_(seed=0)  # the SAE's own seed: its inputs must not be the decoder's rows
    assert factor == pytest.approx(before, rel=0.1) and abs(before - 1) > 0.1  # it had something to fix
    assert out_norm() == pytest.approx(1.0, rel=0.1)

"""BatchTopK training (Bussmann, Leask, Nanda 2024, arXiv 2412.06410): the batch keeps exactly B*k latents, the
sparse kernels' gradients equal dense autograd, and the inference threshold reproduces the training L0."""

import tempfile
from pathlib import Path

import pytest
import torch

from saelab.sae.config import SAEConfig
from saelab.sae.model import SAE


def _sae(kernel="sparse", **kw):
    sae = SAE(SAEConfig(d_in=32, n_latents=256, k=4, activation="batchtopk", normalize="per_token_unit_norm",
                        kernel=kernel, k_aux=16, **kw), seed=0)
    with torch.no_grad():
        sae.b_pre.copy_(0.1 * torch.randn(32, generator=torch.Generator().manual_seed(1)))
        sae.b_enc.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    return sae


def test_batchtopk_keeps_exactly_b_times_k_latents_with_varying_rows():
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    out = _sae()(x)
    per_row = (out.top_acts_BK > 0).sum(-1)
    assert int(per_row.sum()) == 64 * 4
    assert int(per_row.max()) > 4 > int(per_row.min())  # tokens get different counts, mean k
    assert float(out.l0) == pytest.approx(4.0)
    x_n, _ = _sae().preprocess(x)  # they are the batch's largest pre-activations
    pre = _sae().pre_acts(x_n)
    cut = pre.flatten().topk(64 * 4).values[-1]
    assert float(out.top_acts_BK[out.top_acts_BK > 0].min()) == pytest.approx(float(cut), rel=1e-5)


def test_batchtopk_rejects_multi_topk():
    with pytest.raises(ValueError, match="Multi-TopK trains TopK SAEs only"):
        SAEConfig(d_in=8, n_latents=64, k=4, activation="batchtopk", multi_topk=True)


def test_trained_threshold_reproduces_training_l0_on_heldout_tokens_and_survives_save():
    from saelab.acts.cache import cache_from_tensor
    from saelab.evals.reconstruction import reconstruction_metrics
    from saelab.teach.toy import ToyConfig, make_toy
    from saelab.training.trainer import TrainConfig, Trainer

    x = make_toy(ToyConfig(n_samples=24576)).x_BD.float()
    held, train = x[:4096], x[4096:]
    with tempfile.TemporaryDirectory() as tmp:
        cache = cache_from_tensor(train, Path(tmp) / "cache", name="toy")
        cfg = TrainConfig(n_latents=256, k=8, activation="batchtopk", batch_size=512, epochs=4.0, lr=2e-3,
                          eval_every=10**9, checkpoint_every=0, progress=False)
        trainer = Trainer(cfg, cache, Path(tmp) / "run")
        trainer.train()
        m = reconstruction_metrics(trainer.sae, held)  # encode at inference: the stored threshold, token by token
        assert abs(m["l0"] - 8) < 0.1 * 8, m
        one = trainer.sae.encode(held[:1])
        assert 0 < int((one.top_acts_BK > 0).sum()) < 256
        again = SAE.load(Path(tmp) / "run" / "sae")
        assert float(trainer.sae.threshold[0]) > 0
        assert float(again.threshold[0]) == pytest.approx(float(trainer.sae.threshold[0]))
        torch.testing.assert_close(again.reconstruct(held[:64]), trainer.sae.reconstruct(held[:64]))


def _toy_cache(tmp, n=12288):
    from saelab.acts.cache import cache_from_tensor
    from saelab.teach.toy import ToyConfig, make_toy

    x = make_toy(ToyConfig(n_samples=n)).x_BD.float()
    return x[:2048], cache_from_tensor(x[2048:], Path(tmp) / "cache", name="toy")


def test_with_a_weight_average_the_saved_threshold_is_the_saved_weights(tmp_path):
    """Issue 38, bug 1: the threshold was calibrated on the live weights, then the weight average was saved (and
    evaluated) with it. The saved threshold must be the one the saved weights' own selection gives on the same
    calibration batches (the first 8 of epoch 0)."""
    from saelab.acts.cache import ShuffledCacheLoader
    from saelab.sae.families.batchtopk import calibrate_threshold_
    from saelab.training.trainer import TrainConfig, Trainer

    held, cache = _toy_cache(tmp_path)
    cfg = TrainConfig(n_latents=256, k=8, activation="batchtopk", batch_size=512, epochs=2.0, lr=2e-3, ema_decay=0.9,
                      eval_every=10**9, checkpoint_every=0, progress=False)
    Trainer(cfg, cache, tmp_path / "run").train()
    saved = SAE.load(tmp_path / "run" / "sae")
    theta = float(saved.threshold[0])
    batches = [b for b, _ in zip(ShuffledCacheLoader(cache, 512, cfg.seed).iter_epoch(0), range(8))]
    assert calibrate_threshold_(saved, batches) == pytest.approx(theta, rel=1e-6, abs=0)


def test_held_out_evaluation_with_a_weight_average_uses_the_averages_threshold(tmp_path):
    """Mid-run, the held-out metrics are of the weights the run would save: the average, with its own threshold."""
    from saelab.sae.families.batchtopk import calibrate_threshold_
    from saelab.training.trainer import TrainConfig, Trainer

    held, cache = _toy_cache(tmp_path)
    cfg = TrainConfig(n_latents=256, k=8, activation="batchtopk", batch_size=512, epochs=2.0, lr=2e-3, ema_decay=0.9,
                      progress=False)
    trainer = Trainer(cfg, cache)
    for step in range(6):
        trainer._step(trainer.data.batch(step))
    live = trainer.sae.threshold.clone()
    averaged = dict(zip([n for n, _ in trainer.sae.named_parameters()], trainer.ema.averaged()))
    with trainer.evaluated_weights() as sae:
        evaluated = sae.threshold.clone()
        assert torch.equal(sae.W_enc, averaged["W_enc"])
    assert torch.equal(trainer.sae.threshold, live) and not torch.equal(evaluated, live)  # restored afterwards
    average = SAE(trainer.sae.cfg, seed=None)
    average.load_state_dict(trainer.sae.state_dict())
    with torch.no_grad():
        for p, a in zip(average.parameters(), trainer.ema.averaged()):
            p.copy_(a)
    assert calibrate_threshold_(average, list(trainer.data.calibration_batches(None))) == pytest.approx(
        float(evaluated[0]), rel=1e-6)


DP_SCRIPT = """
import sys, torch, torch.distributed as dist
torch.set_num_threads(1)
from saelab.acts.cache import ActivationCache
from saelab.training.trainer import Trainer, TrainConfig
ddp = len(sys.argv) > 3
if ddp: dist.init_process_group('gloo')
cfg = TrainConfig(n_latents=256, k=8, activation='batchtopk', batch_size=512, epochs=1.0, eval_every=10**9,
                  checkpoint_every=0, progress=False, lr=2e-3, dead_tokens=1024, k_aux=32)
Trainer(cfg, ActivationCache(sys.argv[1]), sys.argv[2]).train()
if ddp: dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_process_batchtopk_selects_on_the_global_batch(tmp_path, caches):
    """Issue 38, bug 2: under data parallelism each rank selected B/W*k of its own slice, so two processes trained
    another SAE than one. The selection and the threshold are the global batch's: one process and two agree."""
    import os
    import subprocess
    import sys

    train, _ = caches
    script = tmp_path / "ddp.py"
    script.write_text(DP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(script), str(train.folder), str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          "29537", str(script), str(train.folder), str(tmp_path / "two"), "ddp"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = SAE.load(tmp_path / "one" / "sae").state_dict(), SAE.load(tmp_path / "two" / "sae").state_dict()
    for k in ("W_enc", "W_dec", "b_enc", "b_pre", "threshold"):  # the DP test's tolerance: float sums' order
        torch.testing.assert_close(a[k], b[k], atol=2e-4, rtol=1e-3, msg=k)
    assert torch.equal(a["tokens_since_fired"], b["tokens_since_fired"])

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


def test_batchtopk_sparse_backward_equals_dense_autograd():
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    dead = torch.zeros(256, dtype=torch.bool)
    dead[::3] = True
    grads = {}
    for kernel in ("sparse", "dense"):
        sae = _sae(kernel)
        out = sae(x, dead_mask_N=dead)
        assert "aux" in out.losses
        out.losses["total"].backward()
        grads[kernel] = {name: p.grad.clone() for name, p in sae.named_parameters()}
    for name, g in grads["dense"].items():
        assert float(g.abs().max()) > 0, name
        torch.testing.assert_close(grads["sparse"][name], g, atol=1e-6, rtol=1e-5)


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

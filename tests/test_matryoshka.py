"""Matryoshka BatchTopK (Bussmann et al. 2025, arXiv 2503.17547): the loss is the sum of each nested prefix's own
reconstruction error, computed here densely from scratch; the sparse kernels' gradients equal dense autograd."""

import pytest
import torch

from saelab.sae.config import SAEConfig
from saelab.sae.families.matryoshka import parse_widths
from saelab.sae.model import SAE

WIDTHS = [16, 48, 112, 256]


def _sae(kernel="sparse", activation="batchtopk", k_aux=0):
    sae = SAE(SAEConfig(d_in=32, n_latents=256, k=6, activation=activation, normalize="per_token_unit_norm",
                        kernel=kernel, k_aux=k_aux, matryoshka_widths=WIDTHS), seed=0)
    with torch.no_grad():
        sae.b_pre.copy_(0.1 * torch.randn(32, generator=torch.Generator().manual_seed(1)))
        sae.b_enc.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    return sae


@pytest.mark.parametrize("activation", ["batchtopk", "topk"])
def test_matryoshka_loss_equals_the_sum_of_prefix_losses_computed_densely(activation):
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    sae = _sae(activation=activation)
    out = sae(x)
    # from scratch: the codes as a dense [B, n] matrix, each prefix decoded with the bias, its normalized MSE
    z = torch.zeros(64, 256).scatter_add(1, out.top_idx_BK, out.top_acts_BK)
    x_n, _ = sae.preprocess(x)
    base = ((x_n - x_n.mean(0)) ** 2).sum(-1).mean()
    prefix = [float(((z[:, :m] @ sae.W_dec[:m].detach() + sae.b_pre.detach() - x_n) ** 2).sum(-1).mean() / base)
              for m in WIDTHS]
    assert len({round(v, 4) for v in prefix}) == len(WIDTHS)  # each prefix decodes a different part of the codes
    assert float(out.losses["nmse"]) == pytest.approx(prefix[-1], rel=1e-4)
    assert float(out.losses["matryoshka"]) == pytest.approx(sum(prefix[:-1]), rel=1e-4)
    assert float(out.losses["total"]) == pytest.approx(sum(prefix), rel=1e-4)


def test_widths_are_checked_and_the_papers_layout_is_one_word():
    assert parse_widths("doubling:5", 65536) == [2048, 6144, 14336, 30720, 65536]  # the paper's section 4.3
    assert parse_widths("16,48", 256) == [16, 48, 256]
    assert parse_widths("", 256) is None
    with pytest.raises(ValueError, match="strictly increasing"):
        parse_widths("48,16", 256)
    with pytest.raises(ValueError, match="more than n_latents"):
        SAEConfig(d_in=8, n_latents=64, k=4, activation="batchtopk", matryoshka_widths=[16, 128])
    with pytest.raises(ValueError, match="TopK or BatchTopK"):
        SAEConfig(d_in=8, n_latents=64, k=4, activation="relu", matryoshka_widths=[16])


def test_trained_matryoshka_sae_orders_its_prefixes_and_saves(tmp_path):
    from saelab.acts.cache import cache_from_tensor
    from saelab.evals.reconstruction import reconstruction_metrics
    from saelab.teach.toy import ToyConfig, make_toy
    from saelab.training.trainer import TrainConfig, Trainer

    x = make_toy(ToyConfig(n_samples=12288)).x_BD.float()
    cache = cache_from_tensor(x[2048:], tmp_path / "cache", name="toy")
    cfg = TrainConfig(n_latents=256, k=8, activation="batchtopk", matryoshka_widths="32,64,128", batch_size=512,
                      epochs=4.0, lr=2e-3, eval_every=10**9, checkpoint_every=0, progress=False)
    trainer = Trainer(cfg, cache, tmp_path / "run")
    trainer.train()
    sae = SAE.load(tmp_path / "run" / "sae")
    assert sae.cfg.matryoshka_widths == [32, 64, 128, 256]
    m = reconstruction_metrics(sae, x[:2048])
    assert abs(m["l0"] - 8) < 0.15 * 8, m
    # the first prefix carries more of the codes' mass per latent than the rest (it must reconstruct on its own)
    enc = sae.encode(x[:2048])
    mass = torch.zeros(256).index_add_(0, enc.top_idx_BK.flatten(), enc.top_acts_BK.flatten())
    assert float(mass[:32].mean()) > 2 * float(mass[128:].mean())

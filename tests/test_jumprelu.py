"""JumpReLU training (Rajamanoharan et al. 2024, arXiv 2407.14435): the threshold's straight-through gradients on a
case worked by hand, sparse = dense gradients, and an L0 penalty that moves the L0."""

import pytest
import torch

from saelab.sae.config import SAEConfig
from saelab.sae.families.jumprelu import DENSE_WHILE_WIDER_THAN, jumprelu, select_window, step
from saelab.sae.model import SAE


def test_threshold_gradient_matches_the_papers_estimator_by_hand():
    eps = 0.1
    theta = torch.tensor([0.5, 0.5, 0.5, 0.5], requires_grad=True)
    pre = torch.tensor([[0.52, 0.47, 0.70, 0.30]], requires_grad=True)
    # JumpReLU: values pass above theta; d/dtheta = -(theta/eps) K((pre - theta)/eps): K = 1 for |pre - theta| < eps/2
    out = jumprelu(pre, theta, eps)
    assert out.tolist() == [[pytest.approx(0.52), 0.0, pytest.approx(0.70), 0.0]]
    g_out = torch.tensor([[2.0, 3.0, 5.0, 7.0]])
    out.backward(g_out)
    # entries 0 (0.02 above) and 1 (0.03 below) are inside the window: -(0.5/0.1) * g; 2 and 3 are outside
    assert theta.grad.tolist() == pytest.approx([-10.0, -15.0, 0.0, 0.0])
    assert pre.grad.tolist() == [[2.0, 0.0, 5.0, 0.0]]  # d/dpre = H(pre - theta)
    theta.grad = None
    pre.grad = None
    # Heaviside: d/dtheta = -(1/eps) K(...), nothing to pre
    h = step(pre, theta, eps)
    assert h.tolist() == [[1.0, 0.0, 1.0, 0.0]]
    h.sum().backward()
    assert theta.grad.tolist() == pytest.approx([-10.0, -10.0, 0.0, 0.0])
    assert pre.grad is None or float(pre.grad.abs().sum()) == 0


def test_select_window_keeps_the_active_entries_and_those_just_below():
    pre = torch.tensor([[0.9, 0.46, 0.2, 0.55], [0.1, 0.1, 0.1, 0.1]])
    vals, idx, valid = select_window(pre, torch.full((4,), 0.5), 0.1)
    assert idx[0, :3].tolist() == [0, 1, 3] and valid.tolist() == [[1, 1, 1], [0, 0, 0]]
    assert vals[0].tolist() == pytest.approx([0.9, 0.46, 0.55])


def _sae(kernel, theta=0.45, k_aux=0):
    sae = SAE(SAEConfig(d_in=32, n_latents=256, k=8, activation="jumprelu", normalize="per_token_unit_norm",
                        kernel=kernel, k_aux=k_aux, l0_coef=0.01, jumprelu_bandwidth=0.02), seed=0)
    with torch.no_grad():
        sae.b_pre.copy_(0.1 * torch.randn(32, generator=torch.Generator().manual_seed(1)))
        sae.b_enc.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
        sae.threshold.copy_(theta * (1 + 0.5 * torch.rand(256, generator=torch.Generator().manual_seed(3))))
    return sae


@pytest.mark.parametrize("theta", [0.45, 0.0005])  # sparse codes (sparse kernels), then dense ones (dense path)
def test_the_forward_runs_densely_while_the_window_is_wide(theta):
    """Sparse == dense gradients for every family: tests/test_families.py; here, which path JumpReLU takes."""
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    outs = {kernel: _sae(kernel, theta)(x) for kernel in ("sparse", "dense")}
    sparse_codes = outs["sparse"].top_idx_BK is not None
    assert sparse_codes == (theta > 0.1)  # the dense phase ran densely, the sparse one on the selected entries
    if sparse_codes:  # the selection: the active entries and those within eps/2 below theta, a few per token
        assert float(outs["sparse"].l0) <= DENSE_WHILE_WIDER_THAN * 256
    assert float(outs["sparse"].l0) == pytest.approx(float(outs["dense"].l0))


def test_l0_penalty_sets_the_l0_and_the_thresholds_are_saved(tmp_path):
    from saelab.acts.cache import cache_from_tensor
    from saelab.evals.reconstruction import reconstruction_metrics
    from saelab.teach.toy import ToyConfig, make_toy
    from saelab.training.trainer import TrainConfig, Trainer

    x = make_toy(ToyConfig(n_samples=12288)).x_BD.float()
    cache = cache_from_tensor(x[2048:], tmp_path / "cache", name="toy")
    l0 = {}
    for coef in (0.002, 0.02):
        cfg = TrainConfig(n_latents=256, activation="jumprelu", l0_coef=coef, k_aux=0, batch_size=512, epochs=4.0,
                          lr=2e-3, eval_every=10**9, checkpoint_every=0, progress=False, rescale_encoder_init=True)
        trainer = Trainer(cfg, cache, tmp_path / f"run-{coef}")
        trainer.train()
        sae = SAE.load(tmp_path / f"run-{coef}" / "sae")
        assert float(sae.threshold.detach().mean()) > sae.cfg.jumprelu_init_threshold  # the thresholds moved up
        torch.testing.assert_close(sae.threshold, trainer.sae.threshold.detach())
        l0[coef] = reconstruction_metrics(sae, x[:2048])["l0"]
    assert l0[0.02] < 0.7 * l0[0.002], l0  # a larger L0 coefficient gives sparser codes


def test_a_jumprelu_run_without_the_encoder_rescale_is_warned():
    from saelab.training.trainer import TrainConfig

    with pytest.warns(UserWarning, match="rescale_encoder_init"):
        TrainConfig(activation="jumprelu", l0_coef=0.002)

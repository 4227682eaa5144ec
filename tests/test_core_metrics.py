"""SAEBench's core metrics (saelab.evals.core) on cases worked by hand."""

import math

import pytest
import torch

from saelab.evals.core import core_from_acts, density_metrics, downstream_names

X = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
XH = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
Z = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 2.0, 0.0, 0.0]])


def test_reconstruction_metrics_by_hand():
    m = core_from_acts(X, XH, Z)
    # mean [1, 2]; ||x - mean||^2 = 5 and 5; ||x - x_hat||^2 = 1 and 1
    assert m["explained_variance"] == pytest.approx(1 - 1 / 5)
    assert m["explained_variance_legacy"] == pytest.approx(((1 - 1 / 5) + (1 - 1 / 5)) / 2)
    # sae-bench 0.6.0's code: E||x||^2 = 10, (E||x||^2 / d)^2 = 25, so 1 - 1 / (10 - 25)
    assert m["explained_variance_saebench_0_6_0"] == pytest.approx(1 + 1 / 15)
    # cos([2,0],[2,1]) = 4 / (2 sqrt 5); cos([0,4],[0,3]) = 1
    assert m["cossim"] == pytest.approx((2 / math.sqrt(5) + 1) / 2)
    assert m["l2_ratio"] == pytest.approx((math.sqrt(5) / 2 + 3 / 4) / 2)
    # E||x_hat||^2 = (5 + 9) / 2 = 7; E[x . x_hat] = (4 + 12) / 2 = 8
    assert m["relative_reconstruction_bias"] == pytest.approx(7 / 8)
    assert m["l0"] == pytest.approx(1.5) and m["l1"] == pytest.approx((1 + 2.5) / 2) and m["tokens"] == 2


def test_a_perfect_and_a_mean_reconstruction():
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)) + 3
    perfect = core_from_acts(x, x, torch.ones(64, 4))
    assert perfect["explained_variance"] == pytest.approx(1) and perfect["cossim"] == pytest.approx(1)
    assert perfect["l2_ratio"] == pytest.approx(1) and perfect["relative_reconstruction_bias"] == pytest.approx(1)
    mean = core_from_acts(x, x.mean(0).expand_as(x), torch.ones(64, 4))
    assert mean["explained_variance"] == pytest.approx(0, abs=1e-9)  # predicting the mean explains nothing
    shrunk = core_from_acts(x, 0.5 * x, torch.ones(64, 4))
    assert shrunk["relative_reconstruction_bias"] == pytest.approx(0.5)  # ||0.5x||^2 / (x . 0.5x)


def test_feature_density_by_hand():
    m = density_metrics(torch.tensor([0.5, 0.05, 0.005, 0.0]))
    assert m["frac_alive"] == pytest.approx(3 / 4)
    assert m["freq_over_1_percent"] == pytest.approx(2 / 4) and m["freq_over_10_percent"] == pytest.approx(1 / 4)
    assert m["normalized_freq_over_1_percent"] == pytest.approx(0.55 / 0.555)
    assert m["normalized_freq_over_10_percent"] == pytest.approx(0.5 / 0.555)
    h = m["feature_density_histogram"]
    assert h["dead"] == 1 and sum(h["counts"]) == 3
    edges = h["log10_edges"]
    for value in (0.5, 0.05, 0.005):  # each live latent in the bin that holds its log10 density
        i = max(j for j in range(len(edges) - 1) if edges[j] <= math.log10(value))
        assert h["counts"][i] >= 1
    assert core_from_acts(X, XH, Z)["frac_alive"] == pytest.approx(2 / 4)


def test_saebench_downstream_names():
    d = {"loss_recovered": 0.9, "kl": 0.2, "kl_zero": 4.0, "ce_spliced": 3.3, "ce_clean": 3.1, "ce_zero": 5.1}
    m = downstream_names(d)
    assert m["ce_loss_score"] == 0.9 and m["kl_div_score"] == pytest.approx(1 - 0.2 / 4.0)
    assert (m["ce_loss_with_sae"], m["ce_loss_without_sae"], m["ce_loss_with_ablation"]) == (3.3, 3.1, 5.1)

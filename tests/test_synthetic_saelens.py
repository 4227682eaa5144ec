"""The ground-truth benchmark on SAE Lens's own generator and evaluators (saelab.acts.synthetic_saelens): its data
keeps saelab's toy semantics (hierarchy, firing rates, magnitudes), and its scores agree with saelab's where both
measure the same thing.

Tolerance for MCC: 1e-6. Both sides are Hungarian matchings (scipy's linear_sum_assignment on 1 - |cos|) of the same
float32 cosines; saelab solves in float64, SAE Lens in float32, so the means differ by float32 rounding (~1e-7), and a
different matching under a near-tie moves the mean by no more than the tie's own gap (rounding-sized too).
"""

import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from saelab.acts.synthetic import ToyConfig, make_toy
from saelab.acts.synthetic_saelens import firing_probabilities
from saelab.evals.ground_truth import ground_truth_scores, mcc
from saelab.evals.reconstruction import reconstruction_metrics
from saelab.sae.config import SAEConfig
from saelab.sae.model import SAE

MCC_TOL = 1e-6
TOY = ToyConfig(d=32, n_features=128, n_parents=8, children_per_parent=3, child_prob=0.75, zipf_exponent=0.5,
                mean_active=4.0, n_samples=4000, seed=1)


@pytest.fixture(scope="module")
def data():
    pytest.importorskip("sae_lens.synthetic")
    from saelab.acts.synthetic_saelens import make_saelens_toy

    return make_saelens_toy(TOY)


def _unit(W):
    return W / W.norm(dim=1, keepdim=True)


def _rows(n, d, seed):
    return _unit(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)))


def _perturbed(F, seed=0):
    """Dictionaries at several distances from the truth F: noisy, partly random, permuted with flipped signs, wider
    and narrower than F."""
    g = torch.Generator().manual_seed(seed)
    n, d = F.shape
    noisy = _unit(F + 0.3 * torch.randn(F.shape, generator=g) / d ** 0.5)
    half = torch.cat([F[: n // 2], _rows(n - n // 2, d, seed + 1)])
    signs = torch.where(torch.rand(n, 1, generator=g) < 0.5, -1.0, 1.0)
    return {"noisy": noisy, "half random": half, "permuted": (noisy * signs)[torch.randperm(n, generator=g)],
            "wider": torch.cat([noisy, _rows(n // 4, d, seed + 2)]), "narrower": noisy[: 3 * n // 4],
            "random": _rows(n, d, seed + 3)}


class Oracle:
    """An 'SAE' whose codes are given (the true coefficients, or a corruption of them) and whose decoder is W_dec."""

    def __init__(self, W_dec_ND, codes_BN):
        self.W_dec, self.codes_BN, self.cfg = W_dec_ND, codes_BN, SimpleNamespace(n_latents=W_dec_ND.shape[0])

    def encode(self, x_BD):
        acts_BK, idx_BK = self.codes_BN.topk(int((self.codes_BN > 0).sum(1).max()), dim=1)
        return SimpleNamespace(top_acts_BK=acts_BK, top_idx_BK=idx_BK)

    def decode(self, acts_BK, idx_BK, x_like=None):
        return torch.zeros(len(acts_BK), self.cfg.n_latents).scatter_add(1, idx_BK, acts_BK) @ self.W_dec


def _topk_sae(W_dec_ND, k=4, dead=()):
    sae = SAE(SAEConfig(d_in=W_dec_ND.shape[1], n_latents=W_dec_ND.shape[0], k=k, activation="topk",
                        normalize="none"))
    with torch.no_grad():
        sae.W_enc.copy_(W_dec_ND)
        sae.W_dec.copy_(W_dec_ND)
        sae.b_pre.zero_()
        sae.b_enc.zero_()
        sae.b_enc[list(dead)] = -100.0  # never above zero: these latents never fire
    return sae


def test_without_sae_lens_the_error_names_the_install_command(monkeypatch):
    from saelab.acts.synthetic_saelens import saelens_model

    monkeypatch.setitem(sys.modules, "sae_lens", None)
    monkeypatch.setitem(sys.modules, "sae_lens.synthetic", None)
    with pytest.raises(ImportError) as err:
        saelens_model(TOY)
    assert "pip install -e '.[peers]'" in str(err.value) and "bash scripts/bootstrap.sh --peers" in str(err.value)


def test_firing_probabilities_are_saelabs_and_a_childs_makes_child_prob_per_parent():
    p = firing_probabilities(TOY).double()
    P, C = TOY.n_parents, TOY.children_per_parent
    kids = torch.arange(P, P + P * C)
    assert float(1 - (1 - p[kids[0]]) ** C) == pytest.approx(TOY.child_prob, abs=1e-6)
    free = torch.ones(TOY.n_features, dtype=torch.bool)
    free[kids] = False
    assert float(p[free].sum()) == pytest.approx(TOY.mean_active, rel=1e-6)
    assert bool((p[free][:-1] >= p[free][1:]).all())  # Zipf: by rank over the features that are not children


def test_the_true_dictionary_scores_mcc_one_on_both_sides(data):
    from sae_lens.synthetic import mean_correlation_coefficient

    F = data.features_FD
    assert F.shape == (TOY.n_features, TOY.d)
    assert mcc(F, F) == pytest.approx(1.0, abs=MCC_TOL)
    assert mean_correlation_coefficient(F, F) == pytest.approx(1.0, abs=MCC_TOL)


def test_mcc_agrees_with_sae_lens_on_perturbed_dictionaries(data):
    from sae_lens.synthetic import mean_correlation_coefficient

    F = data.features_FD
    values = {}
    for name, W in _perturbed(F).items():
        ours, theirs = mcc(W, F), mean_correlation_coefficient(W, F)
        assert abs(ours - theirs) <= MCC_TOL, (name, ours, theirs)
        values[name] = ours
    assert values["random"] < values["half random"] < values["noisy"] < 1 - 1e-3  # the cases differ: not all 1


def test_hierarchy_is_saelens_own_and_matches_saelabs_layout(data):
    assert torch.equal(data.parent_F, make_toy(TOY).parent_F)  # read from SAE Lens's nodes, not assumed
    on, parent = data.coeffs_BF > 0, data.parent_F
    kids = (parent >= 0).nonzero().squeeze(1)
    assert len(kids) == TOY.n_parents * TOY.children_per_parent
    assert int((on[:, kids] & ~on[:, parent[kids]]).sum()) == 0  # no child without its parent
    per_parent = on[:, kids].view(len(on), TOY.n_parents, TOY.children_per_parent).sum(-1)
    assert int(per_parent.max()) == 1 and int(per_parent.sum()) > 0  # mutually exclusive, and children do fire
    assert torch.allclose(data.x_BD, data.coeffs_BF @ data.features_FD, atol=1e-5)  # no bias, no noise


def test_firing_rates_and_magnitudes_are_saelabs_toy():
    """Per feature, the rate saelab's toy means (a child: its parent's rate x child_prob / C) holds on both
    generators' samples (|z| < 5 over all features), and the magnitudes have the same mean and spread."""
    pytest.importorskip("sae_lens.synthetic")
    from saelab.acts.synthetic_saelens import make_saelens_toy

    cfg = replace(TOY, n_samples=20000)
    P, C = cfg.n_parents, cfg.children_per_parent
    rate = firing_probabilities(cfg).double()
    rate[P:P + P * C] = rate[:P].repeat_interleave(C) * cfg.child_prob / C
    for made in (make_toy(cfg), make_saelens_toy(cfg)):
        on = made.coeffs_BF > 0
        z = (on.double().mean(0) - rate) / (rate * (1 - rate) / len(on)).sqrt()
        assert float(z.abs().max()) < 5
        mags = made.coeffs_BF[on].double()
        assert float(mags.mean()) == pytest.approx(1.0, abs=0.01)
        assert float(mags.std()) == pytest.approx(12 ** -0.5, abs=0.01)


def test_scores_of_an_sae_agree_with_saelabs(data):
    """A TopK SAE on a perturbed dictionary, with a few latents that never fire: SAE Lens's MCC, dead latents, L0
    and explained variance are saelab's MCC, dead x n_latents, L0 and 1 - nmse."""
    from saelab.evals.ground_truth_saelens import saelens_scores

    x, F, c = data.x_BD, data.features_FD, data.coeffs_BF
    sae = _topk_sae(_perturbed(F)["wider"], k=4, dead=range(5))
    ours = ground_truth_scores(sae, x, F, c, data.parent_F)
    theirs = saelens_scores(sae, x, F, c)
    n = sae.cfg.n_latents
    assert abs(ours["mcc"] - theirs["saelens_mcc"]) <= MCC_TOL
    assert theirs["saelens_dead_latents"] == round(ours["dead"] * n) >= 5
    assert theirs["saelens_l0"] == pytest.approx(ours["l0"], abs=1e-6) and 3 < ours["l0"] <= 4
    nmse = reconstruction_metrics(sae, x)["nmse"]
    assert theirs["saelens_explained_variance"] == pytest.approx(1 - nmse, abs=1e-5) and 0 < nmse < 1
    assert theirs["saelens_true_l0"] == pytest.approx(float((c > 0).sum(1).float().mean()), abs=1e-6)


def test_the_true_codes_score_perfectly_and_corruptions_cost_what_they_should(data):
    from saelab.evals.ground_truth_saelens import saelens_scores

    x, F, c = data.x_BD, data.features_FD, data.coeffs_BF
    n, m = TOY.n_features, 10
    perfect = saelens_scores(Oracle(F, c), x, F, c)
    for key in ("mcc", "uniqueness", "precision", "recall", "f1_score", "accuracy", "explained_variance", "shrinkage"):
        assert perfect[f"saelens_{key}"] == pytest.approx(1.0, abs=1e-5), key
    assert perfect["saelens_dead_latents"] == 0 and perfect["saelens_l0"] == perfect["saelens_true_l0"]

    silenced = c.clone()
    silenced[:, :m] = 0  # m latents never fire: precision and recall 0 for them (SAE Lens's convention)
    quiet = saelens_scores(Oracle(F, silenced), x, F, c)
    assert quiet["saelens_dead_latents"] == m == round(ground_truth_scores(Oracle(F, silenced), x, F, c)["dead"] * n)
    for key in ("precision", "recall", "f1_score"):
        assert quiet[f"saelens_{key}"] == pytest.approx((n - m) / n, abs=1e-6), key

    twins = Oracle(torch.cat([F, F[:m]]), torch.cat([c, c[:, :m]], dim=1))  # m latents duplicated, codes too
    dup = saelens_scores(twins, x, F, c)
    assert dup["saelens_uniqueness"] == pytest.approx(n / (n + m))
    assert dup["saelens_f1_score"] == pytest.approx(1.0, abs=1e-6)  # a duplicate detects its feature perfectly ...
    assert ground_truth_scores(twins, x, F, c)["duplicates"] == pytest.approx(2 * m / (n + m))  # ... saelab flags both


def test_a_single_child_per_parent_is_refused_and_the_bench_knows_its_generators():
    pytest.importorskip("sae_lens.synthetic")
    from saelab.acts.synthetic_saelens import saelens_model
    from saelab.studies.synthetic_bench import SyntheticBenchConfig

    with pytest.raises(ValueError, match="at least 2 children"):
        saelens_model(ToyConfig(n_features=32, n_parents=4, children_per_parent=1))
    with pytest.raises(ValueError, match="generator"):
        SyntheticBenchConfig(generator="sparsify")
    with pytest.raises(ValueError, match="correlated_pairs=0"):  # the bench's default data has them
        saelens_model(SyntheticBenchConfig().data)


def test_the_synthetic_bench_on_saelens_data_adds_saelens_columns():
    pytest.importorskip("sae_lens.synthetic")
    from saelab.studies.synthetic_bench import SyntheticBenchConfig, run_synthetic_bench

    data = ToyConfig(d=16, n_features=64, n_parents=4, children_per_parent=3, mean_active=3, n_samples=3072)
    cfg = SyntheticBenchConfig(data=data, held_out=1024, n_latents=64, epochs=1.0, batch_size=512, families="topk",
                               generator="saelens")
    df = run_synthetic_bench(cfg, log=lambda m: None)
    row = df.iloc[0]
    assert list(df.family) == ["topk"] and abs(row.mcc - row.saelens_mcc) <= MCC_TOL
    assert row.saelens_l0 == pytest.approx(row.l0, abs=1e-6) and 0 <= row.saelens_f1_score <= 1

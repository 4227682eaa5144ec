"""Ground truth: an SAE scored against the features that made its data (saelab.evals.ground_truth), the toy's
hierarchy, and agreement with SAE Lens's own synthetic evaluator."""

from dataclasses import replace

import pytest
import torch

from saelab.evals.ground_truth import absorption, dead_and_duplicates, ground_truth_scores, mcc, recovered
from saelab.sae.config import SAEConfig
from saelab.sae.model import SAE
from saelab.teach.toy import ToyConfig, make_toy


def _unit_rows(n, d, seed):
    W = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return W / W.norm(dim=1, keepdim=True)


def test_mcc_is_one_for_the_true_dictionary_and_near_chance_for_a_random_one():
    F = _unit_rows(128, 64, 0)
    perm = torch.randperm(128, generator=torch.Generator().manual_seed(1))
    signs = torch.where(torch.arange(128) % 2 == 0, 1.0, -1.0)[:, None]
    assert mcc(F[perm] * signs, F) == pytest.approx(1.0, abs=1e-6)  # any order, any sign
    assert recovered(F[perm], F) == 1.0 and recovered(-F, F) == 0.0  # recovered is signed
    chance = [mcc(_unit_rows(128, 64, s), F) for s in range(2, 12)]
    mean, sd = sum(chance) / 10, (sum((c - sum(chance) / 10) ** 2 for c in chance) / 9) ** 0.5
    one = mcc(_unit_rows(128, 64, 99), F)
    assert abs(one - mean) < 4 * sd + 1e-3 and 0.15 < one < 0.5  # well above one random pair's E|cos| ~ 0.1
    half = torch.cat([F[:64], _unit_rows(64, 64, 7)])
    assert mcc(half, F) == pytest.approx((1 + mean) / 2, abs=0.05)


def _orthonormal_data(n_samples=6000):
    """Orthonormal true features (so a ReLU SAE with W_enc = W_dec = F reads the codes exactly) with a hierarchy."""
    cfg = ToyConfig(d=64, n_features=32, n_parents=4, children_per_parent=2, mean_active=3, n_samples=n_samples,
                    child_prob=0.8, seed=3)
    data = make_toy(cfg)
    Q, _ = torch.linalg.qr(torch.randn(64, 32, generator=torch.Generator().manual_seed(5)))
    F = Q.T.contiguous()  # [32, 64] orthonormal rows
    return data.coeffs_BF @ F, F, data.coeffs_BF, data.parent_F


def _sae(W_enc, W_dec):
    sae = SAE(SAEConfig(d_in=W_dec.shape[1], n_latents=W_dec.shape[0], k=4, activation="relu", normalize="none"))
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_enc.zero_()
        sae.b_pre.zero_()
    return sae


def test_an_sae_that_absorbs_every_parent_scores_full_absorption_and_a_clean_one_none():
    x, F, c, parent = _orthonormal_data()
    clean = ground_truth_scores(_sae(F, F), x, F, c, parent)
    assert clean["mcc"] == pytest.approx(1.0, abs=1e-5) and clean["absorption"] == 0.0
    assert clean["fully_absorbed"] == 0.0 and clean["dead"] == 0.0 and clean["duplicates"] == 0.0
    W_enc, W_dec = F.clone(), F.clone()
    for child in (parent >= 0).nonzero().squeeze(1).tolist():
        p = int(parent[child])
        W_dec[child] = (F[child] + F[p]) / 2 ** 0.5  # the child's latent carries its parent's direction ...
        W_enc[p] = W_enc[p] - 10 * F[child]  # ... and the parent's latent is silent wherever a child fires
    absorbed = ground_truth_scores(_sae(W_enc, W_dec), x, F, c, parent)
    assert absorbed["absorption"] == 1.0 and absorbed["fully_absorbed"] == 1.0
    assert absorbed["mcc"] < clean["mcc"]


def test_absorption_needs_the_childs_latent_to_carry_the_parent():
    x, F, c, parent = _orthonormal_data(2000)
    z = c.clone()
    kids = (parent >= 0).nonzero().squeeze(1)
    for child in kids.tolist():
        z[c[:, child] > 0, int(parent[child])] = 0  # parent silent where its child fires ...
    a = absorption(z, F, F, c, parent)  # ... but the child's decoder row is its own direction only: not absorption
    assert a["mean"] == 0.0
    W = F.clone()
    W[kids] = (F[kids] + F[parent[kids]]) / 2 ** 0.5
    a = absorption(z, W, F, c, parent)
    assert a["mean"] == 1.0 and len(a["pairs"]) == len(kids)


def test_a_parent_that_was_never_learned_is_not_scored_as_absorbed():
    """Issue 38, bug 3: the parent's 'latent' was its argmax decoder row with no floor, so a parent no latent learned
    was matched to another feature's latent, whose silence counted as absorption. Here the dictionary has no row
    for the parents: each parent's best row is an unrelated feature's latent that leans slightly toward it (cosine
    0.37, below the floor 0.5), and the children's rows carry their parent a little (cosine 0.29 >= 0.1)."""
    x, F, c, parent = _orthonormal_data(2000)
    kids = (parent >= 0).nonzero().squeeze(1)
    parents = sorted(set(parent[kids].tolist()))
    others = [f for f in range(len(F)) if f not in parents and f not in kids.tolist()]
    W = F.clone()
    for i, par in enumerate(parents):
        W[par] = F[others[i]] + 0.4 * F[par]  # no latent for the parent: its best row is this one (0.37)
    for child in kids.tolist():
        W[child] = F[child] + 0.3 * F[int(parent[child])]  # the child's row carries its parent a little
    W = W / W.norm(dim=1, keepdim=True)
    z = c.clone()
    z[:, parents] = c[:, [others[i] for i in range(len(parents))]]  # those rows fire with their own feature only
    a = absorption(z, W, F, c, parent)
    assert a["unrecovered_pairs"] == len(a["pairs"]) > 0 and a["recovered_pairs"] == 0
    assert a["mean"] != a["mean"]  # NaN: no pair has both latents, so there is no absorption to state
    assert a["mean_all_pairs"] > 0.5  # what the floorless score said: mostly "absorbed"
    W[parents] = F[parents]  # now the parents are learned and stay silent where a child fires: real absorption
    a = absorption(z, W, F, c, parent)
    assert a["recovered_pairs"] == len(a["pairs"]) and a["mean"] == pytest.approx(a["mean_all_pairs"])
    assert a["mean"] > 0.5


def test_dead_and_duplicate_latents_are_counted():
    F = _unit_rows(16, 32, 0)
    W = torch.cat([F, F[:2], _unit_rows(2, 32, 1)])  # 16 true, 2 duplicates, 2 others
    z = torch.ones(10, 20)
    z[:, -1] = 0  # one latent never fires
    out = dead_and_duplicates(z, W, F)
    assert out["dead"] == pytest.approx(1 / 20) and out["duplicates"] == pytest.approx(4 / 20)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_sae_does_not_start_with_the_toys_true_features(seed):
    """saelab 0.3 drew the toy's features and an SAE's initial decoder from the same random stream: at seed 0 an SAE
    with at least as many latents as features began with the true dictionary (recovered 1.0 before any step)."""
    from saelab.studies.synthetic_bench import SyntheticBenchConfig

    for data in (ToyConfig(n_samples=16), replace(SyntheticBenchConfig().data, n_samples=16, seed=seed)):
        F = make_toy(replace(data, seed=seed)).features_FD
        for n in (F.shape[0], 2 * F.shape[0]):
            sae = SAE(SAEConfig(d_in=F.shape[1], n_latents=n, k=4, normalize="none"), seed=seed)
            assert recovered(sae.W_dec.detach(), F) < 0.05, (seed, n)
            assert mcc(sae.W_dec.detach(), F) < 0.6, (seed, n)


def test_toy_hierarchy_children_fire_only_with_their_parent_and_the_default_is_unchanged():
    plain = make_toy(ToyConfig(n_samples=5000))
    assert plain.parent_F is None
    assert float((plain.coeffs_BF > 0).sum(1).float().mean()) == pytest.approx(4.0, rel=0.05)
    h = make_toy(ToyConfig(n_samples=20000, n_parents=8, children_per_parent=3, zipf_exponent=0.5, mean_active=5))
    on, p = h.coeffs_BF > 0, h.parent_F
    kids = (p >= 0).nonzero().squeeze(1)
    assert len(kids) == 24 and int((on[:, kids] & ~on[:, p[kids]]).sum()) == 0
    per_parent = on[:, kids].view(-1, 8, 3).sum(-1)
    assert int(per_parent.max()) == 1  # at most one child of a parent at a time
    free = on[:, p < 0].float().mean(0)
    assert float(free[:8].mean()) > 2 * float(free[-8:].mean())  # Zipf: early features fire more often
    with pytest.raises(ValueError, match="hierarchy"):
        ToyConfig(n_features=16, n_parents=8, children_per_parent=3)


def test_saelab_mcc_agrees_with_sae_lens_on_its_own_synthetic_data():
    synthetic = pytest.importorskip("sae_lens.synthetic")
    from sae_lens.synthetic.evals import mean_correlation_coefficient

    cfg = synthetic.SyntheticModelConfig(
        num_features=128, hidden_dim=48, bias=False, seed=0,
        firing_probability=synthetic.ZipfianFiringProbabilityConfig(exponent=0.5, max_prob=0.4, min_prob=5e-3),
        hierarchy=synthetic.HierarchyConfig(total_root_nodes=6, branching_factor=3, max_depth=2,
                                            mutually_exclusive_portion=1.0, compensate_probabilities=True))
    model = synthetic.SyntheticModel(cfg, device="cpu")
    x, f = model.sample_with_features(4000)
    F = model.feature_dict.feature_vectors.detach().float()
    for W in (F, _unit_rows(96, 48, 3), torch.cat([F[:50], _unit_rows(30, 48, 4)])):
        assert mcc(W, F) == pytest.approx(float(mean_correlation_coefficient(W, F)), abs=1e-6)
    parent = torch.full((128,), -1, dtype=torch.long)

    def walk(node):
        for child in node.children:
            if node.feature_index is not None and child.feature_index is not None:
                parent[child.feature_index] = node.feature_index
            walk(child)

    for root in model.hierarchy.roots:
        walk(root)
    kids = (parent >= 0).nonzero().squeeze(1)
    assert len(kids) > 0 and int(((f[:, kids] > 0) & ~(f[:, parent[kids]] > 0)).sum()) == 0
    truth = absorption(f.float(), F, F, f.float(), parent)  # the true codes and dictionary absorb nothing
    assert truth["mean"] == 0.0


def test_synthetic_bench_scores_every_family_on_the_same_data():
    from saelab.studies.synthetic_bench import SyntheticBenchConfig, run_synthetic_bench

    data = ToyConfig(d=16, n_features=64, n_parents=4, children_per_parent=3, mean_active=3, n_samples=5120)
    cfg = SyntheticBenchConfig(data=data, held_out=1024, n_latents=64, epochs=1.0, batch_size=512, rounds=1)
    df = run_synthetic_bench(cfg, log=lambda m: None)
    assert list(df.family) == ["topk", "batchtopk", "matryoshka", "jumprelu", "relu"]
    assert df.target_l0.nunique() == 1 and 2 < df.target_l0.iloc[0] < 4
    assert ((df.mcc > 0) & (df.mcc <= 1)).all() and ((df.absorption >= 0) & (df.absorption <= 1)).all()
    topk = df.set_index("family").loc["topk"]
    assert topk.l0 == pytest.approx(topk.k, abs=0.01)
    # the same-pairs control: TopK against itself is its own absorption over all its recovered pairs, and no family
    # shares more pairs with TopK than TopK recovered
    assert topk.absorption_shared_pairs == pytest.approx(topk.absorption)
    assert topk.topk_absorption_shared_pairs == pytest.approx(topk.absorption)
    assert (df.shared_pairs <= topk.shared_pairs).all() and topk.shared_pairs > 0


def test_shared_pair_absorption_compares_two_saes_on_the_pairs_both_recovered():
    from saelab.evals.ground_truth import shared_pair_absorption

    a = {(0, 4): 0.5, (0, 5): 0.1, (1, 6): 0.9}  # A recovered three pairs
    b = {(0, 4): 0.0, (1, 6): 0.3, (2, 8): 1.0}  # B three others, two of them shared with A
    both = shared_pair_absorption(a, b)
    assert both["n_pairs"] == 2
    assert both["a"] == pytest.approx((0.5 + 0.9) / 2) and both["b"] == pytest.approx((0.0 + 0.3) / 2)
    none = shared_pair_absorption(a, {(3, 9): 0.2})
    assert none["n_pairs"] == 0 and none["a"] != none["a"]  # NaN


def test_correlated_pairs_fire_together_and_too_many_are_refused():
    from saelab.acts.synthetic import ToyConfig as Cfg
    from saelab.acts.synthetic import make_toy as make

    cfg = Cfg(d=16, n_features=64, n_parents=4, children_per_parent=2, mean_active=4, n_samples=40_000,
              zipf_exponent=0.3, correlated_pairs=5, co_fire=0.5, seed=1)
    on = make(cfg).coeffs_BF > 0
    first = 4 + 8 + 2 * torch.arange(5)
    base = make(Cfg(**{**cfg.__dict__, "correlated_pairs": 0})).coeffs_BF > 0
    for i in first.tolist():
        p_alone = float(base[:, i + 1].float().mean())
        p_given = float(on[on[:, i], i + 1].float().mean())
        assert p_given == pytest.approx(0.5 + 0.5 * p_alone, abs=0.05)  # co-fires, or fires on its own
        assert float(on[~on[:, i], i + 1].float().mean()) == pytest.approx(p_alone, abs=0.02)
    later = first[-1] + 2  # features after the pairs are untouched
    assert torch.equal(on[:, later:], base[:, later:])
    with pytest.raises(ValueError, match="correlated pairs need 60 independent features; there are 52"):
        Cfg(n_features=64, n_parents=4, children_per_parent=2, correlated_pairs=30)


def test_synthetic_bench_over_two_seeds_summarises_and_pairs_the_per_seed_rows():
    from saelab.studies.synthetic_bench import (
        SyntheticBenchConfig,
        run_synthetic_bench,
        synthetic_comparisons,
        synthetic_summary,
    )

    data = ToyConfig(d=16, n_features=64, n_parents=4, children_per_parent=3, mean_active=3, n_samples=5120)
    cfg = SyntheticBenchConfig(data=data, held_out=1024, n_latents=64, epochs=2.0, batch_size=512, rounds=1,
                               families="topk,batchtopk")
    df = run_synthetic_bench(cfg, log=lambda m: None, seeds=2)
    assert sorted(zip(df.family, df.seed)) == [("batchtopk", 0), ("batchtopk", 1), ("topk", 0), ("topk", 1)]
    summary = synthetic_summary(df).set_index("family")
    for fam in ("topk", "batchtopk"):
        rows = df[df.family == fam]
        assert summary.loc[fam, "n_seeds"] == 2
        assert summary.loc[fam, "nmse_mean"] == pytest.approx(rows.nmse.mean())
        assert summary.loc[fam, "nmse_lo"] < summary.loc[fam, "nmse_mean"] < summary.loc[fam, "nmse_hi"]
    comp = synthetic_comparisons(df).set_index("metric")
    b, t = df[df.family == "batchtopk"].set_index("seed"), df[df.family == "topk"].set_index("seed")
    assert comp.loc["nmse", "diff_mean"] == pytest.approx(float((b.nmse - t.nmse).mean()))

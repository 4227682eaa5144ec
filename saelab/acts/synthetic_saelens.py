"""The ground-truth benchmark's data made by SAE Lens's own generator (`sae_lens.synthetic`, the SynthSAEBench
toolkit), and an SAE scored by SAE Lens's own evaluators, so the numbers are comparable with theirs.

Needs the `peers` extra (`pip install -e '.[peers]'`, or `bash scripts/bootstrap.sh --peers`); imported lazily.

What maps to what (a saelab `ToyConfig` -> a `SyntheticModel`):

    d, n_features, seed     hidden_dim, num_features, seed; the directions are SAE Lens's `FeatureDictionary` (random
                            unit rows, as saelab's; no orthogonalisation, no bias, so x = coeffs @ features exactly)
    n_parents x children    `HierarchyConfig(total_root_nodes=n_parents, branching_factor=children_per_parent,
                            max_depth=1, mutually_exclusive_portion=1.0)`: the same layout as saelab's (parents 0 ..
                            P - 1, parent p's children next, in blocks), children gated by their parent and mutually
                            exclusive; `parent_F` is read back from the hierarchy's nodes, not assumed
    mean_active, zipf       saelab's firing probabilities, exactly (1 / (rank + 1)^exponent over the features that are
                            not children, scaled to mean_active), handed to SAE Lens's `ActivationGenerator`
    child_prob              each child's own probability q = 1 - (1 - child_prob)^(1 / C): SAE Lens draws children
                            independently, gates them by the parent and keeps one active child uniformly at random,
                            so one child fires with probability child_prob given its parent, as in saelab
    magnitudes              SAE Lens's Gaussian (mean 1, std 1 / sqrt(12), clipped at 0) for saelab's uniform on
                            [0.5, 1.5]: the same mean and variance, not the same shape (0.03% of draws clip to 0 and
                            the feature is then off)
    noise                   added here: SAE Lens has no noise term

Where SAE Lens differs, plainly: it cannot give a parent a single child (its hierarchy needs 2 or more; refused here),
its own Zipfian probabilities span [min_prob, max_prob] instead of summing to a mean L0 (not used here), it
correlates features through a Gaussian copula's correlation matrix where saelab's toy has co-firing pairs (so
`correlated_pairs` is refused here), and it has what saelab's toy has not (deeper trees, orthogonalised directions,
a bias, magnitudes that vary by feature), which this mapping leaves off. The SynthSAEBench-16k model itself is a
download (`SyntheticModel.from_pretrained`), not used here. SAE Lens has no absorption metric: saelab's exact
absorption has no counterpart.

SAE Lens's scores of an SAE on these samples are evaluation code: `saelab.evals.ground_truth_saelens`.
"""

from __future__ import annotations

import torch

from saelab.acts.synthetic import ToyConfig, ToyData

MAGNITUDE_STD = 12 ** -0.5
"""The standard deviation of saelab's magnitudes (uniform on [0.5, 1.5]), given to SAE Lens's Gaussian ones."""
SAMPLE_SEED_OFFSET = 5
"""Sampling runs under seed + this (SAE Lens's `SyntheticModel` seeds its parts with seed + 0 .. 4)."""
CHUNK = 8192
"""Samples drawn per call of the generator (bounds its dense [chunk, n_features] buffers)."""


def _saelens():
    try:
        import sae_lens.synthetic as synthetic
    except ImportError as e:
        raise ImportError("SAE Lens's synthetic data and evaluators need the `peers` extra: "
                          "pip install -e '.[peers]' (or bash scripts/bootstrap.sh --peers)") from e
    return synthetic


def firing_probabilities(cfg: ToyConfig) -> torch.Tensor:
    """[n_features] saelab's probabilities (as `saelab.acts.synthetic` computes them) for features that are not
    children; for a child, the probability q that SAE Lens's draw-gate-exclude gives child_prob per parent."""
    P, C = cfg.n_parents, cfg.children_per_parent
    child_F = torch.zeros(cfg.n_features, dtype=torch.bool)
    child_F[P:P + P * C] = True
    rank = torch.arange(int((~child_F).sum()), dtype=torch.float64)
    weight = (rank + 1) ** -cfg.zipf_exponent
    prob_F = torch.zeros(cfg.n_features, dtype=torch.float64)
    prob_F[~child_F] = (weight * cfg.mean_active / weight.sum()).clamp(max=1.0)
    prob_F[child_F] = 1 - (1 - cfg.child_prob) ** (1 / max(C, 1))
    return prob_F.float()


def parents_of(hierarchy, n_features: int) -> torch.Tensor:
    """[n_features] each feature's parent (-1: none), read from an SAE Lens `Hierarchy`'s nodes."""
    parent_F = torch.full((n_features,), -1, dtype=torch.long)
    stack = list(hierarchy.roots) if hierarchy is not None else []
    while stack:
        node = stack.pop()
        for child in node.children:
            if node.feature_index is not None and child.feature_index is not None:
                parent_F[child.feature_index] = node.feature_index
            stack.append(child)
    return parent_F


def saelens_model(cfg: ToyConfig | None = None, device: str = "cpu"):
    """SAE Lens's `SyntheticModel` for saelab's toy `cfg` (see the module docstring for the mapping). Its
    `cfg.firing_probability` is SAE Lens's default and unused: the generator holds saelab's probabilities (and
    `SyntheticModel.save` stores those, so a reload samples the same way)."""
    synthetic = _saelens()
    cfg = cfg or ToyConfig()
    P, C = cfg.n_parents, cfg.children_per_parent
    if P and C == 1:
        raise ValueError("SAE Lens's hierarchies need at least 2 children per parent; children_per_parent is 1")
    if cfg.correlated_pairs:
        raise ValueError("saelab's co-firing pairs have no exact counterpart in SAE Lens's generator (it correlates "
                         "features through a Gaussian copula's correlation matrix): set correlated_pairs=0 "
                         "(--data.correlated_pairs 0) for generator='saelens'")
    hcfg = synthetic.HierarchyConfig(total_root_nodes=P, branching_factor=C, max_depth=1,
                                     mutually_exclusive_portion=1.0) if P and C else None
    mcfg = synthetic.SyntheticModelConfig(num_features=cfg.n_features, hidden_dim=cfg.d, hierarchy=hcfg,
                                          std_firing_magnitudes=MAGNITUDE_STD, mean_firing_magnitudes=1.0,
                                          bias=False, seed=cfg.seed)
    # as SyntheticModel would make it (seed + 3), made here so that its modifier goes into our generator
    hierarchy = synthetic.generate_hierarchy(cfg.n_features, hcfg, seed=cfg.seed + 3) if hcfg else None
    generator = synthetic.ActivationGenerator(
        num_features=cfg.n_features, firing_probabilities=firing_probabilities(cfg),
        std_firing_magnitudes=MAGNITUDE_STD, mean_firing_magnitudes=1.0,
        modify_activations=hierarchy.modifier if hierarchy else None, device=device)
    return synthetic.SyntheticModel(mcfg, activation_generator=generator, hierarchy=hierarchy, device=device)


def make_saelens_toy(cfg: ToyConfig | None = None, device: str = "cpu") -> ToyData:
    """saelab's `ToyData` (x, features, coefficients, parents) sampled by SAE Lens's generator: `make_toy`'s
    counterpart, seeded by cfg.seed (the global torch RNG is left as it was)."""
    from sae_lens.util import temporary_seed

    cfg = cfg or ToyConfig()
    model = saelens_model(cfg, device)
    xs, cs = [], []
    with temporary_seed(cfg.seed + SAMPLE_SEED_OFFSET):
        for start in range(0, cfg.n_samples, CHUNK):
            x_BD, c_BF = model.sample_with_features(min(CHUNK, cfg.n_samples - start))
            xs.append(x_BD.cpu())
            cs.append(c_BF.cpu())
    x_BD, c_BF = torch.cat(xs), torch.cat(cs)
    if cfg.noise:
        x_BD = x_BD + cfg.noise * torch.randn(x_BD.shape, generator=torch.Generator().manual_seed(cfg.seed + 6))
    parent_F = parents_of(model.hierarchy, cfg.n_features) if cfg.n_parents or cfg.zipf_exponent else None
    return ToyData(x_BD=x_BD, features_FD=model.feature_dict.feature_vectors.detach().cpu().clone(), coeffs_BF=c_BF,
                   parent_F=parent_F)

"""Every SAE family on synthetic data whose features are known: MCC, recovery, exact absorption, dead and duplicate
latents at matched L0 (`saelab.evals.ground_truth` on `saelab.acts.synthetic` data with a hierarchy).

The data: `n_features` unit directions in `d` dimensions, a hierarchy of parents whose children fire only inside
them (at most one child at a time), Zipf-like frequencies, 32 pairs of independent features that fire together half
the time. Each family trains with the same recipe on the same
samples for the same steps (TopK, BatchTopK and Matryoshka at k = the true mean L0; JumpReLU and ReLU + L1 at a
coefficient searched for it, as `saelab frontier` does) and is scored on held-out samples.

With `generator="saelens"` the same `ToyConfig` is sampled by SAE Lens's own generator instead
(`saelab.acts.synthetic_saelens`, needs the `peers` extra), and SAE Lens's own scores join saelab's as `saelens_*`
columns (`saelens_mcc`, `saelens_f1`, ...); SAE Lens correlates features another way (a Gaussian copula), so that
generator needs `correlated_pairs=0`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from saelab.acts.synthetic import ToyConfig
from saelab.evals.ground_truth import ground_truth_scores
from saelab.evals.reconstruction import reconstruction_metrics
from saelab.sae.families import FAMILIES, family_of, studied
from saelab.studies.frontier import matched_points
from saelab.training.trainer import TrainConfig, Trainer


def _default_data() -> ToyConfig:
    return ToyConfig(d=64, n_features=512, n_parents=32, children_per_parent=4, child_prob=0.75, zipf_exponent=0.5,
                     mean_active=6.0, n_samples=128_192, correlated_pairs=32, co_fire=0.5)


@dataclass
class SyntheticBenchConfig:
    """The synthetic data and the SAEs trained on it."""

    data: ToyConfig = field(default_factory=_default_data)
    """The synthetic activations (the first `held_out` samples are held out for scoring)."""
    held_out: int = 8192
    """Samples held out for scoring."""
    n_latents: int = 512
    """Latents of every SAE."""
    epochs: float = 4.0
    """Passes over the training samples."""
    batch_size: int = 1024
    """Samples per step."""
    lr: float = 2e-3
    """Learning rate of every family."""
    families: str = ",".join(studied())
    """Comma-separated families (those of `saelab frontier`: every studied family of `saelab.sae.families`)."""
    rounds: int = 4
    """Refits of the penalised families' coefficients (as `saelab frontier`'s search)."""
    seed: int = 0
    """Seed of the SAEs' initialisation and batches."""
    generator: str = "saelab"
    """Who samples the data: 'saelab' (`saelab.acts.synthetic`) or 'saelens' (SAE Lens's `sae_lens.synthetic`,
    which also adds its scores as `saelens_*` columns)."""

    def __post_init__(self):
        if self.generator not in GENERATORS:
            raise ValueError(f"generator must be one of {GENERATORS}, got {self.generator!r}")


GENERATORS = ("saelab", "saelens")


def fast_synthetic_config() -> SyntheticBenchConfig:
    """CI's size: 40,960 samples (32,768 to train on), 2 epochs, 2 refits: about 10 s for the five families (the
    default size: about 40 s)."""
    return SyntheticBenchConfig(data=replace(_default_data(), n_samples=40_960), epochs=2.0, rounds=2)

def _recipe(family: str) -> dict:
    """The family's study recipe (`Family.recipe`) with its synthetic changes, at the benchmark's own learning rate.
    The penalised families start their search at `Penalty.synthetic_guess` (at the default data's L0, ~7: ReLU + L1
    0.11 gave L0 25 and JumpReLU 0.25 gave L0 10.7, 2026-12-02)."""
    fam = FAMILIES[family]
    return {key: v for key, v in {**fam.recipe, **fam.synthetic_recipe}.items() if key != "lr"}


def bench_train_config(cfg: SyntheticBenchConfig, family: str, k: int) -> TrainConfig:
    """The benchmark's recipe for one family at k (the penalised families at their coefficient's default)."""
    return TrainConfig(n_latents=cfg.n_latents, k=k, batch_size=cfg.batch_size, epochs=cfg.epochs, lr=cfg.lr,
                       normalize="none", eval_every=10**9, checkpoint_every=0, keep_checkpoints=0, progress=False,
                       seed=cfg.seed, dead_tokens=20 * cfg.batch_size, **_recipe(family))


def run_synthetic_bench(cfg: SyntheticBenchConfig | None = None, log=print, device="cpu"):
    """Train and score every family; returns a pandas DataFrame (one row per family). The default data holds
    120,000 training samples after the 8,192 held out."""
    import pandas as pd

    from saelab.acts.synthetic import make_toy

    cfg = cfg or SyntheticBenchConfig()
    saelens = cfg.generator == "saelens"
    if saelens:
        from saelab.acts.synthetic_saelens import make_saelens_toy
        from saelab.evals.ground_truth_saelens import saelens_scores
    data = make_saelens_toy(cfg.data) if saelens else make_toy(cfg.data)
    x, c = data.x_BD.float(), data.coeffs_BF
    held, held_c, train = x[:cfg.held_out], c[:cfg.held_out], x[cfg.held_out:]
    target = float((c[cfg.held_out:] > 0).sum(1).float().mean())  # the data's own mean L0
    k = max(1, round(target))
    base = bench_train_config(cfg, "topk", k)
    rows = []

    def train_and_score(tcfg: TrainConfig) -> dict:
        trainer = Trainer(tcfg, train, device=device)  # in memory: nothing written
        trainer.train()
        sae, fam = trainer.sae, family_of(tcfg.sae)
        r = reconstruction_metrics(sae, held)
        row = {"family": fam.name, "k": tcfg.k, "coef": fam.coef(tcfg.sae), "l0": r["l0"], "nmse": r["nmse"],
               **ground_truth_scores(sae, held, data.features_FD, held_c, data.parent_F)}
        if saelens:
            row.update(saelens_scores(sae, held, data.features_FD, held_c))
        log(f"synthetic: {row['family']} -> L0 {row['l0']:.2f}, MCC {row['mcc']:.3f}, "
            f"absorption {row.get('absorption', float('nan')):.3f}")
        return row

    for fam in [f.strip() for f in cfg.families.split(",") if f.strip()]:
        recipe, penalty = _recipe(fam), FAMILIES[fam].penalty
        if penalty:
            chosen, _ = matched_points(base, fam, [target], lambda c_, coef=penalty.coef, recipe=recipe: {
                coef: c_, **train_and_score(replace(base, **{**recipe, coef: c_}))}, tol=0.15, rounds=cfg.rounds,
                start=penalty.synthetic_guess * (target / 32) ** (1 / penalty.slope))  # the guess at this target
            rows.append({**chosen[target], "target_l0": target})
        else:
            rows.append({**train_and_score(replace(base, **recipe)), "target_l0": target})
    df = pd.DataFrame(rows)
    columns = [c_ for c_ in ("family", "target_l0", "l0", "nmse", "mcc", "recovered", "absorption", "fully_absorbed",
                             "dead", "duplicates", "k", "coef") if c_ in df]
    return df[columns + [c_ for c_ in df if c_.startswith("saelens_")]]  # SAE Lens's scores, when it made the data


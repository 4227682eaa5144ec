"""Feature absorption on the language model: SAEBench 0.6.0's first-letter metric (Chanin et al. 2024, "A is for
Absorption", arXiv 2409.14507; the absorption fraction is Demian Till's addition in SAEBench).

On the spelling data of `saelab.evals.spelling` (the residual at the word of "{word} has the first letter:"):
1. the ground-truth probe, one logistic probe per letter on the residual; a letter counts only if its probe's test
   F1 is > 0.6, and the metric is read only if at least 20 letters count (SAEBench's quality gate);
2. each letter's main latents by k-sparse probing on the SAE's codes: an L1-penalised probe (0.01) ranks latents
   by their signed weight for the letter, a `LogisticRegression(class_weight="balanced")` on the top k for
   k = 1..10, and k grows while the test F1 rises by more than 0.03 (more than one main latent: a feature split);
3. for every test word the probe gets right (its true positives), with p the unit probe direction, P = x . p and
   proj_i the projection of latent i's contribution on p:
   - absorption fraction: main = sum of proj over the main latents; the absorbers are the other latents with
     cos(p, W_dec_i) >= 0.1 and proj_i > 0, at most the top 3, summing to T. The fraction is 0 if main >= P or
     T / P < 0.4; else 1 if main <= 0; else A / (A + main) with A = min(T, P - main), clipped to [0, 1];
   - full absorption: every main latent silent (< 1e-8), and the latent with the largest proj has cosine >= 0.025
     with p, P >= 0 and proj_top / P >= 0.4;
4. per letter the mean fraction and the full-absorption rate over its true positives; the scores are their
   unweighted means over the letters that pass the gate.

Where saelab differs from SAEBench, and why:
- proj_i = a_i * ||W_dec_i|| * cos_i * s (s: the SAE's input normalisation undone), the latent's actual
  contribution to the reconstruction along p in the residual's units. SAEBench's a_i * cos_i is the same when the
  decoder rows have unit norm and the SAE reads raw activations (its SAE Lens SAEs after `fold_W_dec_norm`);
  saelab's SAEs may normalise their inputs.
- the absorption step reuses the probe's test-split residuals (10 examples from the test words, no leading newline)
  instead of a second forward pass with examples redrawn from the whole vocabulary and a newline before the first
  (SAEBench 0.6.0's calculator), which would cost 20% more LM time.
- the k-sparse L1 probe trains in batches of 512, not 4,096 (`AbsorptionConfig.sparse_batch_size`: with fewer words,
  4,096 would leave it 50 steps in all).
- the fraction is 0 where P <= 0 (SAEBench: 0 where P < 0, undefined at 0); the standard deviations over letters are
  reported beside the means.
- fewer words (`SpellingConfig.max_words`), no BOS, a seed: see `saelab.evals.spelling`.
- when fewer than 20 letters pass, SAEBench prints a message and scores nothing; saelab returns NaN scores with
  `readable: False` and the per-letter numbers, so the reason can be read.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from saelab.evals.spelling import (
    LETTERS,
    SpellingConfig,
    SpellingData,
    binary_f1,
    collect_spelling,
    f1_scores,
    letter_probe,
    train_multi_probe,
)
from saelab.lm.models import LM
from saelab.sae.model import SAE, encode_dense


@dataclass
class AbsorptionConfig:
    """SAEBench's settings (eval_config.py and the calculator's defaults)."""

    spelling: SpellingConfig = field(default_factory=SpellingConfig)
    """The prompts and the ground-truth probe."""
    min_probe_f1: float = 0.6
    """A letter counts when its probe's test F1 is above this."""
    min_letters: int = 20
    """The metric is read only when at least this many letters count."""
    max_k: int = 10
    """The most main latents a letter may have (k-sparse probes for k = 1 .. max_k)."""
    f1_jump: float = 0.03
    """k grows while the k-sparse probe's test F1 rises by more than this."""
    l1_decay: float = 0.01
    """L1 coefficient of the probe that ranks latents."""
    sparse_lr: float = 0.01
    """Its first learning rate (Adam), decaying exponentially to `sparse_end_lr`."""
    sparse_end_lr: float = 1e-5
    """Its last learning rate."""
    sparse_weight_decay: float = 1e-6
    """Its weight decay."""
    sparse_epochs: int = 50
    """Its epochs."""
    sparse_batch_size: int = 512
    """SAEBench: 4,096, which over its 25,000+ training words gives the L1 probe about 6 steps an epoch; over saelab's
    3,200 it would give 1 (50 in all), too few to move the weights off their random init (tests/test_absorption.py's
    planted case shows it), so 512: 6-7 steps an epoch at the default 4,000 words."""
    absorber_cos: float = 0.1
    """An absorber's decoder row has at least this cosine with the probe direction."""
    max_absorbers: int = 3
    """At most this many absorbers count (those with the largest projections)."""
    proportion: float = 0.4
    """The absorbers' (or, for full absorption, the top latent's) share of the probe projection needed."""
    full_cos: float = 0.025
    """Full absorption: the top latent's decoder cosine with the probe direction is at least this."""
    silent: float = 1e-8
    """A main latent is silent below this activation."""


def fast_absorption_config() -> AbsorptionConfig:
    """CI's size: 600 words (about a minute of SmolLM2 on 2 cores); too few for the gate to pass, so it checks the
    pipeline, not the model."""
    return AbsorptionConfig(spelling=SpellingConfig(max_words=600))


def split_rule(f1_by_k: list[float], jump: float = 0.03) -> int:
    """How many of the ranked latents are main: k grows while the test F1 rises by more than `jump` (k = 1 always)."""
    best, chosen = -100.0, 0
    for k, f1 in enumerate(f1_by_k, start=1):
        if f1 <= best + jump:
            break
        best, chosen = f1, k
    return chosen


def main_latents(z_train: torch.Tensor, y_train: torch.Tensor, z_test: torch.Tensor, y_test: torch.Tensor,
                 cfg: AbsorptionConfig) -> dict[int, dict]:
    """Per letter present in the train split: {'latents': main latents, 'f1_by_k': test F1 of the k-sparse probes}."""
    from sklearn.linear_model import LogisticRegression

    l1 = train_multi_probe(z_train, y_train, cfg.sparse_epochs, cfg.sparse_batch_size, cfg.sparse_lr,
                           cfg.sparse_end_lr, cfg.sparse_weight_decay, l1=cfg.l1_decay, seed=cfg.spelling.seed)
    out = {}
    for letter in sorted(set(y_train.tolist())):
        ranked = l1.weight[letter].detach().topk(min(cfg.max_k, z_train.shape[1])).indices
        f1s = []
        for k in range(1, len(ranked) + 1):
            feats = ranked[:k]
            clf = LogisticRegression(max_iter=500, class_weight="balanced")
            clf.fit(z_train[:, feats].double().numpy(), (y_train == letter).numpy())
            pred = torch.from_numpy(clf.decision_function(z_test[:, feats].double().numpy()) > 0)
            f1s.append(binary_f1(pred, y_test == letter))
        out[letter] = {"latents": ranked[:split_rule(f1s, cfg.f1_jump)].tolist(), "f1_by_k": f1s}
    return out


def absorption_fraction(proj_WN: torch.Tensor, cos_N: torch.Tensor, main_N: torch.Tensor, P_W: torch.Tensor,
                        cfg: AbsorptionConfig | None = None) -> torch.Tensor:
    """[W] absorption fraction per word (step 3 of the module docstring); main_N: bool mask of the main latents."""
    cfg = cfg or AbsorptionConfig()
    main = proj_WN[:, main_N].sum(1)
    cand = torch.where((~main_N & (cos_N >= cfg.absorber_cos))[None] & (proj_WN > 0), proj_WN, 0.0)
    T = cand.topk(min(cfg.max_absorbers, cand.shape[1]), dim=1).values.sum(1)
    A = torch.minimum(T, P_W - main)
    frac = torch.where(main <= 0, 1.0, (A / (A + main)).clamp(0, 1))
    return torch.where((P_W <= 0) | (main >= P_W) | (T / P_W < cfg.proportion), 0.0, frac)


def full_absorption(acts_WN: torch.Tensor, proj_WN: torch.Tensor, cos_N: torch.Tensor, main_N: torch.Tensor,
                    P_W: torch.Tensor, cfg: AbsorptionConfig | None = None) -> torch.Tensor:
    """[W] bool: the main latents silent and one other latent carrying the probe's projection (module docstring)."""
    cfg = cfg or AbsorptionConfig()
    top_proj, top = proj_WN.max(1)
    return ((acts_WN[:, main_N].abs() < cfg.silent).all(1) & (cos_N[top] >= cfg.full_cos) & (P_W >= 0)
            & (top_proj / P_W >= cfg.proportion))


@torch.no_grad()
def latent_projections(sae: SAE, x_WD: torch.Tensor, p_D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    """(dense codes [W, n], proj [W, n]: each latent's contribution to the reconstruction projected on the unit
    direction p, in the residual's units, cos [n]: each decoder row's cosine with p)."""
    x = x_WD.to(sae.W_enc.device, sae.W_enc.dtype)
    z = encode_dense(sae, x)
    scale = sae.preprocess(x)[1].scale
    scale = scale.float().cpu().reshape(-1, 1) if torch.is_tensor(scale) else torch.tensor([[float(scale)]])
    W_dec = sae.W_dec.detach().float().cpu()
    dots = W_dec @ p_D.float()
    return z, z * dots[None] * scale, dots / W_dec.norm(dim=1).clamp_min(1e-12)


def score_sae(sae: SAE, data: SpellingData, probe: torch.nn.Linear, cfg: AbsorptionConfig | None = None) -> dict:
    """Steps 2-4 for one SAE on collected spelling data and a trained ground-truth probe."""
    cfg = cfg or AbsorptionConfig()
    z = encode_dense(sae, data.x_WD)
    tr, te = ~data.test_W, data.test_W
    mains = main_latents(z[tr], data.letter_W[tr], z[te], data.letter_W[te], cfg)
    with torch.no_grad():
        logits = probe(data.x_WD[te])
    probe_f1 = f1_scores(logits > 0, data.letter_W[te])
    letters = {}
    for letter, m in mains.items():
        tp = te.nonzero().squeeze(1)[(data.letter_W[te] == letter) & (logits[:, letter] > 0)]
        if not len(tp):
            continue
        p = probe.weight[letter].detach() / probe.weight[letter].detach().norm()
        _, proj, cos = latent_projections(sae, data.x_WD[tp], p)
        main = torch.zeros(len(cos), dtype=torch.bool)
        main[m["latents"]] = True
        P = data.x_WD[tp] @ p
        frac = absorption_fraction(proj, cos, main, P, cfg)
        full = full_absorption(z[tp], proj, cos, main, P, cfg)
        letters[LETTERS[letter]] = {"probe_f1": float(probe_f1[letter]), "true_positives": len(tp),
                                    "main_latents": m["latents"], "sparse_f1": m["f1_by_k"],
                                    "absorption": float(frac.mean()), "full_absorption": float(full.float().mean())}
    passing = {k: v for k, v in letters.items() if v["probe_f1"] > cfg.min_probe_f1}
    readable = len(passing) >= cfg.min_letters

    def mean(values):
        return sum(values) / len(values) if values else math.nan

    def std(values):  # the sample standard deviation over letters, as SAEBench's statistics.stdev
        return statistics.stdev(values) if len(values) > 1 else math.nan

    frac = [v["absorption"] for v in passing.values()]
    full = [v["full_absorption"] for v in passing.values()]
    split = [len(v["main_latents"]) for v in passing.values()]
    over = {"absorption": mean(frac), "full_absorption": mean(full), "split_features": mean(split),
            "absorption_std": std(frac), "full_absorption_std": std(full)}
    return {**{k: v if readable else math.nan for k, v in over.items()}, "readable": readable,
            "letters_passing": len(passing), **{f"{k}_over_passing": v for k, v in over.items()}, "letters": letters}


def first_letter_absorption(lm: LM, saes: dict[str, SAE], cfg: AbsorptionConfig | None = None,
                            progress: bool = False) -> dict:
    """The metric for every SAE (one spelling set and probe per site the SAEs read). JSON-able."""
    from saelab.evals.splice import SpliceSite

    cfg = cfg or AbsorptionConfig()
    out: dict = {"config": asdict(cfg), "saes": {}, "sites": {}, "seconds": {}}
    by_site: dict[tuple[str, int], list[str]] = {}
    for name, sae in saes.items():
        where = SpliceSite.of(sae, lm)
        by_site.setdefault((where.source, where.layer), []).append(name)
    for (site, layer), names in by_site.items():
        t = time.time()
        data = collect_spelling(lm, site, layer, cfg.spelling, progress=progress)
        probe = letter_probe(data, cfg.spelling)
        with torch.no_grad():
            f1 = f1_scores(probe(data.x_WD[data.test_W]) > 0, data.letter_W[data.test_W])
        key = f"{site}.{layer}"
        out["sites"][key] = {"words": len(data.words), "test_words": int(data.test_W.sum()),
                             "probe_f1": {c: float(v) for c, v in zip(LETTERS, f1)},
                             "letters_passing": int((f1 > cfg.min_probe_f1).sum())}
        out["seconds"][f"spelling {key}"] = time.time() - t
        for name in names:
            t = time.time()
            out["saes"][name] = {**score_sae(saes[name], data, probe, cfg), "site": key}
            out["seconds"][f"absorption {name}"] = time.time() - t
    return out


def absorption_summary(report: dict) -> str:
    """One line per SAE, saying plainly when the metric cannot be read."""
    lines = []
    for name, r in report["saes"].items():
        if r["readable"]:
            lines.append(f"{name}: absorption {r['absorption']:.3f}, full absorption {r['full_absorption']:.3f}, "
                         f"{r['split_features']:.2f} main latents per letter, over {r['letters_passing']} letters "
                         f"(std over letters {r['absorption_std']:.3f}, {r['full_absorption_std']:.3f})")
        else:
            lines.append(f"{name}: absorption cannot be read on this model: {r['letters_passing']} letters' probes "
                         f"reach F1 > {report['config']['min_probe_f1']} (SAEBench needs "
                         f"{report['config']['min_letters']}); over those, absorption "
                         f"{r['absorption_over_passing']:.3f}, full {r['full_absorption_over_passing']:.3f}")
    return "\n".join(lines)

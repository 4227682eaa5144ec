"""N2G explanations (Gao et al. 2024, section 4.3; Foote et al. 2023): cheap, checkable explanations.

For each latent, an explainer is built from its top-activating positions: for each such position,
the SHORTEST n-gram ending there (1 <= n <= max_n tokens) whose occurrences in the build text make
the latent fire at least `min_precision` of the time is kept (N2G's pruning of context down to what
matters, done by counting instead of re-running the model). The explainer predicts "active" at a
position when one of its n-grams ends there. Scored on held-out text against the latent's real
firing: precision, recall, F1. An explanation with high precision and recall is a simple,
falsifiable account of the latent; low recall means the latent does more than its n-grams.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from saelab.evals.splice import Codes


@dataclass
class N2GConfig:
    """How explanations are built and scored."""

    max_n: int = 3
    """Longest n-gram, in tokens."""
    top_examples: int = 20
    """Top-activating positions per latent the explanation is built from."""
    min_precision: float = 0.5
    """Keep an n-gram when the latent fires on at least this fraction of its occurrences."""
    min_count: int = 2
    """Keep an n-gram only when it occurs at least this many times in the build text (with min_precision)."""


@dataclass
class Explanation:
    latent: int
    ngrams: list[tuple[int, ...]] = field(default_factory=list)
    build_precision: list[float] = field(default_factory=list)

    def describe(self, tokenizer, limit: int = 6) -> str:
        if not self.ngrams:
            return "(no n-gram explains it)"
        parts = [repr(tokenizer.decode(list(g))) for g in self.ngrams[:limit]]
        return " | ".join(parts) + (f" | ... (+{len(self.ngrams) - limit})" if len(self.ngrams) > limit else "")


def ngram_hashes(tokens_NT: torch.Tensor, max_n: int, vocab: int) -> list[torch.Tensor]:
    """For n = 1..max_n, a flat [N*T] int64 code of the n-gram ending at each position (-1 where it
    would cross the context start)."""
    if vocab ** max_n >= 2**62:
        raise ValueError(f"max_n={max_n} overflows int64 codes for a vocabulary of {vocab}; lower max_n")
    toks = tokens_NT.long()
    T = toks.shape[1]
    out, code = [], torch.zeros_like(toks)
    for n in range(1, max_n + 1):  # code_n = code_{n-1} + (token n-1 places back) * vocab^(n-1)
        back = torch.zeros_like(toks)
        back[:, n - 1:] = toks[:, : T - n + 1]
        code = code + back * vocab ** (n - 1)
        c = code.clone()
        c[:, : n - 1] = -1
        out.append(c.reshape(-1))
    return out


class _Counter:
    """Occurrence counts of codes over the valid positions, looked up by binary search."""

    def __init__(self, codes: torch.Tensor):
        self.values, self.counts = torch.unique(codes[codes >= 0], return_counts=True)

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        if len(self.values) == 0:
            return torch.zeros_like(q)
        i = torch.searchsorted(self.values, q).clamp_max(len(self.values) - 1)
        return torch.where(self.values[i] == q, self.counts[i], torch.zeros_like(q))


def build_explanations(codes: Codes, latents: list[int], cfg: N2GConfig | None = None,
                       vocab: int | None = None) -> dict[int, Explanation]:
    """An n-gram explainer per latent from its top activations in `codes` (the build text)."""
    cfg = cfg or N2GConfig()
    vocab = vocab or int(codes.tokens_NT.max()) + 1
    valid = codes.valid_NT.reshape(-1)
    hashes = [torch.where(valid, h, torch.full_like(h, -1)) for h in ngram_hashes(codes.tokens_NT, cfg.max_n, vocab)]
    counters = [_Counter(h) for h in hashes]
    ptr, pos, val = codes.latent_acts()
    out = {}
    for lat in latents:
        p, v = pos[ptr[lat]:ptr[lat + 1]], val[ptr[lat]:ptr[lat + 1]]
        exp = Explanation(lat)
        if len(p) == 0:
            out[lat] = exp
            continue
        top = p[v.argsort(descending=True)[: cfg.top_examples]]
        active_counts = [_Counter(h[p]) for h in hashes]
        chosen: dict[tuple[int, int], float] = {}
        for q in top.tolist():
            for n in range(cfg.max_n):
                code = hashes[n][q]
                if code < 0:
                    break
                total = int(counters[n](code[None])[0])
                hits = int(active_counts[n](code[None])[0])
                if total >= cfg.min_count and hits / total >= cfg.min_precision:
                    chosen.setdefault((n, int(code)), hits / total)
                    break
        for (n, code), prec in chosen.items():
            exp.ngrams.append(_decode_code(code, n + 1, vocab))
            exp.build_precision.append(prec)
        out[lat] = exp
    return out


def _decode_code(code: int, n: int, vocab: int) -> tuple[int, ...]:
    toks = []
    for _ in range(n):
        toks.append(code % vocab)
        code //= vocab
    return tuple(reversed(toks))


def score_explanations(explanations: dict[int, Explanation], codes: Codes, max_n: int = 3,
                       vocab: int | None = None) -> list[dict]:
    """Precision, recall and F1 of each explainer's predictions on held-out `codes`."""
    vocab = vocab or int(codes.tokens_NT.max()) + 1
    valid = codes.valid_NT.reshape(-1)
    hashes = ngram_hashes(codes.tokens_NT, max_n, vocab)
    ptr, pos, _ = codes.latent_acts()
    rows = []
    for lat, exp in explanations.items():
        truth = torch.zeros_like(valid)
        truth[pos[ptr[lat]:ptr[lat + 1]]] = True
        pred = torch.zeros_like(valid)
        for g in exp.ngrams:
            n = len(g)
            if n > max_n:
                continue
            code = 0
            for t in g:
                code = code * vocab + t
            pred |= hashes[n - 1] == code
        pred &= valid
        tp = int((pred & truth).sum())
        fp = int((pred & ~truth).sum())
        fn = int((~pred & truth).sum())
        precision = tp / (tp + fp) if tp + fp else float("nan")
        recall = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
        rows.append({"latent": lat, "n_ngrams": len(exp.ngrams), "precision": precision, "recall": recall,
                     "f1": f1, "heldout_active": tp + fn, "heldout_predicted": tp + fp})
    return rows


def n2g_evaluation(build: Codes, heldout: Codes, latents: list[int] | None = None, n_latents: int = 256,
                   cfg: N2GConfig | None = None, tokenizer=None, seed: int = 0) -> dict:
    """Build explanations on `build`, score them on `heldout`, summarise.

    latents: which to explain (default: a random sample of `n_latents` among those that fire in
    `build`). Returns {'rows': per-latent scores (+ 'explanation' text when a tokenizer is given),
    'summary': mean / median / quartiles of precision, recall, F1 over latents active on held-out, where a
    latent whose explanation predicts no firing on held-out (precision undefined) counts as precision 0;
    `n_predicting_nothing` says how many did}.
    """
    cfg = cfg or N2GConfig()
    vocab = int(max(build.tokens_NT.max(), heldout.tokens_NT.max())) + 1
    if tokenizer is not None:
        vocab = max(vocab, len(tokenizer))
    if latents is None:
        latents = build.sample_alive(n_latents, seed)
    exps = build_explanations(build, latents, cfg, vocab)
    rows = score_explanations(exps, heldout, cfg.max_n, vocab)
    if tokenizer is not None:
        for r in rows:
            r["explanation"] = exps[r["latent"]].describe(tokenizer)
    scored = [r for r in rows if r["heldout_active"] > 0]
    # A latent active on held-out text whose explanation predicts no firing there (no n-gram kept, or none
    # occurs) has an undefined precision; the summary counts it as 0 (it explained none of its firings) and
    # says how many there were, so a mean precision is never raised by leaving the failures out.
    summary = {"n_latents": len(rows), "n_active_on_heldout": len(scored),
               "n_with_explanation": sum(r["n_ngrams"] > 0 for r in rows),
               "n_predicting_nothing": sum(r["heldout_predicted"] == 0 for r in scored)}
    for key in ("precision", "recall", "f1"):
        vals = np.array([r[key] if r[key] == r[key] else 0.0 for r in scored])
        if len(vals):
            summary[key] = {"mean": float(vals.mean()), "median": float(np.median(vals)),
                            "q25": float(np.quantile(vals, 0.25)), "q75": float(np.quantile(vals, 0.75))}
    return {"rows": rows, "summary": summary, "config": cfg.__dict__}

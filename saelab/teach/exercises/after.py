"""Notebook 08 (after the paper): BatchTopK's selection and inference threshold (8.1), the Matryoshka loss (8.3) and
feature absorption for one parent/child pair (8.4) (8.2 is `jumprelu_grad`). Reference solutions and checks that name
the mistake, and the synthetic hierarchy that section 7 trains its SAEs on. Each check runs several cases that vary
every argument of the learner's function (its docstring lists them), compares every output (and the gradient where
training backpropagates through it), and names the case in its message."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from saelab.teach.exercises.base import (
    call_learner,
    close,
    diagnose,
    exercise,
    expect_shape,
    passed,
    same_output,
    unlike,
)


# ---- 8.1 BatchTopK ------------------------------------------------------------------------------------------
def batchtopk(pre_BN: torch.Tensor, k: int) -> torch.Tensor:
    """Dense codes: the batch's B*k largest positive pre-activations kept, everything else 0."""
    flat = pre_BN.flatten()
    cut = flat.topk(k * pre_BN.shape[0]).values[-1]
    return torch.where((pre_BN >= cut) & (pre_BN > 0), pre_BN, torch.zeros_like(pre_BN))


def inference_threshold(codes: list[torch.Tensor]) -> float:
    """The mean, over training batches, of the smallest positive activation each batch's selection kept."""
    return float(torch.stack([c[c > 0].min() for c in codes]).mean())


def _pre(seed: int, B: int = 24, n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, n, generator=g) * torch.rand(B, 1, generator=g).mul(2).add(0.2)  # tokens of different scale


def _batchtopk_cases() -> list[tuple[str, torch.Tensor, int]]:
    """(what, pre_BN, k): tokens of different scales (k 4 and 7), a batch of one token at k = 1, k = n and k near n on
    mostly positive values, fewer positive values than B*k, and ReLU'd values with many exact zeros (ties only where
    the answer does not depend on them: no tie at the cut among positive values)."""
    return [("with a batch of 24 tokens, n = 64, k = 4", _pre(0), 4),
            ("with a batch of 24 tokens, n = 64, k = 7", _pre(1), 7),
            ("with a batch of ONE token, n = 64, k = 1", _pre(2, B=1), 1),
            ("with 8 tokens, n = 16 and k = n = 16", _pre(3, B=8, n=16) + 4.0, 16),
            ("with 8 tokens, n = 16 and k = 15", _pre(4, B=8, n=16) + 4.0, 15),
            ("with 24 tokens, k = 4 and fewer positive pre-activations than B*k", _pre(5) - 2.5, 4),
            ("with 24 tokens, k = 40 and ReLU'd pre-activations (many exact zeros)", _pre(6).clamp_min(0), 40)]


@exercise("8.1", batchtopk, inference_threshold)
def check_batchtopk(select, threshold) -> None:
    """`select(pre_BN, k)` (dense codes [B, n], differentiable) and `threshold(list of codes) -> float`. Varies the
    batch (24 tokens of different scales, one token), n (64, 16), k (1, 4, 7, 15, n = 16, 40), the share of positive
    values (fewer than B*k, exact zeros), and checks the gradient (1 at kept entries, 0 elsewhere); the threshold on
    five equal batches, one batch, and three batches of different sizes and k."""
    for what, pre, k in _batchtopk_cases():
        leaf = pre.clone().requires_grad_(True)
        got = call_learner(select, what, leaf.clone(), k)
        expect_shape(got, pre.shape, f"{what}: dense codes [B, n]")
        want = batchtopk(pre, k)
        values = got.detach()
        diagnose(values, unlike(want, [
            (torch.where(pre >= pre.topk(min(k, pre.shape[1]), dim=-1).values[:, -1:], pre, 0.0).clamp_min(0),
             "every token kept exactly k: that is TopK; BatchTopK keeps the B*k largest of the WHOLE batch, so some "
             "tokens get more than k and some fewer"),
            (torch.where(pre >= pre.flatten().topk(k).values[-1], pre, 0.0).clamp_min(0),
             "you kept k values in all; the batch keeps B*k (k per token on average)"),
            (torch.where(pre >= pre.flatten().topk(k * len(pre)).values[-1], pre, 0.0),
             "a kept value is negative: keep positive pre-activations only (a ReLU), even when fewer than B*k are "
             "positive"),
            (2 * want, "kept values must be the pre-activations themselves (no rescaling)"),
        ], what), atol=1e-6)
        assert not bool((values < 0).any()), f"{what}: a kept value is negative: keep positive pre-activations only"
        kept = values != 0
        assert close(values[kept], pre[kept]), f"{what}: kept values must be the pre-activations themselves"
        assert int(kept.sum()) == int((want != 0).sum()), \
            f"{what}: {int(kept.sum())} values kept; this batch keeps {int((want != 0).sum())} (the B*k = " \
            f"{k * len(pre)} largest, positive ones only)"
        same_output(values, want, what)
        assert isinstance(got, torch.Tensor) and got.requires_grad, \
            f"{what}: the codes carry no gradient: an SAE trains through the kept values, so build them from pre_BN " \
            "with differentiable operations (torch.where, a mask times pre_BN), not from .detach(), .item() or numpy"
        grad = torch.autograd.grad(got.sum(), leaf, allow_unused=True)[0]
        assert grad is not None, f"{what}: no gradient reaches pre_BN from your codes"
        decided = pre != 0  # at an exact 0 (kept or not, by a tie) the ReLU's subgradient is a convention
        same_output(grad[decided], (want != 0).float()[decided], f"{what}: the gradient of the codes' sum with "
                    "respect to pre_BN (1 at the kept entries, 0 elsewhere)")
    for what, codes in _threshold_cases():
        want = inference_threshold(codes)
        got = call_learner(threshold, what, [c.clone() for c in codes])
        assert isinstance(got, (float, int, torch.Tensor)) and torch.as_tensor(got).numel() == 1, \
            f"{what}: return one number (a float), got {type(got).__name__}"
        got = float(got)
        positive = [c[c > 0] for c in codes]
        diagnose(got, unlike(want, [
            (0.0, "the threshold is 0: take the smallest POSITIVE kept activation (zeros are not kept)"),
            (float(torch.stack([p.mean() for p in positive]).mean()),
             "you averaged the kept activations; the threshold is each batch's SMALLEST kept activation"),
            (float(torch.cat(positive).mean()),
             "you averaged every kept activation of every batch; the threshold is each batch's SMALLEST kept "
             "activation, averaged over the batches"),
            (float(min(p.min() for p in positive)),
             "you took the smallest over all batches; the papers average each batch's minimum"),
            (float(max(p.min() for p in positive)), "you took the largest minimum; average them"),
            (float(positive[0].min()), "you used the first batch only: average the minima of EVERY batch in the list"),
            (float(positive[-1].min()), "you used the last batch only: average the minima of EVERY batch in the list"),
            (float(sum(len(c) * p.min() for c, p in zip(codes, positive)) / sum(len(c) for c in codes)),
             "you weighted each batch's minimum by its number of tokens: the estimate is the plain mean over batches"),
            (_token_minima(codes, pooled=True), "you averaged each TOKEN's smallest kept activation: the cut is the "
                                                "batch's, so take each BATCH's smallest kept activation"),
            (_token_minima(codes, pooled=False), "you averaged each TOKEN's smallest kept activation: the cut is the "
                                                 "batch's, so take each BATCH's smallest kept activation"),
        ], what), atol=1e-6)
        same_output(got, want, f"{what}: the threshold")
    passed("batchtopk and inference_threshold")


def _token_minima(codes, pooled: bool) -> float:
    """The mistake of averaging each token's smallest kept activation (over all tokens, or per batch then over
    batches)."""
    per_batch = [torch.stack([row[row > 0].min() for row in c if bool((row > 0).any())]) for c in codes]
    return float(torch.cat(per_batch).mean() if pooled else torch.stack([t.mean() for t in per_batch]).mean())


def _threshold_cases() -> list[tuple[str, list[torch.Tensor]]]:
    """(what, codes): five batches of 24 tokens at k 4 (whose first and last minima are neither the smallest, the
    largest nor the median, so that each mistake gives its own number); a single batch; three batches of 8, 40 and 16
    tokens at k 3, 5 and 2."""
    return [("with 5 batches of 24 tokens at k = 4", [batchtopk(_pre(s), 4) for s in range(57, 62)]),
            ("with a single batch", [batchtopk(_pre(11), 6)]),
            ("with 3 batches of 8, 40 and 16 tokens at k = 3, 5 and 2",
             [batchtopk(_pre(s, B=b), k) for s, b, k in ((7, 8, 3), (8, 40, 5), (9, 16, 2))])]


# ---- 8.3 the Matryoshka loss ----------------------------------------------------------------------------------
def matryoshka_loss(z_BN: torch.Tensor, W_dec_ND: torch.Tensor, b_dec_D: torch.Tensor, x_BD: torch.Tensor,
                    widths: list[int]) -> torch.Tensor:
    """Sum over prefix widths m of the normalized MSE of x_hat_m = z[:, :m] W_dec[:m] + b_dec."""
    base = (x_BD - x_BD.mean(0)).pow(2).sum(-1).mean()
    return sum((z_BN[:, :m] @ W_dec_ND[:m] + b_dec_D - x_BD).pow(2).sum(-1).mean() / base for m in widths)


def _matryoshka_case(seed: int, B: int = 32, n: int = 48, d: int = 12, widths=(6, 18, 48)):
    g = torch.Generator().manual_seed(seed)
    z = torch.relu(torch.randn(B, n, generator=g)) * (torch.rand(B, n, generator=g) < 0.2)
    W = torch.randn(n, d, generator=g)
    W = W / W.norm(dim=1, keepdim=True)
    b = torch.randn(d, generator=g)
    x = z @ W + b + 0.3 * torch.randn(B, d, generator=g)
    return z, W, b, x, list(widths)


def _matryoshka_cases():
    """(what, z, W, b, x, widths): three prefixes (two seeds), one prefix (a plain SAE), six prefixes from width 1,
    and a batch of two."""
    return [("with B = 32, n = 48 and widths [6, 18, 48]", *_matryoshka_case(0)),
            ("with B = 32, n = 48, widths [6, 18, 48] and other values", *_matryoshka_case(1)),
            ("with widths [24] (one prefix: a plain SAE)", *_matryoshka_case(2, B=16, n=24, d=8, widths=(24,))),
            ("with widths [1, 2, 4, 8, 16, 32]", *_matryoshka_case(3, B=16, n=32, d=8, widths=(1, 2, 4, 8, 16, 32))),
            ("with a batch of two (B = 2), n = 8 and widths [3, 8]", *_matryoshka_case(4, B=2, n=8, d=3,
                                                                                        widths=(3, 8)))]


@exercise("8.3", matryoshka_loss)
def check_matryoshka_loss(fn) -> None:
    """`fn(z_BN, W_dec_ND, b_dec_D, x_BD, widths) -> scalar tensor`, against the definition and known mistakes, and
    its gradients with respect to the codes, the decoder and the bias against the definition's. Varies the widths
    (three prefixes, one, six from width 1), the sizes (B 32, 16, 2; n 48, 24, 32, 8) and the values."""
    for what, z, W, b, x, widths in _matryoshka_cases():
        leaves = {"z_BN": z.clone().requires_grad_(True), "W_dec_ND": W.clone().requires_grad_(True),
                  "b_dec_D": b.clone().requires_grad_(True)}
        got = call_learner(fn, what, *(t.clone() for t in leaves.values()), x.clone(), list(widths))
        assert torch.is_tensor(got) and got.numel() == 1, \
            f"{what}: return one scalar tensor (the training loss), got {type(got).__name__}"
        value = got.detach().reshape(())
        base = (x - x.mean(0)).pow(2).sum(-1).mean()
        each = [(z[:, :m] @ W[:m] + b - x).pow(2).sum(-1).mean() / base for m in widths]
        groups = [(z[:, lo:m] @ W[lo:m] + b - x).pow(2).sum(-1).mean() / base
                  for lo, m in zip([0, *widths[:-1]], widths)]
        unbiased = (x - x.mean(0)).pow(2).sum(-1).sum() / (len(x) - 1)
        diagnose(value, unlike(sum(each), [
            (sum((z[:, :m] @ W[:m] - x).pow(2).sum(-1).mean() / base for m in widths),
             "a prefix's reconstruction includes the decoder bias b_dec (each prefix is an SAE of its own)"),
            (sum(each) / len(widths), "you averaged the prefix losses; the paper sums them"),
            (sum(groups), "each term must decode the whole PREFIX z[:, :m], not only the group between two widths"),
            (sum(each[:-1]), "the last width (the full dictionary) is a prefix too: include it"),
            (sum((z[:, :m] @ W[:m] + b - x).pow(2).sum(-1).mean() for m in widths),
             "normalise each prefix's squared error by the mean predictor's (normalized MSE)"),
            (sum(e * base / unbiased for e in each),
             "the mean predictor's MSE divides by B, not B - 1 (torch.var is the unbiased estimate): it is the mean "
             "over the batch of ||x - mean(x)||^2"),
            (sum(e * base / x.pow(2).sum(-1).mean() for e in each),
             "the mean predictor's MSE is that of x around its batch MEAN, ||x - x.mean(0)||^2, not of x itself"),
            (sum((z[:, :m] @ W[:m] + (b if m == widths[-1] else 0) - x).pow(2).sum(-1).mean() for m in widths) / base,
             "every prefix is decoded with the decoder bias, not only the full dictionary: each is an SAE of its own"),
            (sum(((z[:, :m] @ W[:m] + b - x).pow(2).sum(-1) / (x - x.mean(0)).pow(2).sum(-1)).mean() for m in widths),
             "normalized MSE is a ratio of means (the batch's mean squared error over the mean predictor's), not the "
             "mean of per-token ratios"),
        ], what), atol=1e-5)
        same_output(value, sum(each), f"{what}: the loss")
        assert got.requires_grad, f"{what}: the loss must keep its graph (no .item(), no float(), no torch.no_grad)"
        ref = matryoshka_loss(*leaves.values(), x, widths)
        grads = torch.autograd.grad(got.reshape(()), list(leaves.values()), allow_unused=True)
        wants = torch.autograd.grad(ref, list(leaves.values()))
        for (name, _), g, w in zip(leaves.items(), grads, wants):
            assert g is not None, f"{what}: no gradient reaches {name}: part of the loss is detached from it"
            same_output(g, w, f"{what}: the loss's gradient with respect to {name} (is a part of it detached?)")
    passed("matryoshka_loss")


# ---- section 7: absorption on a synthetic hierarchy -----------------------------------------------------------
def hierarchy_data(n_samples: int, seed: int = 0):
    """The ground-truth benchmark's data (`saelab.studies.synthetic_bench`: 512 features in 64 dimensions, 32
    parents with 4 children each, child_prob 0.75, Zipf exponent 0.5, 32 co-firing pairs, mean L0 ~7.5) with
    `n_samples` samples."""
    from saelab.acts.synthetic import make_toy
    from saelab.studies.synthetic_bench import SyntheticBenchConfig

    return make_toy(replace(SyntheticBenchConfig().data, n_samples=n_samples, seed=seed))


def train_on_synthetic(x_BD: torch.Tensor, family: str, k: int, epochs: float, n_latents: int = 512,
                       device="cpu", seed: int = 0, lr: float | None = None):
    """An SAE of `family` ('topk', 'batchtopk' or 'matryoshka') trained on x with the ground-truth benchmark's
    recipe (batch 1024, its lr (1e-2) unless `lr` is given, no input normalisation; Matryoshka with four doubling
    prefixes)."""
    from saelab.sae.families import FAMILIES, studied
    from saelab.studies.synthetic_bench import SyntheticBenchConfig, bench_train_config
    from saelab.training.trainer import Trainer

    at_k = [name for name in studied() if FAMILIES[name].has_k]
    if family not in at_k:
        raise ValueError(f"family must be one trained at k ({', '.join(at_k)}), got {family!r}")
    bench = replace(SyntheticBenchConfig(), n_latents=n_latents, epochs=epochs, seed=seed)
    cfg = bench_train_config(replace(bench, lr=lr) if lr is not None else bench, family, k)
    trainer = Trainer(cfg, x_BD, device=str(device))  # in memory: nothing written
    trainer.train()
    return trainer.sae


def parent_firing(z_BN: torch.Tensor, W_dec_ND: torch.Tensor, features_FD: torch.Tensor, coeffs_BF: torch.Tensor,
                  parent_F: torch.Tensor):
    """Per parent/child pair, how often the parent's latent (best decoder cosine) fires where the parent is on
    with none of its children ('alone') and where it is on with this child; a pandas DataFrame."""
    import pandas as pd

    from saelab.evals.ground_truth import cosines

    latent_of = cosines(W_dec_ND, features_FD).argmax(1)
    on, fires = coeffs_BF > 0, z_BN > 0
    rows = []
    for child in (parent_F >= 0).nonzero().squeeze(1).tolist():
        par = int(parent_F[child])
        alone = on[:, par] & ~on[:, parent_F == par].any(1)
        both = on[:, par] & on[:, child]
        lat = fires[:, int(latent_of[par])]
        rows.append({"parent": par, "child": child, "n_alone": int(alone.sum()), "n_with_child": int(both.sum()),
                     "fires_alone": float(lat[alone].float().mean()),
                     "fires_with_child": float(lat[both].float().mean())})
    return pd.DataFrame(rows)


# ---- 8.4 absorption for one parent/child pair -------------------------------------------------------------------
def pair_absorption(z_BN: torch.Tensor, W_dec_ND: torch.Tensor, features_FD: torch.Tensor, coeffs_BF: torch.Tensor,
                    parent: int, child: int, carries: float = 0.1) -> float:
    """Over the samples where both true features fire: the share in which the parent's latent (its best-matching
    decoder row by cosine) is silent while the child's latent fires and carries the parent's direction (cosine with
    the parent >= `carries`). 0 when both match the same latent; nan when the two never fire together."""
    F = features_FD / features_FD.norm(dim=1, keepdim=True)
    cos = F @ (W_dec_ND / W_dec_ND.norm(dim=1, keepdim=True)).T  # [F, N]
    lp, lc = cos[parent].argmax(), cos[child].argmax()
    both = (coeffs_BF[:, parent] > 0) & (coeffs_BF[:, child] > 0)
    absorbed = both & (z_BN[:, lp] == 0) & (z_BN[:, lc] > 0) & (cos[parent, lc] >= carries)
    return float(absorbed.sum() / both.sum())


PAR, CHILD = 1, 4
"""The pair that most cases of `check_pair_absorption` ask about."""


def _absorption_case(kind: str, seed: int, par: int = PAR, child: int = CHILD):
    """(z_BN, W_dec_ND, features_FD, coeffs_BF): orthonormal features, decoder rows at random positions (so latent
    indices differ from feature indices) and codes and coefficients that fire at random, so every mistake counts
    different samples. `kind` sets the child's latent: 'absorbing' (carries the parent, cosine 0.45), 'no carry'
    (cosine 0.05), 'shared' (the parent's latent is the child's best match too), 'never together' (the two features
    never co-fire), 'norms' (absorbing, decoder rows of different norms)."""
    g = torch.Generator().manual_seed(seed)
    F, d, N, B = 6, 16, 10, 240
    feats = torch.linalg.qr(torch.randn(d, d, generator=g))[0][:F]
    p, c, rest = feats[par], feats[child], feats[F - 1]
    W = torch.randn(N, d, generator=g)
    pair = feats[[par, child]]
    W = W - (W @ pair.T) @ pair  # other latents are orthogonal to the pair's features
    W = W / W.norm(dim=1, keepdim=True)
    lp, lc = torch.randperm(N, generator=g)[:2].tolist()
    W[lp] = p
    W[lc] = torch.nn.functional.normalize(c + (0.05 if kind == "no carry" else 0.5) * p, dim=0)
    if kind == "shared":  # the child's best match is the parent's latent; lc is second best and carries the parent
        W[lp] = torch.nn.functional.normalize(p + c, dim=0)
        W[lc] = torch.nn.functional.normalize(0.6 * c + 0.3 * p + 0.74 * rest, dim=0)
    if kind == "norms":
        W = W * (0.5 + 1.5 * torch.rand(N, 1, generator=g))
        W[lc] *= 0.15 / W[lc].norm()
    on = torch.rand(B, F, generator=g) < 0.5
    if kind == "never together":
        on[:, child] &= ~on[:, par]
    coeffs = on * (0.5 + torch.rand(B, F, generator=g))
    z = (torch.rand(B, N, generator=g) < 0.5) * (0.1 + torch.rand(B, N, generator=g))
    return z, W, feats, coeffs


def _absorption_cases():
    """(what, case, parent, child, carries): each kind at seeds 0 and 1 (pair 1 -> 4, carries 0.1); the pair the other
    way round in the feature order (3 -> 0); carries 0.5 (above the absorbing latent's cosine 0.45) and 0.03 (below
    the 'no carry' latent's 0.05); and a batch of one sample, absorbed and not."""
    kinds = ("absorbing", "no carry", "shared", "never together", "norms")
    out = [(f"case '{k}'", _absorption_case(k, s), PAR, CHILD, 0.1) for s in (0, 1) for k in kinds]
    out.append(("case 'absorbing' with parent 3 and child 0", _absorption_case("absorbing", 2, par=3, child=0),
                3, 0, 0.1))
    out.append(("case 'absorbing' with carries = 0.5", _absorption_case("absorbing", 3), PAR, CHILD, 0.5))
    out.append(("case 'no carry' with carries = 0.03", _absorption_case("no carry", 4), PAR, CHILD, 0.03))
    z, W, feats, coeffs = _absorption_case("absorbing", 5)
    cos = torch.nn.functional.normalize(feats, dim=1) @ torch.nn.functional.normalize(W, dim=1).T
    lp, lc = int(cos[PAR].argmax()), int(cos[CHILD].argmax())
    both = (coeffs[:, PAR] > 0) & (coeffs[:, CHILD] > 0)
    absorbed = both & (z[:, lp] == 0) & (z[:, lc] > 0)
    for name, rows in (("absorbed", absorbed), ("not absorbed", both & ~absorbed)):
        i = int(rows.nonzero()[0])
        out.append((f"a batch of ONE sample ({name})", (z[i:i + 1], W, feats, coeffs[i:i + 1]), PAR, CHILD, 0.1))
    return out


def _share(z, W, feats, coeffs, par=PAR, child=CHILD, carries=0.1, over="both", child_fires=True, cosine=True,
           one_to_one=False, axis=1, normalise=True) -> float:
    """`pair_absorption` with one known mistake switched on."""
    Fn = feats / feats.norm(dim=1, keepdim=True) if normalise else feats
    Wn = W / W.norm(dim=1, keepdim=True) if normalise else W
    cos = Fn @ Wn.T
    latent_of = cos.argmax(1) if axis == 1 else cos.argmax(0)
    lp, lc = int(latent_of[par]), int(latent_of[child])
    if one_to_one and lc == lp:
        lc = int(cos[child].clone().index_fill_(0, torch.tensor([lp]), -math.inf).argmax())
    on_p, on_c = coeffs[:, par] > 0, coeffs[:, child] > 0
    both = on_p & on_c
    hit = (z[:, lp] == 0) & ((z[:, lc] > 0) if child_fires else True) & bool(not cosine or cos[par, lc] >= carries)
    if over == "all":
        return float(hit.float().mean())
    if over == "parent only":
        return float((hit & on_p).sum()) / int(on_p.sum()) if int(on_p.sum()) else math.nan
    where = {"both": both, "both/B": both, "parent": on_p}[over]
    denom = len(z) if over == "both/B" else int(where.sum())
    return float((hit & both).sum()) / denom if denom else math.nan


_MISTAKES = [
    ({"over": "all"}, "you counted over ALL samples: take the share over the samples where both true features fire "
                      "(the parent's and the child's coefficients > 0)"),
    ({"over": "both/B"}, "divide by the number of samples where both true features fire, not by all samples"),
    ({"over": "parent"}, "divide by the samples where BOTH fire, not by all the samples where the parent fires"),
    ({"over": "parent only"}, "count only the samples where BOTH features fire: where the child is absent there is "
                              "nothing to absorb (you counted every sample where the parent fires)"),
    ({"child_fires": False}, "absorbed means the child's latent FIRES in place of the silent parent's latent: "
                             "require the child's latent to be active too"),
    ({"carries": 0.1}, "use the `carries` argument as the cosine bound (0.1 is only its default)"),
    ({"cosine": False}, "the child's latent must carry the parent's direction (its decoder row's cosine with the "
                        "parent >= carries); without that, a silent parent latent is a miss, not absorption"),
    ({"one_to_one": True}, "the parent and the child share their best-matching latent here, so no other latent "
                           "absorbed the parent: the share must be 0 (match each feature to its own best latent, "
                           "not one-to-one)"),
    ({"normalise": False}, "compare directions by cosine: normalise the decoder rows (and the features) before the "
                           "dot products"),
    ({"axis": 0}, "match each TRUE feature to its best latent: the argmax of the [F, N] cosines runs over the "
                  "latents; over the other axis you got each latent's best feature"),
]
"""(the mistake, its message); a check names the first whose answer the learner's reproduces, in this order."""


@exercise("8.4", pair_absorption)
def check_pair_absorption(fn) -> None:
    """`fn(z_BN, W_dec_ND, features_FD, coeffs_BF, parent, child, carries) -> float`, against saelab's
    `saelab.evals.ground_truth.absorption` on built cases (see `_absorption_case`), naming the mistake. Varies the
    kind of case (absorbing, no carry, a shared latent, never together, decoder rows of different norms), the pair
    (1 -> 4, 3 -> 0), `carries` (0.1, 0.5, 0.03) and the samples (240, a batch of one)."""
    from saelab.evals.ground_truth import absorption

    for what, case, par, child, carries in _absorption_cases():
        parent_F = torch.full((case[2].shape[0],), -1)
        parent_F[child] = par
        pairs = absorption(*case, parent_F, carries=carries)["pairs"]
        want = pairs[0][2] if pairs else math.nan
        try:
            got = fn(*(t.clone() for t in case), par, child, carries)
        except ZeroDivisionError:
            raise AssertionError(f"{what}: the pair never fires together; return nan (no samples to take a share "
                                 "of), e.g. by dividing tensors") from None
        except (AssertionError, NotImplementedError):
            raise
        except Exception as e:
            raise AssertionError(f"{what}: your function raised {type(e).__name__}: {e}") from e
        try:
            got = float(got)
        except (TypeError, ValueError, RuntimeError):
            raise AssertionError(f"{what}: return one number (a float), got {type(got).__name__}") from None
        if "never together" in what:
            assert math.isnan(got), (f"{what}: the pair never fires together, so there is no sample to take a share "
                                     f"of: return nan (e.g. by dividing tensors, 0/0), got {got}")
        diagnose(got, [(v, f"{what}: {message}") for flags, message in _MISTAKES
                       if not close(v := _share(*case, **{"par": par, "child": child, "carries": carries, **flags}),
                                    want)])
        if "shared" in what:
            assert close(got, 0.0), f"{what}: the parent and the child share one latent: the share must be 0"
        if "never together" in what:
            assert math.isnan(got), f"{what}: the pair never fires together: return nan, got {got}"
        assert close(got, want), f"{what}: share {got:.4f}, expected {want:.4f}"
    passed("pair_absorption")

"""Notebook 08 (after the paper): BatchTopK's selection and inference threshold (8.1), JumpReLU's straight-through
threshold gradient (8.2), the Matryoshka loss (8.3) and feature absorption for one parent/child pair (8.4). Reference
solutions and checks that name the mistake, and the synthetic hierarchy that section 7 trains its SAEs on."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from saelab.teach.exercises.base import close, diagnose, exercise, expect_shape, passed


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


@exercise("8.1", batchtopk, inference_threshold)
def check_batchtopk(select, threshold) -> None:
    """`select(pre_BN, k)` (dense codes) and `threshold(list of codes) -> float`, on batches whose tokens differ."""
    for seed, k in ((0, 4), (1, 7)):
        pre = _pre(seed)
        got = select(pre.clone(), k)
        expect_shape(got, pre.shape, "dense codes [B, n]")
        diagnose(got, [(torch.where(pre >= pre.topk(k, dim=-1).values[:, -1:], pre, 0.0).clamp_min(0),
                        "every token kept exactly k: that is TopK; BatchTopK keeps the B*k largest of the WHOLE batch, "
                        "so some tokens get more than k and some fewer"),
                       (torch.where(pre >= pre.flatten().topk(k).values[-1], pre, 0.0),
                        "you kept k values in all; the batch keeps B*k (k per token on average)")])
        kept = got != 0
        assert not bool((got < 0).any()), "a kept value is negative: keep positive pre-activations only (a ReLU)"
        assert int(kept.sum()) == k * len(pre), f"{int(kept.sum())} values kept; a batch of {len(pre)} keeps B*k = " \
                                                f"{k * len(pre)}"
        assert close(got[kept], pre[kept]), "kept values must be the pre-activations themselves (no rescaling)"
        assert float(pre[~kept].max()) <= float(pre[kept].min()), \
            "a larger pre-activation was dropped for a smaller one"
    codes = [batchtopk(_pre(s), 4) for s in range(2, 6)]
    want = inference_threshold(codes)
    got = float(threshold([c.clone() for c in codes]))
    diagnose(got, [(0.0, "the threshold is 0: take the smallest POSITIVE kept activation (zeros are not kept)"),
                   (float(torch.stack([c[c > 0].mean() for c in codes]).mean()),
                    "you averaged the kept activations; the threshold is each batch's SMALLEST kept activation"),
                   (float(min(c[c > 0].min() for c in codes)),
                    "you took the smallest over all batches; the papers average each batch's minimum"),
                   (float(max(c[c > 0].min() for c in codes)), "you took the largest minimum; average them")])
    assert abs(got - want) < 1e-5, f"threshold {got:.5f}, expected {want:.5f}"
    passed("batchtopk and inference_threshold")


# ---- 8.3 the Matryoshka loss ----------------------------------------------------------------------------------
def matryoshka_loss(z_BN: torch.Tensor, W_dec_ND: torch.Tensor, b_dec_D: torch.Tensor, x_BD: torch.Tensor,
                    widths: list[int]) -> torch.Tensor:
    """Sum over prefix widths m of the normalized MSE of x_hat_m = z[:, :m] W_dec[:m] + b_dec."""
    base = (x_BD - x_BD.mean(0)).pow(2).sum(-1).mean()
    return sum((z_BN[:, :m] @ W_dec_ND[:m] + b_dec_D - x_BD).pow(2).sum(-1).mean() / base for m in widths)


def _matryoshka_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    B, n, d = 32, 48, 12
    z = torch.relu(torch.randn(B, n, generator=g)) * (torch.rand(B, n, generator=g) < 0.2)
    W = torch.randn(n, d, generator=g)
    W = W / W.norm(dim=1, keepdim=True)
    b = torch.randn(d, generator=g)
    x = z @ W + b + 0.3 * torch.randn(B, d, generator=g)
    return z, W, b, x, [6, 18, 48]


@exercise("8.3", matryoshka_loss)
def check_matryoshka_loss(fn) -> None:
    """`fn(z_BN, W_dec_ND, b_dec_D, x_BD, widths) -> scalar tensor`, against the definition and known mistakes."""
    for seed in (0, 1):
        z, W, b, x, widths = _matryoshka_case(seed)
        got = fn(z.clone(), W.clone(), b.clone(), x.clone(), list(widths))
        assert torch.is_tensor(got) and got.numel() == 1, "return one scalar tensor (the training loss)"
        base = (x - x.mean(0)).pow(2).sum(-1).mean()
        each = [(z[:, :m] @ W[:m] + b - x).pow(2).sum(-1).mean() / base for m in widths]
        groups = [(z[:, lo:m] @ W[lo:m] + b - x).pow(2).sum(-1).mean() / base
                  for lo, m in zip([0, *widths[:-1]], widths)]
        diagnose(got, [
            (sum((z[:, :m] @ W[:m] - x).pow(2).sum(-1).mean() / base for m in widths),
             "a prefix's reconstruction includes the decoder bias b_dec (each prefix is an SAE of its own)"),
            (sum(each) / len(widths), "you averaged the prefix losses; the paper sums them"),
            (sum(groups), "each term must decode the whole PREFIX z[:, :m], not only the group between two widths"),
            (sum(each[:-1]), "the last width (the full dictionary) is a prefix too: include it"),
            (sum((z[:, :m] @ W[:m] + b - x).pow(2).sum(-1).mean() for m in widths),
             "normalise each prefix's squared error by the mean predictor's (normalized MSE)")])
        assert close(got.detach(), sum(each), atol=1e-5), f"loss {float(got):.5f}, expected {float(sum(each)):.5f}"
    z, W, b, x, widths = _matryoshka_case(2)
    W.requires_grad_(True)
    loss = fn(z, W, b, x, widths)
    assert torch.is_tensor(loss) and loss.requires_grad, "the loss must keep its graph (no .item(), no float())"
    loss.backward()
    assert W.grad is not None and float(W.grad.abs().sum()) > 0, "the loss must keep its graph (no .item(), no float())"
    passed("matryoshka_loss")


# ---- 8.2 JumpReLU's threshold gradient -------------------------------------------------------------------------
def jumprelu_threshold_grad(pre_BN: torch.Tensor, theta_N: torch.Tensor, eps: float, grad_BN: torch.Tensor
                            ) -> torch.Tensor:
    """dL/dtheta through f = pre * H(pre - theta), with the paper's pseudo-derivative -(theta/eps) K((pre-theta)/eps),
    K the rectangle 1{|u| < 1/2}; `grad_BN` is dL/df."""
    u = (pre_BN - theta_N) / eps
    return (-(theta_N / eps) * ((u > -0.5) & (u < 0.5)).to(pre_BN.dtype) * grad_BN).sum(0)


@exercise("8.2", jumprelu_threshold_grad)
def check_jumprelu_threshold_grad(fn) -> None:
    """`fn(pre_BN, theta_N, eps, grad_BN) -> [n]`, on values placed around the window's edges."""
    theta = torch.tensor([0.5, 0.2, 0.8])
    pre = torch.tensor([[0.52, 0.21, 0.70], [0.47, 0.28, 0.83], [0.90, 0.17, 0.79], [0.56, 0.05, 0.845]])
    g = torch.tensor([[2.0, -1.0, 3.0], [3.0, 5.0, 1.0], [7.0, 2.0, -4.0], [1.0, 1.0, 1.0]])
    eps = 0.1
    got = fn(pre.clone(), theta.clone(), eps, g.clone())
    expect_shape(got, (3,), "one gradient per latent, [n] (summed over the batch)")
    u = (pre - theta) / eps
    inside = ((u > -0.5) & (u < 0.5)).float()
    above = (((u >= 0) & (u < 0.5)).float())
    wide = ((u > -1) & (u < 1)).float()
    diagnose(got, [
        ((-(1 / eps) * inside * g).sum(0), "that is the Heaviside step's pseudo-derivative; JumpReLU's carries a "
                                           "factor theta: -(theta/eps) K((pre - theta)/eps)"),
        (((theta / eps) * inside * g).sum(0), "the sign: raising theta switches an active latent off, so the "
                                              "pseudo-derivative is negative"),
        ((-(theta / eps) * above * g).sum(0), "the window has two sides: pre-activations just BELOW theta count too "
                                              "(|pre - theta| < eps/2)"),
        ((-(theta / eps) * wide * g).sum(0), "K is 1 on (-1/2, 1/2): the window is eps wide in all, eps/2 each side"),
        (-(theta / eps) * (inside * g).mean(0), "sum over the batch's tokens, do not average")])
    want = jumprelu_threshold_grad(pre, theta, eps, g)
    assert close(got, want), f"gradient {got.tolist()}, expected {want.tolist()}"
    passed("jumprelu_threshold_grad")


# ---- section 7: absorption on a synthetic hierarchy -----------------------------------------------------------
def hierarchy_data(n_samples: int, seed: int = 0):
    """The ground-truth benchmark's data (`saelab.studies.synthetic_bench`: 512 features in 64 dimensions, 32
    parents with 4 children each, child_prob 0.75, Zipf exponent 0.5, 32 co-firing pairs, mean L0 ~7.5) with
    `n_samples` samples."""
    from saelab.acts.synthetic import make_toy
    from saelab.studies.synthetic_bench import SyntheticBenchConfig

    return make_toy(replace(SyntheticBenchConfig().data, n_samples=n_samples, seed=seed))


def train_on_synthetic(x_BD: torch.Tensor, family: str, k: int, epochs: float, n_latents: int = 512,
                       device="cpu", seed: int = 0):
    """An SAE of `family` ('topk', 'batchtopk' or 'matryoshka') trained on x with the ground-truth benchmark's
    recipe (batch 1024, lr 2e-3, no input normalisation; Matryoshka with four doubling prefixes)."""
    from saelab.sae.families import FAMILIES, studied
    from saelab.studies.synthetic_bench import SyntheticBenchConfig, bench_train_config
    from saelab.training.trainer import Trainer

    at_k = [name for name in studied() if FAMILIES[name].has_k]
    if family not in at_k:
        raise ValueError(f"family must be one trained at k ({', '.join(at_k)}), got {family!r}")
    cfg = bench_train_config(replace(SyntheticBenchConfig(), n_latents=n_latents, epochs=epochs, seed=seed), family, k)
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
"""The pair that every case of `check_pair_absorption` asks about."""


def _absorption_case(kind: str, seed: int):
    """(z_BN, W_dec_ND, features_FD, coeffs_BF): orthonormal features, decoder rows at random positions (so latent
    indices differ from feature indices) and codes and coefficients that fire at random, so every mistake counts
    different samples. `kind` sets the child's latent: 'absorbing' (carries the parent, cosine 0.45), 'no carry'
    (cosine 0.05), 'shared' (the parent's latent is the child's best match too), 'never together' (the two features
    never co-fire), 'norms' (absorbing, decoder rows of different norms)."""
    g = torch.Generator().manual_seed(seed)
    F, d, N, B = 6, 16, 10, 240
    feats = torch.linalg.qr(torch.randn(d, d, generator=g))[0][:F]
    p, c, rest = feats[PAR], feats[CHILD], feats[F - 1]
    W = torch.randn(N, d, generator=g)
    pair = feats[[PAR, CHILD]]
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
        on[:, CHILD] &= ~on[:, PAR]
    coeffs = on * (0.5 + torch.rand(B, F, generator=g))
    z = (torch.rand(B, N, generator=g) < 0.5) * (0.1 + torch.rand(B, N, generator=g))
    return z, W, feats, coeffs


def _share(z, W, feats, coeffs, over="both", child_fires=True, cosine=True, one_to_one=False, axis=1,
           normalise=True) -> float:
    """`pair_absorption` with one known mistake switched on."""
    Fn = feats / feats.norm(dim=1, keepdim=True) if normalise else feats
    Wn = W / W.norm(dim=1, keepdim=True) if normalise else W
    cos = Fn @ Wn.T
    latent_of = cos.argmax(1) if axis == 1 else cos.argmax(0)
    lp, lc = int(latent_of[PAR]), int(latent_of[CHILD])
    if one_to_one and lc == lp:
        lc = int(cos[CHILD].clone().index_fill_(0, torch.tensor([lp]), -math.inf).argmax())
    on_p, on_c = coeffs[:, PAR] > 0, coeffs[:, CHILD] > 0
    both = on_p & on_c
    hit = (z[:, lp] == 0) & ((z[:, lc] > 0) if child_fires else True) & bool(not cosine or cos[PAR, lc] >= 0.1)
    if over == "all":
        return float(hit.float().mean())
    where = {"both": both, "both/B": both, "parent": on_p}[over]
    denom = len(z) if over == "both/B" else int(where.sum())
    return float((hit & both).sum()) / denom if denom else math.nan


_MISTAKES = [
    ({"over": "all"}, "you counted over ALL samples: take the share over the samples where both true features fire "
                      "(the parent's and the child's coefficients > 0)"),
    ({"over": "both/B"}, "divide by the number of samples where both true features fire, not by all samples"),
    ({"over": "parent"}, "divide by the samples where BOTH fire, not by all the samples where the parent fires"),
    ({"child_fires": False}, "absorbed means the child's latent FIRES in place of the silent parent's latent: "
                             "require the child's latent to be active too"),
    ({"cosine": False}, "the child's latent must carry the parent's direction (its decoder row's cosine with the "
                        "parent >= 0.1); without that, a silent parent latent is a miss, not absorption"),
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
    """`fn(z_BN, W_dec_ND, features_FD, coeffs_BF, parent, child) -> float`, against saelab's
    `saelab.evals.ground_truth.absorption` on built cases (see `_absorption_case`), naming the mistake."""
    from saelab.evals.ground_truth import absorption

    kinds = ("absorbing", "no carry", "shared", "never together", "norms")
    for kind, seed in [(k, s) for s in (0, 1) for k in kinds]:
        case = _absorption_case(kind, seed)
        parent_F = torch.full((case[2].shape[0],), -1)
        parent_F[CHILD] = PAR
        pairs = absorption(*case, parent_F)["pairs"]
        want = pairs[0][2] if pairs else math.nan
        try:
            got = fn(*(t.clone() for t in case), PAR, CHILD)
        except ZeroDivisionError:
            raise AssertionError(f"case '{kind}': the pair never fires together; return nan (no samples to take a "
                                 "share of), e.g. by dividing tensors") from None
        got = float(got)
        diagnose(got, [(v, f"case '{kind}': {message}") for flags, message in _MISTAKES
                       if not close(v := _share(*case, **flags), want)])
        if kind == "shared":
            assert close(got, 0.0), f"case '{kind}': the parent and the child share one latent: the share must be 0"
        if kind == "never together":
            assert math.isnan(got), f"case '{kind}': the pair never fires together: return nan, got {got}"
        assert close(got, want), f"case '{kind}': share {got:.4f}, expected {want:.4f}"
    passed("pair_absorption")

"""Notebook 02, part 2 (build your own TopK SAE): the model, the unit-norm decoder and a training loop, written
from the pieces of exercises 2.1-2.3 and checked against saelab's `Trainer` on the same data and seed.

Exercises: 2.4 `MyTopKSAE` (transpose initialisation, the forward pass with the paper's per-token input
normalisation), 2.5 `constrain_decoder_grad_` / `renormalize_decoder_` (the unit-norm decoder), 2.6 (hard)
`train_my_sae` (Adam as the paper, AuxK on dead latents, Multi-TopK). `check_training` runs the learner's loop on a
toy case where most latents start dead (`loop_watch.DeadCase`), then beside `Trainer` with the same settings, and names
what is missing when they disagree; every run is watched step by step (`loop_watch.LoopWatch`: Adam's settings, the
decoder constraint, which latents get a gradient). `save_my_sae`: the learner's SAE as a folder later notebooks load.
"""

from __future__ import annotations

import torch
from torch import nn

from saelab.sae.input_norm import normalize
from saelab.teach.exercises.base import diagnose, exercise, expect_gradient, passed, run_case, same_output
from saelab.teach.exercises.loop_watch import (
    DeadCase,
    LoopWatch,
    check_aux_off,
    check_dead_latent_handling,
    revived_share,
)
from saelab.teach.exercises.training import auxk_loss, normalized_mse, topk_activation


def normalize_tokens(x_BD: torch.Tensor) -> torch.Tensor:
    """The paper's input normalisation (section 2.1): centre each token over d, scale it to unit norm (saelab's
    own `per_token_unit_norm`, so the learner's SAE and `Trainer` see the same inputs)."""
    return normalize(x_BD, "per_token_unit_norm")[0]


class MyTopKSAE(nn.Module):
    """The reference solution of exercise 2.4. Weights in saelab's layout: `W_enc`, `W_dec` both [n, d]."""

    def __init__(self, d: int, n: int, k: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(n, d, generator=g)
        W = W / W.norm(dim=1, keepdim=True)  # unit-norm decoder rows
        self.W_dec = nn.Parameter(W.clone())
        self.W_enc = nn.Parameter(W.clone())  # encoder = decoder transpose (rows here: the same n x d matrix)
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.b_pre = nn.Parameter(torch.zeros(d))
        self.k = k

    def pre_acts(self, x_BD: torch.Tensor) -> torch.Tensor:
        """Pre-activations [B, n] of the normalised input."""
        return (normalize_tokens(x_BD) - self.b_pre) @ self.W_enc.T + self.b_enc

    def forward(self, x_BD: torch.Tensor, k: int | None = None):
        """(reconstruction of the normalised input, the normalised input, pre-activations, codes z [B, n])."""
        x_n = normalize_tokens(x_BD)
        pre = (x_n - self.b_pre) @ self.W_enc.T + self.b_enc
        z = topk_activation(pre, k or self.k)
        return z @ self.W_dec + self.b_pre, x_n, pre, z


@torch.no_grad()
def constrain_decoder_grad_(W_dec: nn.Parameter) -> None:
    """Remove from each decoder row's gradient its component along the row (before the optimiser step)."""
    W, g = W_dec.data, W_dec.grad
    g -= (g * W).sum(-1, keepdim=True) * W


@torch.no_grad()
def renormalize_decoder_(W_dec: nn.Parameter) -> None:
    """Scale every decoder row back to unit norm (after the optimiser step)."""
    W_dec.data /= W_dec.data.norm(dim=-1, keepdim=True)


def train_my_sae(sae, x_TD: torch.Tensor, steps: int, batch: int, lr: float, k_aux: int, dead_steps: int,
                 aux_coef: float = 1 / 32, multi_topk: bool = False, seed: int = 0) -> list[float]:
    """The reference solution of exercise 2.6: returns the training normalized MSE of each step."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.b_pre.copy_(normalize_tokens(x_TD[:8192]).mean(0))  # b_pre: the mean (saelab: geometric median)
    opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999), eps=6.25e-10)
    since_fired = torch.zeros(sae.W_dec.shape[0], dtype=torch.long)
    history = []
    for _ in range(steps):
        x = x_TD[torch.randint(len(x_TD), (batch,), generator=g)]
        recon, x_n, pre, z = sae(x)
        loss = normalized_mse(recon, x_n)
        if multi_topk:  # L(k) + L(4k) / 8 (section 5.3)
            loss = loss + normalized_mse(sae(x, k=4 * sae.k)[0], x_n) / 8
        since_fired += 1
        since_fired[(z > 0).any(0)] = 0
        dead = since_fired > dead_steps
        if k_aux and dead.any():
            loss = loss + aux_coef * auxk_loss(x_n, recon, pre, dead, sae.W_dec, k_aux)
        opt.zero_grad()
        loss.backward()
        constrain_decoder_grad_(sae.W_dec)
        opt.step()
        renormalize_decoder_(sae.W_dec)
        history.append(float(normalized_mse(recon.detach(), x_n)))
    return history


# ---- checks --------------------------------------------------------------------------------------------------
@exercise("2.4", MyTopKSAE)
def check_my_sae(cls) -> None:
    """`cls(d, n, k, seed)` must build the paper's initialisation and forward pass.

    Varies: (d, n, k) = (12, 48, 4), (5, 7, 1) and (6, 6, 6) (k = n); the seed (the same seed gives the same weights,
    another seed other weights); forward's k argument (Multi-TopK in 2.6 calls `sae(x, k=4 * sae.k)`); batches of 16
    rows (one all zero) and of one row. Every output is compared with the reference built from the same weights, and
    the gradient of the reconstruction must reach all four parameters."""
    _check_sae_class(cls)
    passed("MyTopKSAE")


def _check_sae_class(cls) -> None:
    """check_my_sae without its confirmation (exercise 2.6 runs it on the class it is given)."""
    d, n, k = 12, 48, 4
    sae = run_case(f"building cls({d}, {n}, {k}, seed=3)", cls, d, n, k, seed=3)
    _check_init(sae, cls, d, n, k, seed=3)
    g = torch.Generator().manual_seed(0)
    x = 3.0 + 2.0 * torch.randn(16, d, generator=g)
    x[-1] = 0.0  # an all-zero sample (the toy data has some: no feature active)
    with torch.no_grad():
        sae.b_pre.copy_(0.1 * torch.randn(d, generator=g))
        sae.b_enc.copy_(0.05 * torch.randn(n, generator=g))
        out = run_case("calling forward(x)", sae, x)
        assert isinstance(out, tuple) and len(out) == 4, "return (recon, x_n, pre, z) from forward"
        recon, x_n, pre, z = out
        if not torch.isfinite(x_n).all():
            raise AssertionError("x_n has NaN or inf for an all-zero sample: its norm is 0, so clamp the norm before "
                                 "dividing (norm.clamp_min(1e-8)); normalize_tokens does")
        ref = _reference_like(sae)
        want = ref(x)
        raw_pre = (x - sae.b_pre) @ sae.W_enc.T + sae.b_enc
        diagnose(x_n, [(x, "x_n is the raw input: normalise each token (subtract its mean over d, divide by its "
                           "norm) before encoding, as the paper's section 2.1 does"),
                       (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8),
                        "x_n is scaled but not centred: subtract each token's mean over d first")])
        assert torch.allclose(x_n, want[1], atol=1e-5), "x_n should be normalize_tokens(x)"
        diagnose(pre, [(raw_pre, "pre-activations of the raw input: encode the normalised one"),
                       (x_n @ sae.W_enc.T + sae.b_enc, "subtract b_pre before the encoder (x_n - b_pre)"),
                       ((x_n - sae.b_pre) @ sae.W_enc.T, "add the encoder bias b_enc")])
        assert torch.allclose(pre, want[2], atol=1e-5), "pre should be (x_n - b_pre) @ W_enc.T + b_enc"
        assert torch.allclose(z, want[3], atol=1e-5), "z should be topk_activation(pre, k) (exercise 2.1)"
        diagnose(recon, [(z @ sae.W_dec, "add b_pre back after decoding: recon = z @ W_dec + b_pre")])
        assert torch.allclose(recon, want[0], atol=1e-5), "recon should be z @ W_dec + b_pre"
        for kk in (1, 12, n):
            what = f"forward(x, k={kk}) with self.k = {k}"
            got = run_case(what, sae, x, k=kk)
            if torch.equal(got[3] != 0, z != 0):
                raise AssertionError(f"{what} kept the same latents as forward(x): use the k argument when it is "
                                     "given (k or self.k); exercise 2.6's Multi-TopK calls sae(x, k=4 * sae.k)")
            same_output(tuple(got), tuple(ref(x, k=kk)), f"{what} (recon, x_n, pre, z)")
    for (dd, nn_, kk), rows in (((5, 7, 1), 16), ((6, 6, 6), 16), ((5, 7, 1), 1)):
        what = f"with d = {dd}, n = {nn_}, k = {kk} and a batch of {rows} row{'s' * (rows > 1)}"
        other = run_case(f"building cls({dd}, {nn_}, {kk}, seed=0)", cls, dd, nn_, kk, seed=0)
        _check_init(other, cls, dd, nn_, kk, seed=0)
        with torch.no_grad():
            other.b_pre.copy_(0.1 * torch.randn(dd, generator=g))
            other.b_enc.copy_(0.05 * torch.randn(nn_, generator=g))
            xs = 1.0 + torch.randn(rows, dd, generator=g)
            same_output(tuple(run_case(what, other, xs)), tuple(_reference_like(other)(xs)),
                        f"{what} (recon, x_n, pre, z)")
    params = {name: getattr(sae, name) for name in ("W_enc", "W_dec", "b_enc", "b_pre")}
    expect_gradient(run_case("forward(x) with gradients on", sae, x)[0], params,
                    "the reconstruction (exercise 2.6 trains all four parameters through it)")


def _check_init(sae, cls, d: int, n: int, k: int, seed: int) -> None:
    """The paper's initialisation: unit-norm decoder rows, the encoder its transpose (apart in memory), zero biases,
    drawn from the seed's generator; all four registered as parameters."""
    registered = dict(sae.named_parameters())
    for name, shape in (("W_enc", (n, d)), ("W_dec", (n, d)), ("b_enc", (n,)), ("b_pre", (d,))):
        got = tuple(getattr(sae, name).shape) if hasattr(sae, name) else None
        assert got == shape, f"self.{name} should be an nn.Parameter of shape {shape}, got {got}"
        assert name in registered, f"self.{name} is not an nn.Parameter: wrap it in nn.Parameter(...), or " \
            "sae.parameters() (and so Adam) never sees it"
    assert getattr(sae, "k", None) == k, f"self.k should be {k}, the k given to the constructor"
    norms = sae.W_dec.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones(n), atol=1e-5), \
        f"decoder rows have norms {float(norms.min()):.3f}-{float(norms.max()):.3f}: start them at unit norm"
    if not torch.allclose(sae.W_enc.detach(), sae.W_dec.detach(), atol=1e-6):
        raise AssertionError("W_enc is not the decoder's transpose: initialise the encoder as W_dec (rows here), "
                             "the paper's fix against dead latents (section 2.4)")
    assert sae.W_enc.data_ptr() != sae.W_dec.data_ptr(), "W_enc and W_dec share memory: clone, then train apart"
    for name in ("b_enc", "b_pre"):
        assert not getattr(sae, name).detach().any(), f"self.{name} should start at zero"
    again = cls(d, n, k, seed=seed)
    assert torch.equal(again.W_dec.detach(), sae.W_dec.detach()), \
        f"two SAEs built with seed={seed} have different decoders: draw from torch.Generator().manual_seed(seed), " \
        "not from torch's global random state"
    other = cls(d, n, k, seed=seed + 1)
    assert not torch.equal(other.W_dec.detach(), sae.W_dec.detach()), \
        f"seed={seed} and seed={seed + 1} give the same decoder: use the seed argument"


def _reference_like(sae) -> MyTopKSAE:
    """The reference SAE holding `sae`'s four parameters."""
    n, d = sae.W_dec.shape
    ref = MyTopKSAE(d, n, sae.k)
    ref.load_state_dict({name: getattr(sae, name).detach() for name in ("W_enc", "W_dec", "b_enc", "b_pre")})
    return ref


@exercise("2.5", constrain_decoder_grad_, renormalize_decoder_)
def check_decoder_constraint(project, renormalize) -> None:
    """Exercise 2.5: the projection leaves no gradient along any row and changes nothing else; the renormalisation
    makes every row unit norm and keeps its direction. Varies the shape (10 x 6, one row,
    fewer rows than dimensions, many more), rows whose gradient is already orthogonal (unchanged) or zero, and row
    norms from 0.01 to 100."""
    g = torch.Generator().manual_seed(0)
    W = nn.Parameter(torch.nn.functional.normalize(torch.randn(10, 6, generator=g), dim=1))
    grad = torch.randn(10, 6, generator=g)
    W.grad, before = grad.clone(), W.data.clone()
    run_case("calling constrain_decoder_grad_", project, W)
    assert torch.equal(W.data, before), "constrain_decoder_grad_ changed W_dec itself: it changes only W_dec.grad " \
        "(the optimiser step, then the renormalisation, change the weights)"
    along = (W.grad * W.data).sum(-1)
    diagnose(W.grad, [(torch.zeros_like(grad), "the whole gradient is gone: remove only its component ALONG each "
                                                "row, (g . w) w"),
                      (grad - (grad * W.data).sum(0, keepdim=True) * W.data,
                       "you summed over rows (dim=0): the dot product is per row, over d (dim=-1)"),
                      (grad, "the gradient is unchanged: change W_dec.grad in place")])
    assert float(along.abs().max()) < 1e-5, "the projected gradient still has a component along some rows"
    assert torch.allclose(W.grad, grad - (grad * W.data).sum(-1, keepdim=True) * W.data, atol=1e-5), \
        "remove (g . w) w from each row's gradient g, and nothing else"
    for what, (n, d) in {"with one row (1 x 4)": (1, 4), "with fewer rows than dimensions (3 x 8)": (3, 8),
                         "with many more rows than dimensions (64 x 3)": (64, 3)}.items():
        W = nn.Parameter(torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1))
        grad = torch.randn(n, d, generator=g)
        if n > 2:  # a row whose gradient is already orthogonal to it (unchanged), and a row with no gradient
            grad[1] -= (grad[1] @ W.data[1]) * W.data[1]
            grad[2] = 0.0
        W.grad, before = grad.clone(), W.data.clone()
        run_case(what, project, W)
        assert torch.equal(W.data, before), f"{what}: constrain_decoder_grad_ changed W_dec itself: it changes only " \
            "W_dec.grad (the renormalisation comes after the optimiser step)"
        same_output(W.grad, grad - (grad * before).sum(-1, keepdim=True) * before,
                    f"{what}: the projected gradient", atol=1e-5)
    W = nn.Parameter(torch.nn.functional.normalize(torch.randn(10, 6, generator=g), dim=1))
    with torch.no_grad():
        W.data *= torch.linspace(0.5, 2.0, 10)[:, None]
    direction = W.data / W.data.norm(dim=1, keepdim=True)
    run_case("calling renormalize_decoder_", renormalize, W)
    assert torch.allclose(W.data.norm(dim=1), torch.ones(10), atol=1e-5), \
        "after renormalize_decoder_ every row must have norm 1 (divide each ROW by its norm, dim=-1, in place)"
    assert torch.allclose(W.data, direction, atol=1e-5), "renormalising must keep each row's direction"
    for what, (n, d) in {"with one row (1 x 4)": (1, 4), "with row norms from 0.01 to 100 (16 x 5)": (16, 5),
                         "with many more rows than dimensions (64 x 3)": (64, 3)}.items():
        rows = torch.randn(n, d, generator=g)
        rows = rows / rows.norm(dim=1, keepdim=True) * torch.logspace(-2, 2, n)[:, None]
        W = nn.Parameter(rows.clone())
        run_case(what, renormalize, W)
        same_output(W.data, rows / rows.norm(dim=1, keepdim=True), f"{what}: the renormalised rows", atol=1e-5)
    passed("decoder constraint")


@exercise("2.6", train_my_sae, MyTopKSAE)
def check_training(train_fn, sae_cls, x_TD: torch.Tensor, steps: int, batch: int = 512, lr: float = 2e-3,
                   n: int = 256, k: int = 8, k_aux: int = 32, dead_steps: int = 50,
                   multi_topk_steps: int = 0) -> None:
    """Exercise 2.6: the learner's loop on a toy case where 3/4 of the latents start dead, then beside saelab's
    `Trainer` with the same settings (constant lr, b_pre the mean, the same data): their held-out normalized MSE must
    agree within 10%.

    Every run is watched (`LoopWatch`): at each `opt.step()` the decoder's gradient must have no component along its
    rows and the rows must be unit norm (else the decoder drifts), Adam with the paper's betas and epsilon and the
    given lr, batches of the given size, one loss and one optimiser step per step. The dead case (`DeadCase`) varies
    k_aux (0 switches AuxK off), aux_coef (0 too) and the seed (the same seed repeats the run, another changes it);
    in its full run only latents that have not fired for about dead_steps steps may get a gradient without firing,
    they must get it (AuxK), each returned loss must be that step's normalized MSE, and at least 20% of the dead
    latents must fire again on held-out samples (saelab's Trainer revives most of them with AuxK and none without:
    tests/test_exercises.py). `multi_topk_steps` > 0 also trains with `multi_topk=True` and compares the
    reconstruction at 4k with `Trainer`'s Multi-TopK SAE."""
    from saelab.evals.reconstruction import reconstruction_metrics
    from saelab.training.trainer import TrainConfig, Trainer

    try:
        _check_sae_class(sae_cls)
    except AssertionError as err:
        raise AssertionError(f"your SAE class (exercise 2.4; run check_my_sae on it): {err}") from err
    revived = _check_dead_latents(train_fn, sae_cls)  # first: it takes seconds, the comparison below a minute
    x_TD = x_TD.float()
    held, train = x_TD[:2048], x_TD[2048:]
    sae = run_case(f"building sae_cls({x_TD.shape[1]}, {n}, {k}, seed=0)", sae_cls, x_TD.shape[1], n, k, seed=0)
    watch = LoopWatch(sae)
    with watch.watching():
        history = run_case("running your loop", train_fn, sae, train, steps=steps, batch=batch, lr=lr, k_aux=k_aux,
                           dead_steps=dead_steps)
    _check_run(watch, history, sae, steps, batch, lr)
    with torch.no_grad():
        recon, x_n, _, z = sae(held)
        mine = float(normalized_mse(recon, x_n))
        dead_mine = float(((z > 0).sum(0) == 0).float().mean())
    if mine != mine:
        raise AssertionError("the held-out normalized MSE is NaN: look for a division by a zero norm (all-zero "
                             "samples)")
    cfg = TrainConfig(n_latents=n, k=k, k_aux=k_aux, batch_size=batch, epochs=steps * batch / len(train), lr=lr,
                      warmup_frac=0.0, decay_frac=0.0, bias_init="mean", dead_tokens=dead_steps * batch,
                      eval_every=10**9, checkpoint_every=0, progress=False)
    trainer = Trainer(cfg, train)  # in memory: nothing written
    trainer.train()
    ref = reconstruction_metrics(trainer.sae, held)
    report = {"yours": mine, "Trainer": ref["nmse"], "your never-fired share": dead_mine,
              "Trainer's never-fired share": ref["dead_eval_frac"], "dead latents your loop revived": revived}
    if mine > 1.1 * ref["nmse"]:
        hints = []
        fresh = sae_cls(x_TD.shape[1], n, k, seed=0)
        if not torch.allclose(fresh.W_enc.detach(), fresh.W_dec.detach()):
            hints.append("your W_enc does not start as the decoder's transpose (exercise 2.4): the paper's "
                         "initialisation")
        if dead_mine > ref["dead_eval_frac"] + 0.05:
            hints.append(f"{dead_mine:.0%} of your latents never fire on held-out data against "
                         f"{ref['dead_eval_frac']:.0%} for Trainer: does AuxK reach the dead latents?")
        hints.append("check the order in each step: loss, zero_grad, backward, constrain_decoder_grad_, opt.step(), "
                     "renormalize_decoder_; and Adam's betas (0.9, 0.999)")
        raise AssertionError(f"held-out normalized MSE {mine:.4f}, Trainer {ref['nmse']:.4f} (more than 10% apart): "
                             + "; ".join(hints))
    if multi_topk_steps:
        report.update(_check_multi_topk(train_fn, sae_cls, train, held, multi_topk_steps, batch, lr, n, k, k_aux,
                                        dead_steps))
    passed(f"train_my_sae (held-out normalized MSE {mine:.4f}, Trainer {ref['nmse']:.4f}"
           + (f"; with multi_topk at 4k {report['yours at 4k (Multi-TopK)']:.4f}, Trainer "
              f"{report['Trainer at 4k (Multi-TopK)']:.4f})" if multi_topk_steps else ")"))
    print({key: round(value, 4) for key, value in report.items()})


def _check_run(watch: LoopWatch, history, sae, steps: int, batch: int, lr: float) -> None:
    """What every run must do: one loss per step, one optimiser step per step, Adam as the paper with the given lr,
    batches of the given size, the decoder constrained at every step and unit norm at the end, no NaN."""
    assert len(history) == steps, f"return one training loss per step ({steps}), got {len(history)}"
    watch.verdict(lr)
    if watch.steps and watch.steps != steps:
        raise AssertionError(f"your loop made {watch.steps} optimiser steps for steps={steps}: one opt.step() per step")
    first = watch.training_calls()[:1]
    if first and first[0].rows != batch:
        raise AssertionError(f"your loop's training batches have {first[0].rows} rows, but the check passed "
                             f"batch={batch}: use the batch argument")
    if not all(float(h) == float(h) for h in history):
        raise AssertionError("the loss became NaN: look for a division by a zero norm (all-zero samples) or a "
                             "normalized MSE over an empty set of dead latents")
    norms = sae.W_dec.detach().norm(dim=1)
    if float((norms - 1).abs().max()) > 1e-3:
        raise AssertionError(f"your decoder rows ended at norms {float(norms.min()):.3f}-{float(norms.max()):.3f}: "
                             "the decoder drifts; call renormalize_decoder_ after every optimiser step")


def _check_b_pre_start(watch: LoopWatch, x_TD: torch.Tensor) -> None:
    """b_pre, as the first forward pass saw it, must be the mean of the normalised samples."""
    if watch.b_pre_start is None:
        return
    want = normalize_tokens(x_TD[:8192]).mean(0)
    got = watch.b_pre_start
    if torch.allclose(got, want, atol=1e-4):
        return
    if torch.allclose(got, x_TD[:8192].mean(0), atol=1e-4):
        raise AssertionError("b_pre starts at the mean of the RAW samples: the SAE encodes and reconstructs the "
                             "normalised input x_n, so set b_pre to normalize_tokens(x_TD[:8192]).mean(0)")
    raise AssertionError(f"b_pre starts {float((got - want).norm()):.3g} away from the mean of the normalised samples: "
                         "set it to normalize_tokens(x_TD[:8192]).mean(0) before the first step")


def _check_dead_latents(train_fn, sae_cls) -> float:
    """Run the learner's loop on `DeadCase` (3/4 of the latents start dead): AuxK switched off by k_aux = 0 and by
    aux_coef = 0, the seed, then the full run. Returns the share of the dead latents that fire again."""
    case = DeadCase()
    x, held = case.data()

    def run(what: str, steps: int, **changes):
        sae = sae_cls(case.d, case.n, case.k, seed=0)
        case.kill_(sae)
        watch = LoopWatch(sae)
        kwargs = dict(steps=steps, batch=case.batch, lr=case.lr, k_aux=case.k_aux, dead_steps=case.dead_steps)
        with watch.watching():
            history = run_case(what, train_fn, sae, x, **{**kwargs, **changes})
        return sae, watch, [float(h) for h in history]

    where = f"on a toy case where {case.n_dead} of {case.n} latents start dead"
    short = case.dead_steps + 10
    _, watch, off = run(f"{where}, with k_aux=0", short, k_aux=0)
    check_aux_off(watch, case, f"{where}, with k_aux=0", "use the k_aux argument (k_aux=0 switches AuxK off)")
    _, watch, _ = run(f"{where}, with aux_coef=0", short, aux_coef=0.0)
    check_aux_off(watch, case, f"{where}, with aux_coef=0", "multiply the AuxK loss by the aux_coef argument")
    if run(f"{where}, with k_aux=0 again", short, k_aux=0)[2] != off:
        raise AssertionError("two runs with the same arguments and seed=0 returned different losses: draw the "
                             "batches from torch.Generator().manual_seed(seed), not from torch's global random state")
    if run(f"{where}, with k_aux=0 and seed=1", short, k_aux=0, seed=1)[2] == off:
        raise AssertionError("seed=1 returned the same losses as seed=0: use the seed argument for the batches")
    sae, watch, history = run(where, case.steps)
    _check_run(watch, history, sae, case.steps, case.batch, case.lr)
    _check_b_pre_start(watch, x)
    check_dead_latent_handling(watch, history, case)
    with torch.no_grad():
        fired = (sae(held)[3] > 0).any(0)
    share = revived_share(fired, case)
    if share < 0.2:
        raise AssertionError(f"{where}: after {case.steps} steps only {share:.0%} of them fire on held-out samples "
                             "(saelab's Trainer on this case: about 90% with AuxK, none without): AuxK must give the "
                             "dead latents a gradient towards the residual they can model")
    return share


def _check_multi_topk(train_fn, sae_cls, train, held, steps, batch, lr, n, k, k_aux, dead_steps) -> dict:
    """With multi_topk=True the learner's SAE must reconstruct at 4k about as well as Trainer's Multi-TopK SAE."""
    from saelab.training.trainer import TrainConfig, Trainer

    sae = sae_cls(train.shape[1], n, k, seed=0)
    train_fn(sae, train, steps=steps, batch=batch, lr=lr, k_aux=k_aux, dead_steps=dead_steps, multi_topk=True)
    with torch.no_grad():
        recon, x_n, _, _ = sae(held, k=4 * k)
        mine = float(normalized_mse(recon, x_n))
    cfg = TrainConfig(n_latents=n, k=k, k_aux=k_aux, batch_size=batch, epochs=steps * batch / len(train), lr=lr,
                      multi_topk=True, warmup_frac=0.0, decay_frac=0.0, bias_init="mean",
                      dead_tokens=dead_steps * batch, eval_every=10**9, checkpoint_every=0, progress=False)
    trainer = Trainer(cfg, train)  # in memory: nothing written
    trainer.train()
    with torch.no_grad():
        x_ref, _ = trainer.sae.preprocess(held)
        out = trainer.sae.encode(held, k=4 * k)
        ref = float(normalized_mse(trainer.sae.decode_normalized(out.top_acts_BK, out.top_idx_BK), x_ref))
    if mine < 0.85 * ref:
        raise AssertionError(f"with multi_topk=True your SAE reconstructs at 4k = {4 * k} with normalized MSE "
                             f"{mine:.4f}, far better than Trainer's Multi-TopK SAE ({ref:.4f}): the 4k term is "
                             "weighted 1/8, L(k) + L(4k) / 8 (section 5.3)")
    if mine > 1.15 * ref:
        raise AssertionError(f"with multi_topk=True your SAE reconstructs at 4k = {4 * k} with normalized MSE "
                             f"{mine:.4f}, "
                             f"Trainer's Multi-TopK SAE {ref:.4f}: add the paper's L(4k) / 8 to the loss when "
                             "multi_topk is set (section 5.3)")
    return {"yours at 4k (Multi-TopK)": mine, "Trainer at 4k (Multi-TopK)": ref}


def save_my_sae(sae: nn.Module, folder, cache) -> object:
    """Write the learner's SAE (exercise 2.4's four parameters) as a saelab SAE folder trained on `cache`, so
    notebook 03 can load it with `SAE.load` and evaluate it beside the course's SAEs. Returns the saelab `SAE`."""
    from saelab.acts.cache import data_record
    from saelab.sae.config import SAEConfig
    from saelab.sae.model import SAE

    m = cache.manifest
    n, d = sae.W_dec.shape
    out = SAE(SAEConfig(d_in=d, n_latents=n, k=sae.k, normalize="per_token_unit_norm", model=m.get("model"),
                        site=m.get("site"), layer=m.get("layer")), seed=None)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_pre"):
            getattr(out, name).copy_(getattr(sae, name).detach().cpu())
    out.data_record = data_record(m)
    out.save(folder, extra={"trained_by": "the learner's train_my_sae (notebook 02, exercise 2.6)"})
    return out

"""Notebook 02, part 2 (build your own TopK SAE): the model, the unit-norm decoder and a training loop, written
from the pieces of exercises 2.1-2.3 and checked against saelab's `Trainer` on the same data and seed.

Exercises: 2.4 `MyTopKSAE` (transpose initialisation, the forward pass with the paper's per-token input
normalisation), 2.5 `constrain_decoder_grad_` / `renormalize_decoder_` (the unit-norm decoder), 2.6 (hard)
`train_my_sae` (Adam as the paper, AuxK on dead latents, Multi-TopK). `check_training` trains the learner's loop
and `Trainer` with the same settings and names what is missing when the two disagree; while the learner's loop runs it
watches `torch.optim.Adam` (the decoder constraint at every step, the optimiser's settings). `save_my_sae` writes the
learner's SAE as a saelab SAE folder for the later notebooks.
"""

from __future__ import annotations

import torch
from torch import nn

from saelab.sae.input_norm import normalize
from saelab.teach.exercises.base import diagnose, exercise, passed
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
    """`cls(d, n, k, seed)` must build the paper's initialisation and forward pass."""
    d, n, k = 12, 48, 4
    sae = cls(d, n, k, seed=3)
    for name, shape in (("W_enc", (n, d)), ("W_dec", (n, d)), ("b_enc", (n,)), ("b_pre", (d,))):
        got = tuple(getattr(sae, name).shape) if hasattr(sae, name) else None
        assert got == shape, f"self.{name} should be an nn.Parameter of shape {shape}, got {got}"
    norms = sae.W_dec.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones(n), atol=1e-5), \
        f"decoder rows have norms {float(norms.min()):.3f}-{float(norms.max()):.3f}: start them at unit norm"
    if not torch.allclose(sae.W_enc.detach(), sae.W_dec.detach(), atol=1e-6):
        raise AssertionError("W_enc is not the decoder's transpose: initialise the encoder as W_dec (rows here), "
                             "the paper's fix against dead latents (section 2.4)")
    assert sae.W_enc.data_ptr() != sae.W_dec.data_ptr(), "W_enc and W_dec share memory: clone, then train apart"
    g = torch.Generator().manual_seed(0)
    x = 3.0 + 2.0 * torch.randn(16, d, generator=g)
    x[-1] = 0.0  # an all-zero sample (the toy data has some: no feature active)
    with torch.no_grad():
        sae.b_pre.copy_(0.1 * torch.randn(d, generator=g))
        sae.b_enc.copy_(0.05 * torch.randn(n, generator=g))
        out = sae(x)
        assert isinstance(out, tuple) and len(out) == 4, "return (recon, x_n, pre, z) from forward"
        recon, x_n, pre, z = out
        if not torch.isfinite(x_n).all():
            raise AssertionError("x_n has NaN or inf for an all-zero sample: its norm is 0, so clamp the norm before "
                                 "dividing (norm.clamp_min(1e-8)); normalize_tokens does")
        ref = MyTopKSAE(d, n, k)
        ref.load_state_dict({name: getattr(sae, name).detach() for name in ("W_enc", "W_dec", "b_enc", "b_pre")})
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
    passed("MyTopKSAE")


@exercise("2.5", constrain_decoder_grad_, renormalize_decoder_)
def check_decoder_constraint(project, renormalize) -> None:
    """Exercise 2.5: the projection leaves no gradient along any row; the renormalisation makes rows unit norm."""
    g = torch.Generator().manual_seed(0)
    W = nn.Parameter(torch.nn.functional.normalize(torch.randn(10, 6, generator=g), dim=1))
    grad = torch.randn(10, 6, generator=g)
    W.grad = grad.clone()
    project(W)
    along = (W.grad * W.data).sum(-1)
    diagnose(W.grad, [(torch.zeros_like(grad), "the whole gradient is gone: remove only its component ALONG each "
                                                "row, (g . w) w"),
                      (grad - (grad * W.data).sum(0, keepdim=True) * W.data,
                       "you summed over rows (dim=0): the dot product is per row, over d (dim=-1)"),
                      (grad, "the gradient is unchanged: change W_dec.grad in place")])
    assert float(along.abs().max()) < 1e-5, "the projected gradient still has a component along some rows"
    assert torch.allclose(W.grad, grad - (grad * W.data).sum(-1, keepdim=True) * W.data, atol=1e-5), \
        "remove (g . w) w from each row's gradient g, and nothing else"
    with torch.no_grad():
        W.data *= torch.linspace(0.5, 2.0, 10)[:, None]
    direction = W.data / W.data.norm(dim=1, keepdim=True)
    renormalize(W)
    assert torch.allclose(W.data.norm(dim=1), torch.ones(10), atol=1e-5), \
        "after renormalize_decoder_ every row must have norm 1 (divide each ROW by its norm, dim=-1, in place)"
    assert torch.allclose(W.data, direction, atol=1e-5), "renormalising must keep each row's direction"
    passed("decoder constraint")


@exercise("2.6", train_my_sae, MyTopKSAE)
def check_training(train_fn, sae_cls, x_TD: torch.Tensor, steps: int, batch: int = 512, lr: float = 2e-3,
                   n: int = 256, k: int = 8, k_aux: int = 32, dead_steps: int = 50,
                   multi_topk_steps: int = 0) -> None:
    """Exercise 2.6: train the learner's SAE with the learner's loop and saelab's `Trainer` with the same settings
    (constant lr, b_pre the mean, the same data); their held-out normalized MSE must agree within 10%.

    While the learner's loop runs, `torch.optim.Adam` is watched: at every `opt.step()` the decoder's gradient must
    have no component along its rows (the projection ran first) and the rows must be unit norm (the previous step
    renormalised), with the paper's betas and epsilon. `multi_topk_steps` > 0 also trains with `multi_topk=True`
    and compares the reconstruction at 4k with `Trainer`'s Multi-TopK SAE."""
    from saelab.evals.reconstruction import reconstruction_metrics
    from saelab.training.trainer import TrainConfig, Trainer

    x_TD = x_TD.float()
    held, train = x_TD[:2048], x_TD[2048:]
    sae = sae_cls(x_TD.shape[1], n, k, seed=0)
    with _AdamSpy.watching(sae) as spy:
        history = train_fn(sae, train, steps=steps, batch=batch, lr=lr, k_aux=k_aux, dead_steps=dead_steps)
    assert len(history) == steps, f"return one training loss per step ({steps}), got {len(history)}"
    spy.verdict()
    with torch.no_grad():
        recon, x_n, _, z = sae(held)
        mine = float(normalized_mse(recon, x_n))
        norms = sae.W_dec.norm(dim=1)
        dead_mine = float(((z > 0).sum(0) == 0).float().mean())
    cfg = TrainConfig(n_latents=n, k=k, k_aux=k_aux, batch_size=batch, epochs=steps * batch / len(train), lr=lr,
                      warmup_frac=0.0, decay_frac=0.0, bias_init="mean", dead_tokens=dead_steps * batch,
                      eval_every=10**9, checkpoint_every=0, progress=False)
    trainer = Trainer(cfg, train)  # in memory: nothing written
    trainer.train()
    ref = reconstruction_metrics(trainer.sae, held)
    report = {"yours": mine, "Trainer": ref["nmse"], "your never-fired share": dead_mine,
              "Trainer's never-fired share": ref["dead_eval_frac"]}
    if not all(h == h for h in history) or mine != mine:
        raise AssertionError("the loss became NaN: look for a division by a zero norm (all-zero samples) or a "
                             "normalized MSE over an empty set of dead latents")
    if float((norms - 1).abs().max()) > 1e-3:
        raise AssertionError(f"your decoder rows ended at norms {float(norms.min()):.3f}-{float(norms.max()):.3f}: "
                             "call renormalize_decoder_ after every optimiser step")
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


class _AdamSpy:
    """Replaces `torch.optim.Adam` while the learner's loop runs and records, at each `step()`, how much of the
    decoder's gradient lies along its rows and how far the rows are from unit norm."""

    def __init__(self, sae):
        self.sae, self.along, self.off_norm, self.settings, self.steps = sae, [], [], [], 0

    @classmethod
    def watching(cls, sae):
        from contextlib import contextmanager

        spy = cls(sae)
        original = torch.optim.Adam

        class Watched(original):
            def __init__(self, params, *args, **kwargs):
                super().__init__(params, *args, **kwargs)
                spy.settings.append((tuple(self.defaults["betas"]), self.defaults["eps"]))

            @torch.no_grad()
            def step(self, closure=None):
                W = spy.sae.W_dec
                if W.grad is not None:
                    rows = W.detach()
                    along = (W.grad * rows).sum(-1).abs() / W.grad.norm(dim=-1).clamp_min(1e-12)
                    spy.along.append(float(along.max()))
                    spy.off_norm.append(float((rows.norm(dim=-1) - 1).abs().max()))
                spy.steps += 1
                return super().step(closure)

        @contextmanager
        def patched():
            torch.optim.Adam = Watched
            try:
                yield spy
            finally:
                torch.optim.Adam = original
        return patched()

    def verdict(self) -> None:
        if not self.steps:
            print("note: your loop did not step torch.optim.Adam (another optimiser, or Adam imported under another "
                  "name), so the check could not watch the decoder constraint at each step; it still compares the "
                  "result with Trainer")
            return
        if self.settings and self.settings[0] != ((0.9, 0.999), 6.25e-10):
            (b1, b2), eps = self.settings[0]
            raise AssertionError(f"Adam with betas ({b1}, {b2}) and eps {eps:g}: the paper uses betas (0.9, 0.999) "
                                 "and eps 6.25e-10")
        if self.off_norm and max(self.off_norm[1:] or [0.0]) > 1e-3:
            raise AssertionError(f"at opt.step() some decoder rows are {max(self.off_norm[1:]):.3f} away from unit "
                                 "norm: call renormalize_decoder_ after every optimiser step")
        if self.along and max(self.along[1:] or self.along) > 1e-3:
            raise AssertionError(f"at opt.step() the decoder gradient still points along its rows (up to "
                                 f"{max(self.along):.2f} of a row's gradient): call constrain_decoder_grad_(sae.W_dec) "
                                 "after loss.backward() and before opt.step()")


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

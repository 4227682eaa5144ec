"""Watching a learner's training loop (exercise 2.6) from outside: what `torch.optim.Adam` sees at each step, what the
SAE's forward pass returns, and a toy case where most latents start dead so that only AuxK can bring them back.

`LoopWatch` replaces `torch.optim.Adam` while the loop runs (the paper's settings, the decoder constraint at every
step, which encoder rows receive a gradient) and hooks the SAE's forward pass (batch size, which latents fired, the
step's normalized MSE). `dead_latent_case` builds the case; `check_dead_latent_handling` reads a run on it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from saelab.teach.exercises.training import normalized_mse


@dataclass
class _Call:
    step: int
    """Adam steps taken before this forward call."""
    rows: int
    grad: bool
    """The reconstruction carries a gradient (a training forward pass)."""
    fired_N: torch.Tensor
    positive_N: torch.Tensor
    """Latents with a positive pre-activation on some row (what AuxK's ReLU lets through)."""
    nmse: float


@dataclass
class LoopWatch:
    """What a learner's loop did, step by step (filled while `watching` is active)."""

    sae: torch.nn.Module
    settings: list = field(default_factory=list)
    """(betas, eps, lr) of each Adam built."""
    along: list = field(default_factory=list)
    off_norm: list = field(default_factory=list)
    enc_grad_rows: list = field(default_factory=list)
    """Per step: which encoder rows had a non-zero gradient at opt.step()."""
    calls: list = field(default_factory=list)
    steps: int = 0
    b_pre_start: torch.Tensor | None = None
    """b_pre as the first forward pass saw it."""

    @contextmanager
    def watching(self):
        """Replace torch.optim.Adam and hook the SAE's forward pass for the duration."""
        watch, original = self, torch.optim.Adam

        class Watched(original):
            def __init__(self, params, *args, **kwargs):
                super().__init__(params, *args, **kwargs)
                watch.settings.append((tuple(self.defaults["betas"]), self.defaults["eps"], self.defaults["lr"]))

            @torch.no_grad()
            def step(self, closure=None):
                watch._record_step()
                return super().step(closure)

        handle = self.sae.register_forward_hook(self._record_call)
        torch.optim.Adam = Watched
        try:
            yield self
        finally:
            torch.optim.Adam = original
            handle.remove()

    def _record_step(self) -> None:
        W, E = self.sae.W_dec, getattr(self.sae, "W_enc", None)
        if W.grad is not None:
            rows = W.detach()
            along = (W.grad * rows).sum(-1).abs() / W.grad.norm(dim=-1).clamp_min(1e-12)
            self.along.append(float(along.max()))
            self.off_norm.append(float((rows.norm(dim=-1) - 1).abs().max()))
        if E is not None:
            self.enc_grad_rows.append(None if E.grad is None else (E.grad != 0).any(-1).cpu())
        self.steps += 1

    def _record_call(self, _module, args, output) -> None:
        if not (isinstance(output, tuple) and len(output) == 4 and args):
            return
        training = bool(getattr(output[0], "requires_grad", False))
        if self.b_pre_start is None and hasattr(self.sae, "b_pre"):
            self.b_pre_start = self.sae.b_pre.detach().cpu().clone()
        with torch.no_grad():
            recon, x_n, pre, z = (t.detach() for t in output)
            self.calls.append(_Call(self.steps, len(args[0]), training, (z > 0).any(0).cpu(),
                                    (pre > 0).any(0).cpu(), float(normalized_mse(recon, x_n))))

    def training_calls(self) -> list[_Call]:
        """The first forward pass with gradients of each step (the training batch)."""
        first = {}
        for c in self.calls:
            if c.grad and c.step not in first:
                first[c.step] = c
        return [first[s] for s in sorted(first)]

    def verdict(self, lr: float | None = None) -> None:
        """Adam's settings and the decoder constraint at every step."""
        if not self.steps:
            print("note: your loop did not step torch.optim.Adam (another optimiser, or Adam imported under another "
                  "name), so the check could not watch the decoder constraint at each step; it still compares the "
                  "result with Trainer")
            return
        if self.settings and self.settings[0][:2] != ((0.9, 0.999), 6.25e-10):
            (b1, b2), eps, _ = self.settings[0]
            raise AssertionError(f"Adam with betas ({b1}, {b2}) and eps {eps:g}: the paper uses betas (0.9, 0.999) "
                                 "and eps 6.25e-10")
        if lr is not None and self.settings and abs(self.settings[0][2] - lr) > 1e-12:
            raise AssertionError(f"Adam's learning rate is {self.settings[0][2]:g}, but the check passed lr={lr:g}: "
                                 "use the lr argument")
        if self.off_norm and max(self.off_norm[1:] or [0.0]) > 1e-3:
            raise AssertionError(f"at opt.step() some decoder rows are {max(self.off_norm[1:]):.3f} away from unit "
                                 "norm: the decoder drifts; call renormalize_decoder_ after every optimiser step")
        if self.along and max(self.along[1:] or self.along) > 1e-3:
            raise AssertionError(f"at opt.step() the decoder gradient still points along its rows (up to "
                                 f"{max(self.along):.2f} of a row's gradient): call constrain_decoder_grad_(sae.W_dec) "
                                 "after loss.backward() and before opt.step()")


# ---- the dead-latent case ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeadCase:
    """Toy data with more features (64) than the SAE's live latents (32 of 128), and an SAE whose other 96 latents
    start dead: their encoder rows are the transpose initialisation scaled down 20x, so their pre-activations (at
    most ~0.05) never reach the top k = 4, and without AuxK they never get a gradient."""

    d: int = 32
    n_features: int = 64
    active: int = 4
    n: int = 128
    k: int = 4
    n_dead: int = 96
    scale: float = 0.05
    steps: int = 150
    batch: int = 256
    lr: float = 3e-3
    k_aux: int = 32
    dead_steps: int = 20

    def data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(training samples [8192, d], held-out samples [2048, d]): exactly `active` features per sample, magnitudes
        uniform in [0.5, 1.5]. The generator's seed differs from the SAE's so the decoder does not start on them."""
        g = torch.Generator().manual_seed(20240606)
        F = torch.nn.functional.normalize(torch.randn(self.n_features, self.d, generator=g), dim=1)
        which = torch.rand(10240, self.n_features, generator=g).argsort(1)[:, :self.active]
        c = torch.zeros(10240, self.n_features).scatter(1, which, 0.5 + torch.rand(10240, self.active, generator=g))
        x = c @ F
        return x[2048:], x[:2048]

    @property
    def killed(self) -> torch.Tensor:
        return torch.arange(self.n - self.n_dead, self.n)

    def kill_(self, sae: torch.nn.Module) -> None:
        """Start the last n_dead latents dead (works on MyTopKSAE and saelab's SAE: both store W_enc as [n, d])."""
        with torch.no_grad():
            sae.W_enc[self.killed] = self.scale * sae.W_dec[self.killed]
            sae.b_enc[self.killed] = 0.0


def revived_share(fired_N: torch.Tensor, case: DeadCase) -> float:
    """Share of the latents the case started dead that fire on the held-out samples."""
    return float(fired_N[case.killed].float().mean())


def check_dead_latent_handling(watch: LoopWatch, history: list, case: DeadCase) -> None:
    """Read a watched run on the dead case: the gradient reaches a latent only where it fired in the step's batch or
    had not fired for about dead_steps steps (counted from the forward passes seen), dead latents do get it (AuxK),
    and each returned loss is that step's normalized MSE. One step of slack either side of dead_steps."""
    calls = watch.training_calls()
    if not watch.steps or not calls or any(r is None for r in watch.enc_grad_rows) or len(calls) < watch.steps:
        print("note: the check could not follow your loop step by step (no torch.optim.Adam, or no forward pass with "
              "gradients each step), so it judges AuxK by its result only")
        return
    D = case.dead_steps
    since = torch.zeros(case.n, dtype=torch.long)
    expected, reached = [], []
    for t, (call, grad_N) in enumerate(zip(calls, watch.enc_grad_rows)):
        since += 1
        since[call.fired_N] = 0
        stray = grad_N & ~call.fired_N & (since < D - 1)
        if bool(stray.any()):
            j = int(stray.nonzero()[0])
            raise AssertionError(
                f"at step {t + 1} latent {j} received a gradient without firing in that step's batch, after only "
                f"{int(since[j])} step(s) without firing: only latents that have not fired for more than dead_steps = "
                f"{D} steps are dead (AuxK must leave the others alone). Count, per "
                "latent, the steps since it last fired (add 1 every step, reset to 0 where (z > 0).any(0)), and give "
                "AuxK only those (or: the gradients pile up because opt.zero_grad() is missing)")
        strict = since > D + 1
        if bool((strict & call.positive_N).any()):
            expected.append(t)
            if bool((grad_N & strict).any()):
                reached.append(t)
    if expected and not reached:
        raise AssertionError(f"latents that had not fired for more than dead_steps = {D} steps never received a "
                             "gradient: add aux_coef * auxk_loss(x_n, recon, pre, dead, sae.W_dec, k_aux) to the loss, "
                             "with dead the latents whose count of steps since they last fired exceeds dead_steps")
    if expected and reached[0] > expected[0] + 3:
        raise AssertionError(f"latents are dead (no firing for more than dead_steps = {D} steps) from step "
                             f"{expected[0] + 1}, but AuxK reached them only from step {reached[0] + 1}: use the "
                             "dead_steps argument")
    if len(reached) < 0.9 * len(expected):
        raise AssertionError(f"AuxK reached the dead latents in only {len(reached)} of the {len(expected)} steps that "
                             "had dead latents with positive pre-activations: add the AuxK term at every step where "
                             "some latent is dead")
    _check_history(watch, history)


def check_aux_off(watch: LoopWatch, case: DeadCase, what: str, fix: str) -> None:
    """In a run where AuxK is switched off (`what`), no latent may get a gradient in a step where it did not fire."""
    calls = watch.training_calls()
    if not watch.steps or len(calls) < watch.steps or any(r is None for r in watch.enc_grad_rows):
        return
    for t, (call, grad_N) in enumerate(zip(calls, watch.enc_grad_rows)):
        stray = grad_N & ~call.fired_N
        if bool(stray.any()):
            raise AssertionError(f"{what}, latent {int(stray.nonzero()[0])} still received a gradient at step {t + 1} "
                                 f"without firing (AuxK is still on): {fix}")


def _check_history(watch: LoopWatch, history: list) -> None:
    """history[t] must be the normalized MSE of one of the forward passes made at step t (or just after it)."""
    by_step: dict[int, list[float]] = {}
    for c in watch.calls:
        by_step.setdefault(c.step, []).append(c.nmse)
    for t, h in enumerate(history):
        seen = by_step.get(t, []) + by_step.get(t + 1, [])
        if seen and not any(abs(float(h) - m) <= 1e-4 * abs(m) + 1e-6 for m in seen):
            raise AssertionError(f"your loop returned {float(h):.5f} for step {t + 1}, but the normalized MSE of that "
                                 f"step's reconstruction is {seen[0]:.5f}: return normalized_mse(recon, x_n) of each "
                                 "step, without the AuxK or Multi-TopK terms")

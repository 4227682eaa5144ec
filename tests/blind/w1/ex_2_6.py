"""Exercise 2.6 — (train_my_sae, MyTopKSAE): blind candidates.

Each candidate is a (train_my_sae, MyTopKSAE) pair; the SAE class is my 2.4 attempt unless the name says otherwise.
"""
import torch
from torch import nn


# ---- my pieces from 2.1-2.5 ----
def topk_activation(pre_BN, k):
    vals, idx = pre_BN.topk(k, dim=-1)
    return torch.zeros_like(pre_BN).scatter(-1, idx, vals.relu())


def normalized_mse(recon_BD, x_BD):
    err = (recon_BD - x_BD).pow(2).sum(-1).mean()
    base = (x_BD - x_BD.mean(0, keepdim=True)).pow(2).sum(-1).mean()
    return err / base


def auxk_loss(x_BD, recon_BD, pre_BN, dead_N, W_dec_ND, k_aux):
    e_BD = (x_BD - recon_BD).detach()
    kk = min(int(k_aux), int(dead_N.sum()))
    if kk == 0:
        return pre_BN.new_zeros(())
    vals, idx = pre_BN.masked_fill(~dead_N, float("-inf")).topk(kk, dim=-1)
    z_BN = torch.zeros_like(pre_BN).scatter(-1, idx, vals.relu())
    return normalized_mse(z_BN @ W_dec_ND, e_BD)


@torch.no_grad()
def constrain_decoder_grad_(W_dec):
    u = W_dec / W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    W_dec.grad.sub_((W_dec.grad * u).sum(-1, keepdim=True) * u)


@torch.no_grad()
def renormalize_decoder_(W_dec):
    W_dec.div_(W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12))


def normalize_tokens(x_BD):
    c = x_BD - x_BD.mean(-1, keepdim=True)
    return c / c.norm(dim=-1, keepdim=True).clamp_min(1e-8)


class MyTopKSAE(nn.Module):
    def __init__(self, d: int, n: int, k: int, seed: int = 0):
        super().__init__()
        self.k = k
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(n, d, generator=g)
        W = W / W.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(W.clone())
        self.W_enc = nn.Parameter(W.clone())
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.b_pre = nn.Parameter(torch.zeros(d))

    def forward(self, x_BD, k=None):
        k = self.k if k is None else k
        x_n = normalize_tokens(x_BD)
        pre = (x_n - self.b_pre) @ self.W_enc.T + self.b_enc
        z = topk_activation(pre, k)
        return z @ self.W_dec + self.b_pre, x_n, pre, z


# ---- one configurable loop, so each wrong candidate differs from mine in exactly one place ----
def _loop(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef, multi_topk, seed, *,
          project=True, paper_adam=True, bpre_from="normalised", use_multi=True, multi_weight=1 / 8,
          history="main", reset="any"):
    dev = sae.W_dec.device
    x_TD = x_TD.to(dev).float()
    with torch.no_grad():
        if bpre_from == "normalised":
            sae.b_pre.copy_(normalize_tokens(x_TD).mean(0))
        elif bpre_from == "raw":
            sae.b_pre.copy_(x_TD.mean(0))
    if paper_adam:
        opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999), eps=6.25e-10)
    else:
        opt = torch.optim.Adam(sae.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    since_fired = torch.zeros(sae.W_dec.shape[0], dtype=torch.long, device=dev)
    hist = []
    for _ in range(steps):
        idx = torch.randint(0, len(x_TD), (batch,), generator=g).to(dev)
        recon, x_n, pre, z = sae(x_TD[idx])
        main = normalized_mse(recon, x_n)
        loss = main
        if multi_topk and use_multi:
            recon4 = sae(x_TD[idx], k=4 * sae.k)[0]
            loss = loss + multi_weight * normalized_mse(recon4, x_n)
        since_fired += 1
        fired = (z > 0).any(0) if reset == "any" else (z > 0).all(0)
        since_fired[fired] = 0
        dead = since_fired > dead_steps
        if bool(dead.any()):
            loss = loss + aux_coef * auxk_loss(x_n, recon, pre, dead, sae.W_dec, k_aux)
        hist.append(float(main.detach()) if history == "main" else float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        if project:
            constrain_decoder_grad_(sae.W_dec)
        opt.step()
        renormalize_decoder_(sae.W_dec)
    return hist


def train_right(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef=1 / 32, multi_topk=False, seed=0):
    return _loop(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef, multi_topk, seed)


def train_no_projection(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef=1 / 32, multi_topk=False, seed=0):
    return _loop(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef, multi_topk, seed, project=False)


def train_default_adam(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef=1 / 32, multi_topk=False, seed=0):
    return _loop(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef, multi_topk, seed, paper_adam=False)


def train_raw_mean_bpre(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef=1 / 32, multi_topk=False, seed=0):
    return _loop(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef, multi_topk, seed, bpre_from="raw")


def train_ignore_multi(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef=1 / 32, multi_topk=False, seed=0):
    return _loop(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef, multi_topk, seed, use_multi=False)


def train_multi_unweighted(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef=1 / 32, multi_topk=False, seed=0):
    return _loop(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef, multi_topk, seed, multi_weight=1.0)


def train_history_total(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef=1 / 32, multi_topk=False, seed=0):
    return _loop(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef, multi_topk, seed, history="total")


def train_reset_all(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef=1 / 32, multi_topk=False, seed=0):
    return _loop(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef, multi_topk, seed, reset="all")


class NoBPreSubtractSAE(MyTopKSAE):
    # right loop, but the SAE forgets to subtract b_pre before encoding (matters once b_pre is the data mean)
    def forward(self, x_BD, k=None):
        k = self.k if k is None else k
        x_n = normalize_tokens(x_BD)
        pre = x_n @ self.W_enc.T + self.b_enc
        z = topk_activation(pre, k)
        return z @ self.W_dec + self.b_pre, x_n, pre, z


CANDIDATES = [
    ("no_grad_projection", (train_no_projection, MyTopKSAE),
     "skips constrain_decoder_grad_ before opt.step (only renormalises after)", False),
    ("default_adam_eps", (train_default_adam, MyTopKSAE), "torch's default Adam eps 1e-8, not the paper's 6.25e-10", False),
    ("raw_mean_b_pre", (train_raw_mean_bpre, MyTopKSAE), "b_pre set to the mean of the raw data, not of the normalised data", False),
    ("ignores_multi_topk", (train_ignore_multi, MyTopKSAE), "multi_topk=True is accepted but never adds L(4k)/8", False),
    ("multi_topk_unweighted", (train_multi_unweighted, MyTopKSAE), "adds L(4k) with weight 1 instead of 1/8", False),
    ("history_total_loss", (train_history_total, MyTopKSAE), "records the total loss (with aux and 4k terms), not the normalized MSE", False),
    ("dead_reset_all", (train_reset_all, MyTopKSAE),
     "resets the counter only for latents that fire on every token (.all), so most latents look dead", False),
    ("sae_no_b_pre_subtract", (train_right, NoBPreSubtractSAE), "the model does not subtract b_pre before encoding", False),
    ("mine", (train_right, MyTopKSAE), "my honest attempt at a correct solution", True),
]

"""Exercise 2.4 — MyTopKSAE: blind candidates (a class per candidate)."""
import torch
from torch import nn


def topk_activation(pre_BN, k):
    vals, idx = pre_BN.topk(k, dim=-1)
    return torch.zeros_like(pre_BN).scatter(-1, idx, vals.relu())


def normalize_tokens(x_BD):
    """Paper section 2.1: subtract each token's mean over d, scale to unit norm."""
    c = x_BD - x_BD.mean(-1, keepdim=True)
    return c / c.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def _unit_rows(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, d, generator=g)
    return W / W.norm(dim=-1, keepdim=True)


class MyTopKSAE(nn.Module):
    def __init__(self, d: int, n: int, k: int, seed: int = 0):
        super().__init__()
        self.k = k
        W = _unit_rows(n, d, seed)
        self.W_dec = nn.Parameter(W.clone())
        self.W_enc = nn.Parameter(W.clone())
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.b_pre = nn.Parameter(torch.zeros(d))

    def forward(self, x_BD, k=None):
        k = self.k if k is None else k
        x_n = normalize_tokens(x_BD)
        pre = (x_n - self.b_pre) @ self.W_enc.T + self.b_enc
        z = topk_activation(pre, k)
        recon = z @ self.W_dec + self.b_pre
        return recon, x_n, pre, z


class SharedWeightSAE(MyTopKSAE):
    # one Parameter used as both encoder and decoder: they cannot train apart
    def __init__(self, d, n, k, seed=0):
        super().__init__(d, n, k, seed)
        self.W_enc = self.W_dec


class NoPreBiasSubtractSAE(MyTopKSAE):
    # forgets to subtract b_pre before the encoder (still adds it back after decoding)
    def forward(self, x_BD, k=None):
        k = self.k if k is None else k
        x_n = normalize_tokens(x_BD)
        pre = x_n @ self.W_enc.T + self.b_enc
        z = topk_activation(pre, k)
        return z @ self.W_dec + self.b_pre, x_n, pre, z


class NoInputNormSAE(MyTopKSAE):
    # skips the section-2.1 normalisation: x_n is the raw input
    def forward(self, x_BD, k=None):
        k = self.k if k is None else k
        x_n = x_BD
        pre = (x_n - self.b_pre) @ self.W_enc.T + self.b_enc
        z = topk_activation(pre, k)
        return z @ self.W_dec + self.b_pre, x_n, pre, z


class IndependentEncoderSAE(MyTopKSAE):
    # encoder drawn separately at random (second draw from the generator), not the decoder's transpose
    def __init__(self, d, n, k, seed=0):
        super().__init__(d, n, k, seed)
        g = torch.Generator().manual_seed(seed)
        torch.randn(n, d, generator=g)
        W2 = torch.randn(n, d, generator=g)
        self.W_enc = nn.Parameter(W2 / W2.norm(dim=-1, keepdim=True))


class ColumnNormSAE(MyTopKSAE):
    # normalises the columns (dim 0) instead of the rows: decoder rows are not unit norm
    def __init__(self, d, n, k, seed=0):
        super().__init__(d, n, k, seed)
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(n, d, generator=g)
        W = W / W.norm(dim=0, keepdim=True)
        self.W_dec = nn.Parameter(W.clone())
        self.W_enc = nn.Parameter(W.clone())


class IgnoresKSAE(MyTopKSAE):
    # forward(x, k) ignores k and always uses self.k (Multi-TopK's 4k pass silently runs at k)
    def forward(self, x_BD, k=None):
        return super().forward(x_BD, None)


CANDIDATES = [
    ("shared_parameter", SharedWeightSAE, "W_enc is the same Parameter as W_dec (tied), not a separate copy", False),
    ("no_b_pre_subtract", NoPreBiasSubtractSAE, "b_pre not subtracted before the encoder", False),
    ("no_input_norm", NoInputNormSAE, "skips the per-token normalisation, x_n = x", False),
    ("independent_encoder", IndependentEncoderSAE, "encoder drawn at random instead of the decoder's transpose", False),
    ("column_norm", ColumnNormSAE, "normalises columns (dim 0) instead of decoder rows", False),
    ("ignores_k", IgnoresKSAE, "forward ignores its k argument", False),
    ("mine", MyTopKSAE, "my honest attempt at a correct solution", True),
]

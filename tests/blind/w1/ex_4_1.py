"""Exercise 4.1 — recovery_curve: blind candidates."""
import torch


def _nmse(recon_BD, x_BD):
    err = (recon_BD - x_BD).pow(2).sum(-1).mean()
    base = (x_BD - x_BD.mean(0, keepdim=True)).pow(2).sum(-1).mean()
    return float(err / base)


def _curve(pre_BN, x_BD, W_dec_ND, b_pre_D, ks, *, relu=True, bias=True, metric=_nmse):
    vals, idx = pre_BN.topk(max(ks), dim=-1)  # sorted, so the first k' columns are TopK(k')
    out = []
    for k in ks:
        v = vals[:, :k].relu() if relu else vals[:, :k]
        z = torch.zeros_like(pre_BN).scatter(-1, idx[:, :k], v)
        recon = z @ W_dec_ND + (b_pre_D if bias else 0)
        out.append(metric(recon, x_BD))
    return out


def _first_min(scores):
    return min(range(len(scores)), key=lambda j: scores[j])  # min() keeps the first of equal ones


def curve_right(pre_BN, x_BD, W_dec_ND, b_pre_D, ks):
    ks = list(ks)
    scores = _curve(pre_BN, x_BD, W_dec_ND, b_pre_D, ks)
    return scores, ks[_first_min(scores)]


def curve_no_relu(pre_BN, x_BD, W_dec_ND, b_pre_D, ks):
    # forgets the ReLU after TopK: negative pre-activations among the k' largest are decoded
    ks = list(ks)
    scores = _curve(pre_BN, x_BD, W_dec_ND, b_pre_D, ks, relu=False)
    return scores, ks[_first_min(scores)]


def curve_no_bias(pre_BN, x_BD, W_dec_ND, b_pre_D, ks):
    # decodes z @ W_dec without adding b_pre back
    ks = list(ks)
    scores = _curve(pre_BN, x_BD, W_dec_ND, b_pre_D, ks, bias=False)
    return scores, ks[_first_min(scores)]


def curve_turn_index(pre_BN, x_BD, W_dec_ND, b_pre_D, ks):
    # returns the position of the minimum in ks (argmin) instead of the k' value there
    ks = list(ks)
    scores = _curve(pre_BN, x_BD, W_dec_ND, b_pre_D, ks)
    return scores, int(torch.tensor(scores).argmin())


def curve_last_of_ties(pre_BN, x_BD, W_dec_ND, b_pre_D, ks):
    # keeps the LAST of equal minima (<= while scanning)
    ks = list(ks)
    scores = _curve(pre_BN, x_BD, W_dec_ND, b_pre_D, ks)
    best = 0
    for j in range(len(scores)):
        if scores[j] <= scores[best]:
            best = j
    return scores, ks[best]


def curve_plain_mse(pre_BN, x_BD, W_dec_ND, b_pre_D, ks):
    # plain MSE per entry instead of the normalized MSE (the turn is the same, the values are not)
    ks = list(ks)
    scores = _curve(pre_BN, x_BD, W_dec_ND, b_pre_D, ks, metric=lambda r, x: float((r - x).pow(2).mean()))
    return scores, ks[_first_min(scores)]


def curve_smallest_k_of_ties(pre_BN, x_BD, W_dec_ND, b_pre_D, ks):
    # sorts ks first, so with unsorted ks the scores come back in sorted order, not the order of ks
    ks = sorted(ks)
    scores = _curve(pre_BN, x_BD, W_dec_ND, b_pre_D, ks)
    return scores, ks[_first_min(scores)]


CANDIDATES = [
    ("no_relu", curve_no_relu, "no ReLU after the top-k', negative pre-activations are decoded", False),
    ("no_b_pre", curve_no_bias, "reconstruction z @ W_dec without + b_pre", False),
    ("turn_as_index", curve_turn_index, "returns argmin's index into ks, not the k' value", False),
    ("last_of_ties", curve_last_of_ties, "returns the last of equal minima, not the first", False),
    ("plain_mse", curve_plain_mse, "plain MSE instead of normalized MSE", False),
    ("sorted_ks", curve_smallest_k_of_ties, "sorts ks: scores not in the order of ks when ks is unsorted", False),
    ("mine", curve_right, "my honest attempt at a correct solution", True),
]

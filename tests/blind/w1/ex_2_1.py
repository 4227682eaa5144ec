"""Exercise 2.1 — topk_activation: blind candidates."""
import torch


def topk_right(pre_BN, k):
    vals, idx = pre_BN.topk(k, dim=-1)
    return torch.zeros_like(pre_BN).scatter(-1, idx, vals.relu())


def topk_no_relu(pre_BN, k):
    vals, idx = pre_BN.topk(k, dim=-1)
    return torch.zeros_like(pre_BN).scatter(-1, idx, vals)


def topk_per_column(pre_BN, k):
    # top k along the batch (per latent), not per row
    vals, idx = pre_BN.topk(k, dim=0)
    return torch.zeros_like(pre_BN).scatter(0, idx, vals.relu())


def topk_threshold_ties(pre_BN, k):
    # keeps everything >= the k-th value: ties at the k-th value give more than k latents
    kth = pre_BN.topk(k, dim=-1).values[..., -1:]
    return torch.where(pre_BN >= kth, pre_BN.relu(), torch.zeros_like(pre_BN))


def topk_by_magnitude(pre_BN, k):
    # picks the k largest |pre|, so a large negative pre-activation takes a slot (then ReLU'd to 0)
    idx = pre_BN.abs().topk(k, dim=-1).indices
    return torch.zeros_like(pre_BN).scatter(-1, idx, pre_BN.gather(-1, idx).relu())


CANDIDATES = [
    ("no_relu", topk_no_relu, "keeps negative values among the top k", False),
    ("per_column", topk_per_column, "top k over the batch dimension (per latent) instead of per row", False),
    ("threshold_ties", topk_threshold_ties, "keeps all values >= the k-th, so ties let more than k through", False),
    ("by_magnitude", topk_by_magnitude, "selects by |pre|: large negative values steal slots from positive ones", False),
    ("mine", topk_right, "my honest attempt at a correct solution", True),
]

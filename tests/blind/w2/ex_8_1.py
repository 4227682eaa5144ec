"""Exercise 8.1: batchtopk (the batch's B*k largest positive pre-activations) and inference_threshold."""
import torch


# ---- my honest attempt ---------------------------------------------------------------------------
def batchtopk_mine(pre_BN, k):
    flat = pre_BN.reshape(-1)
    vals, ids = flat.topk(min(pre_BN.shape[0] * k, flat.numel()))
    return torch.zeros_like(flat).scatter(0, ids, vals.clamp_min(0)).reshape(pre_BN.shape)


def inference_threshold_mine(codes):
    mins = [float(c[c > 0].min()) for c in codes if bool((c > 0).any())]
    return sum(mins) / len(mins)


# ---- wrong selections ---------------------------------------------------------------------------------
def batchtopk_per_token(pre_BN, k):
    """TopK per row, not over the batch."""
    vals, ids = pre_BN.topk(k, dim=-1)
    return torch.zeros_like(pre_BN).scatter(-1, ids, vals.clamp_min(0))


def batchtopk_keeps_negative(pre_BN, k):
    """The B*k largest, negatives included when fewer than B*k are positive."""
    flat = pre_BN.reshape(-1)
    vals, ids = flat.topk(min(pre_BN.shape[0] * k, flat.numel()))
    return torch.zeros_like(flat).scatter(0, ids, vals).reshape(pre_BN.shape)


def batchtopk_only_k(pre_BN, k):
    """Keeps k values over the whole batch instead of B*k."""
    flat = pre_BN.reshape(-1)
    vals, ids = flat.topk(min(k, flat.numel()))
    return torch.zeros_like(flat).scatter(0, ids, vals.clamp_min(0)).reshape(pre_BN.shape)


def batchtopk_binary(pre_BN, k):
    """Returns the 0/1 mask of the kept entries instead of their values."""
    return (batchtopk_mine(pre_BN, k) > 0).to(pre_BN.dtype)


# ---- wrong thresholds -------------------------------------------------------------------------------
def inference_threshold_global_min(codes):
    """The smallest kept value over all batches, not the average of each batch's smallest."""
    return float(min(float(c[c > 0].min()) for c in codes if bool((c > 0).any())))


def inference_threshold_mean_kept(codes):
    """The mean of every kept value, not of each batch's smallest."""
    kept = torch.cat([c[c > 0].reshape(-1) for c in codes])
    return float(kept.mean())


def inference_threshold_with_zeros(codes):
    """Each batch's minimum taken over all entries, the zeros included: always 0."""
    return sum(float(c.min()) for c in codes) / len(codes)


def inference_threshold_min_per_token(codes):
    """Averages the smallest kept value of every token (row), not of every batch."""
    mins = []
    for c in codes:
        for row in c:
            if bool((row > 0).any()):
                mins.append(float(row[row > 0].min()))
    return sum(mins) / len(mins)


CANDIDATES = [
    ("per_token_topk", (batchtopk_per_token, inference_threshold_mine), "selects the top k of each token, not the batch's top B*k", False),
    ("keeps_negative", (batchtopk_keeps_negative, inference_threshold_mine), "keeps negative pre-activations when they are among the top B*k", False),
    ("only_k", (batchtopk_only_k, inference_threshold_mine), "keeps k values for the whole batch instead of B*k", False),
    ("binary_codes", (batchtopk_binary, inference_threshold_mine), "returns a 0/1 mask instead of the kept values", False),
    ("threshold_global_min", (batchtopk_mine, inference_threshold_global_min), "threshold: minimum over all batches instead of the mean of per-batch minima", False),
    ("threshold_mean_kept", (batchtopk_mine, inference_threshold_mean_kept), "threshold: mean of all kept values", False),
    ("threshold_with_zeros", (batchtopk_mine, inference_threshold_with_zeros), "threshold: per-batch min over all entries including zeros (always 0)", False),
    ("threshold_per_token", (batchtopk_mine, inference_threshold_min_per_token), "threshold: averages each token's smallest kept value, not each batch's", False),
    ("mine", (batchtopk_mine, inference_threshold_mine), "my honest attempt at a correct solution", True),
]

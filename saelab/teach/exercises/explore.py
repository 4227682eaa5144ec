"""Notebook 05 (exploring latents): a latent's top contexts, and an explanation tested on new text."""

from __future__ import annotations

import torch

from saelab.teach.exercises.base import passed


def top_activations(acts_NT: torch.Tensor, m: int) -> list[tuple[int, int]]:
    """The m (context, position) pairs where a latent fires most, strongest first."""
    T = acts_NT.shape[1]
    flat = acts_NT.flatten().topk(m).indices
    return [(int(i) // T, int(i) % T) for i in flat]


def precision_recall(acts_T: torch.Tensor, predicted_T: torch.Tensor) -> tuple[float, float]:
    """An explanation's (precision, recall) on new text: fires = activation > 0; predicted = bool per token.
    Precision: of the tokens the explanation predicts, the fraction where the latent fires. Recall: of the
    tokens where it fires, the fraction the explanation predicted."""
    fires, pred = acts_T > 0, predicted_T.bool()
    both = float((fires & pred).sum())
    return both / max(1, int(pred.sum())), both / max(1, int(fires.sum()))


def check_top_activations(fn) -> None:
    """`fn(acts_NT, m) -> [(context, position), ...]`, strongest first."""
    acts = torch.zeros(3, 5)
    acts[2, 1], acts[0, 4], acts[1, 0], acts[1, 3] = 9.0, 7.0, 5.0, 1.0
    got = [tuple(int(v) for v in p) for p in fn(acts.clone(), 3)]
    if got == [(1, 2), (4, 0), (0, 1)]:
        raise AssertionError("you swapped (context, position): the flat index gives context i // T first")
    if any(not (0 <= c < 3 and 0 <= t < 5) for c, t in got):
        raise AssertionError(f"{got} has pairs outside the [3 contexts, 5 positions] grid: the flat index i of an "
                             "[N, T] tensor is context i // T, position i % T (divide by T, not N), in that order")
    if got == [(1, 0), (0, 4), (2, 1)] or got[:1] == [(1, 3)] or all(float(acts[c, t]) == 0 for c, t in got):
        raise AssertionError("strongest FIRST: sort by activation in descending order")
    if got == [(3, 2), (1, 4), (1, 1)] or (got and got[0] == (3, 2)):
        raise AssertionError("the flat index i of an [N, T] tensor is context i // T, position i % T (divide by T, "
                             "the context length, not by N)")
    assert got == [(2, 1), (0, 4), (1, 0)], f"expected [(2, 1), (0, 4), (1, 0)], got {got}"
    passed("top_activations")


def check_precision_recall(fn) -> None:
    """`fn(acts_T, predicted_T) -> (precision, recall)`."""
    acts = torch.tensor([0.0, 2.0, 0.0, 1.5, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0])  # fires at 1, 3, 5
    pred = torch.tensor([0, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool)  # predicts 1, 2, 3
    got = tuple(float(v) for v in fn(acts.clone(), pred.clone()))
    assert len(got) == 2, "return two numbers: (precision, recall)"
    p, r = got
    if abs(p - 2 / 3) < 1e-6 and abs(r - 2 / 3) < 1e-6:
        acts2 = torch.tensor([0.0, 2.0, 0.0, 1.5, 0.0, 0.3, 0.1, 0.0, 0.0, 0.0])
        p2, r2 = (float(v) for v in fn(acts2, pred.clone()))
        if abs(p2 - 2 / 4) < 1e-6:
            raise AssertionError("precision and recall are swapped: precision = firing AND predicted / PREDICTED; "
                                 "recall = firing AND predicted / FIRING")
    if abs(p - 1.0) < 1e-6 and abs(r - 0.3) < 1e-6:
        raise AssertionError("a latent fires where its activation is > 0, not >= 0 (every activation is >= 0)")
    if abs(p - 0.8) < 1e-6:
        raise AssertionError("that counts tokens where fires == predicted (including both false): that is accuracy")
    assert abs(p - 2 / 3) < 1e-6 and abs(r - 2 / 3) < 1e-6, f"expected (0.667, 0.667), got ({p:.3f}, {r:.3f})"
    acts3 = torch.tensor([0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    p3, r3 = (float(v) for v in fn(acts3, pred.clone()))
    if abs(p3 - 1.0) < 1e-6 and abs(r3 - 1 / 3) < 1e-6:
        raise AssertionError("precision and recall are swapped: precision = firing AND predicted / PREDICTED; "
                             "recall = firing AND predicted / FIRING")
    assert abs(p3 - 1 / 3) < 1e-6 and abs(r3 - 1.0) < 1e-6, f"expected (0.333, 1.0), got ({p3:.3f}, {r3:.3f})"
    passed("precision_recall")

"""The exercise checks accept the reference solutions and reject plausible wrong implementations, each
with a message naming the mistake; the stubs stop a learner with a clear message."""

import pytest
import torch

from saelab import exercises as E


def test_stub_stops_with_a_clear_message_and_solutions_switch(monkeypatch):
    with pytest.raises(E.NotWrittenYet, match=r"exercise 7\.1: not written yet"):
        E.todo("7.1")
    mine, ref = (lambda: "mine"), (lambda: "ref")
    monkeypatch.delenv("SAELAB_SOLUTIONS", raising=False)
    assert E.graded(mine, ref)() == "mine"
    monkeypatch.setenv("SAELAB_SOLUTIONS", "1")
    assert E.graded(mine, ref)() == "ref"


@pytest.mark.parametrize("wrong,message", [
    (lambda p, n: n.mean(0) - p.mean(0), "subtract the OTHER"),
    (lambda p, n: p.sum(0) - n.sum(0), "use means"),
    (lambda p, n: p.mean(0), "mean on the concept's tokens minus"),
])
def test_concept_scores_check(wrong, message):
    E.check_concept_scores(E.solutions.concept_scores)
    with pytest.raises(AssertionError, match=message):
        E.check_concept_scores(wrong)


@pytest.mark.parametrize("wrong,message", [
    (lambda x, W, j, a: a * W[j].expand_as(x), "ADD it to x"),
    (lambda x, W, j, a: x + a * W[:, j][: x.shape[1]], "not a column"),
    (lambda x, W, j, a: x - a * W[j], "sign"),
])
def test_steer_rows_check(wrong, message):
    E.check_steer_rows(E.solutions.steer_rows)
    with pytest.raises(AssertionError, match=message):
        E.check_steer_rows(wrong)


def _overwrite(a, g, i, n):
    return torch.zeros(n).scatter_(0, i.reshape(-1), (-a * g).reshape(-1))


@pytest.mark.parametrize("wrong,message", [
    (lambda a, g, i, n: torch.zeros(n).index_add_(0, i.reshape(-1), (a * g).reshape(-1)), "wrong sign"),
    (lambda a, g, i, n: torch.zeros(n).index_add_(0, i.reshape(-1), (-g).reshape(-1)), "ACTIVATION"),
    (_overwrite, "SUM over them"),
])
def test_ablation_attribution_check(wrong, message):
    E.check_ablation_attribution(E.solutions.ablation_attribution)
    with pytest.raises(AssertionError, match=message):
        E.check_ablation_attribution(wrong)

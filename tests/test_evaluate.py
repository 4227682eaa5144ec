"""The evaluation suite (issue 6): each metric behaves as the paper defines it, on the tiny model."""

import math

import numpy as np
import pytest
import torch

from saelab.acts.corpus import ContextConfig, build_contexts, load_corpus
from saelab.evals.ablation import ablation_sparsity, effect_sparsity
from saelab.evals.downstream import downstream_loss, downstream_losses
from saelab.evals.n2g import N2GConfig, n2g_evaluation
from saelab.evals.probes import (
    ProbeConfig,
    best_probe,
    fit_logistic_1d,
    latent_features,
    probe_losses,
    token_labels,
)
from saelab.evals.splice import Codes, SpliceSite, encode_contexts
from saelab.sae.config import SAEConfig
from saelab.sae.model import SAE

LAYER = 2


@pytest.fixture(scope="module")
def tokens(tiny_lm):
    ctx = build_contexts(load_corpus("synthetic"), tiny_lm.tokenizer, ContextConfig(ctx_len=32), max_contexts=12)
    return torch.from_numpy(ctx.tokens_NT).long()


def identity_sae(d: int) -> SAE:
    """An SAE that reconstructs exactly: latents +e_i and -e_i, TopK with k = d keeps the d positive ones."""
    sae = SAE(SAEConfig(d_in=d, n_latents=2 * d, k=d, layer=LAYER, site="resid_post"))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye]))
        sae.b_enc.zero_()
        sae.b_pre.zero_()
    return sae


def test_identity_replacement_gives_zero_delta_loss_and_kl(tiny_lm, tokens):
    where = SpliceSite(layer=LAYER, outlier_factor=None)
    r = downstream_losses(tiny_lm, tokens, {"same": lambda x, m: x, "zero": lambda x, m: torch.zeros_like(x)},
                          where, progress=False)
    assert abs(r["same"]["delta_loss"]) < 1e-5 and abs(r["same"]["kl"]) < 1e-6
    assert r["zero"]["kl"] > 1e-3  # the site matters, so the test above could fail
    assert r["n_predictions"] == tokens.shape[0] * (tokens.shape[1] - 2)
    assert r["n_left_clean"] == tokens.shape[0]  # position 0 of every context


def test_identity_like_sae_recovers_all_loss_and_random_sae_does_not(tiny_lm, tokens):
    where = SpliceSite(layer=LAYER, outlier_factor=None)
    good = downstream_loss(tiny_lm, identity_sae(tiny_lm.d_model), tokens, where, progress=False)
    assert abs(good["loss_recovered"] - 1) < 1e-3 and good["kl"] < 1e-5
    assert good["ce_zero"] > good["ce_clean"]
    bad_sae = SAE(SAEConfig(d_in=tiny_lm.d_model, n_latents=64, k=2, layer=LAYER))
    bad = downstream_loss(tiny_lm, bad_sae, tokens, where, progress=False)
    # (the tiny model is random, so a bad splice may even lower CE: judge by distance from clean)
    assert abs(bad["loss_recovered"] - 1) > 0.05 and bad["kl"] > 100 * good["kl"] + 1e-4


def test_excluded_positions_stay_clean_and_are_counted(tiny_lm, tokens):
    where = SpliceSite(layer=LAYER, exclude_first=4, outlier_factor=None)
    r = downstream_loss(tiny_lm, identity_sae(tiny_lm.d_model), tokens, where, progress=False)
    assert r["n_positions_left_clean"] == 4 * len(tokens)
    assert r["n_positions_spliced"] == (tokens.shape[1] - 4) * len(tokens)


def test_the_all_positions_splice_changes_exactly_every_position(tiny_lm, tokens):
    """positions='all' replaces position 0 and the norm outliers too; 'trained' leaves them clean as the
    SAE's data record says (here: its harvest left out the first 3 positions and had no outlier rule)."""
    import saelab.evals.splice as S

    sae = identity_sae(tiny_lm.d_model)
    sae.data_record = {"exclude_first": 3, "outlier_factor": None}
    trained, everything = SpliceSite.of(sae, tiny_lm), SpliceSite.of(sae, tiny_lm, positions="all")
    assert (trained.exclude_first, trained.outlier_factor) == (3, None)
    assert (everything.exclude_first, everything.outlier_factor) == (0, None)
    seen = {}

    def zero(x_BTD, mask_BT, _positions=None):
        seen["mask"] = mask_BT.clone()
        return torch.zeros_like(x_BTD)

    for where, clean in ((trained, 3), (everything, 0)):
        clean_logits = tiny_lm.model(input_ids=tokens).logits
        logits = S.patched_logits(tiny_lm, tokens, where, zero)
        assert int((~seen["mask"]).sum()) == clean * len(tokens)  # exactly the positions it says are left out
        changed = (logits - clean_logits).abs().amax(-1) > 1e-6
        assert not changed[:, :clean].any() and changed[:, clean:].all()
    r = downstream_loss(tiny_lm, sae, tokens, everything, progress=False)
    assert r["n_positions_left_clean"] == 0
    with pytest.raises(ValueError, match="'trained' or 'all'"):
        SpliceSite.of(sae, tiny_lm, positions="every")
    sae.data_record = {"corpus": "x"}  # fields the record lacks keep the harvest's defaults
    assert (SpliceSite.of(sae, tiny_lm).exclude_first, SpliceSite.of(sae, tiny_lm).outlier_factor) == (1, 10.0)


def test_the_suite_scores_on_the_recorded_split_and_splices_each_sae_by_its_record(tiny_lm, monkeypatch):
    import saelab.evals.suite as suite

    asked = []
    real = suite.heldout_context
    monkeypatch.setattr(suite, "heldout_context", lambda saes: asked.append(list(saes)) or real(saes))
    a, b = identity_sae(tiny_lm.d_model), identity_sae(tiny_lm.d_model)
    for sae, first in ((a, 1), (b, 3)):
        sae.data_record = {"context": {"heldout_fraction": 0.05, "seed": 0}, "exclude_first": first,
                           "outlier_factor": None}
    from dataclasses import replace

    cfg = replace(suite.fast_suite_config(), corpus="synthetic", metrics="downstream", downstream_contexts=2)
    report = suite.run_suite(tiny_lm, {"a": a, "b": b}, cfg, progress=False)
    assert asked and asked[0] == [a, b]
    assert report["sites"]["a"]["exclude_first"] == 1 and report["sites"]["b"]["exclude_first"] == 3
    clean = {n: r["downstream"]["n_positions_left_clean"] for n, r in report["saes"].items()}
    assert clean["b"] == 3 * clean["a"]


def test_evaluations_score_on_the_split_the_sae_trained_on():
    from saelab.evals.splice import heldout_context

    mine = SAE(SAEConfig(d_in=8, n_latents=16, k=2))
    mine.data_record = {"context": {**ContextConfig().__dict__, "heldout_fraction": 0.2, "seed": 3}}
    mine.data_record["context"]["ctx_len"] = 1024  # only the split is taken: the evaluation keeps its own contexts
    ctx = heldout_context([mine])
    assert (ctx.heldout_fraction, ctx.seed, ctx.ctx_len) == (0.2, 3, ContextConfig().ctx_len)
    foreign = SAE(SAEConfig(d_in=8, n_latents=16, k=2, source="sae_lens:x"))
    with pytest.warns(UserWarning, match="no SAE here records its training split"):
        assert heldout_context([foreign]) == ContextConfig()
    with pytest.warns(UserWarning, match="recorded split of the others"):
        assert heldout_context([foreign, mine]).seed == 3
    other = SAE(SAEConfig(d_in=8, n_latents=16, k=2))
    other.data_record = {"split": "all", "context": {"heldout_fraction": 0.05, "seed": 0}}
    with pytest.warns(UserWarning, match="every document"):
        heldout_context([other])


def test_probe_on_a_latent_equal_to_the_label_has_near_zero_loss():
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(600, generator=g) < 0.3).to(torch.int8)
    x = torch.rand(600, 50, generator=g)
    x[:, 17] = y.float() * 3 + 0.01 * torch.rand(600, generator=g)
    r = best_probe(x, y)
    assert r["feature"] == 17 and r["loss"] < 0.05
    noise = best_probe(x[:, :10], y)
    assert noise["loss"] > 0.8 * noise["prior_loss"]  # no signal: close to predicting the base rate


def test_probes_see_pre_activations_so_a_latent_never_in_the_top_k_still_counts():
    """A latent whose pre-activation carries the label perfectly but never wins a top-k slot: on the
    pre-activations (the paper's probe) its loss is near zero; on the post-TopK codes it is invisible."""
    g = torch.Generator().manual_seed(0)
    d, n, k, M = 16, 32, 4, 2000
    x = torch.randn(M, d, generator=g)
    y = (x[:, 0] > 0).to(torch.int8)
    sae = SAE(SAEConfig(d_in=d, n_latents=n, k=k), seed=0)
    with torch.no_grad():
        sae.b_pre.zero_()
        sae.W_enc[0] = torch.nn.functional.one_hot(torch.tensor(0), d).float()  # latent 0 reads the label's axis
        sae.b_enc[0] = -50.0  # ... but always loses the top-k to the others
        sae.b_enc[1:] = 10.0
    assert not (sae.encode(x).top_idx_BK == 0).any()
    pre = best_probe(latent_features(sae, x, "pre_activations"), y)
    post = best_probe(latent_features(sae, x, "post_topk_codes"), y)
    assert pre["feature"] == 0 and pre["loss"] < 0.15 * pre["prior_loss"]  # the ridge keeps it off 0
    assert post["loss"] > 0.5 * post["prior_loss"]
    with pytest.raises(ValueError, match="pre_activations"):
        latent_features(sae, x, "codes")


def test_logistic_newton_matches_the_closed_form_optimum():
    # one binary feature: the optimum predicts the empirical rate in each group
    x = torch.tensor([0.0] * 40 + [1.0] * 60)[:, None]
    y = torch.tensor([1] * 10 + [0] * 30 + [1] * 45 + [0] * 15)
    a, b, mu, sd = fit_logistic_1d(x, y, ridge=0.0)
    p = torch.sigmoid(((x - mu) / sd) * a + b).squeeze(1)
    assert torch.allclose(p[:40], torch.full((40,), 0.25, dtype=p.dtype), atol=1e-6)
    assert torch.allclose(p[40:], torch.full((60,), 0.75, dtype=p.dtype), atol=1e-6)


def test_token_labels(tiny_lm):
    text = " In 1989, Paris had 3 parks."
    ids = torch.tensor([tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"]])
    lab = token_labels(ids.numpy(), tiny_lm.tokenizer)
    chars = list(text)  # the tiny tokenizer is one token per character
    assert [c for c, v in zip(chars, lab["year"][0]) if v] == list("1989")
    assert [c for c, v in zip(chars, lab["digit"][0]) if v] == list("19893")
    assert [c for c, v in zip(chars, lab["punctuation"][0]) if v] == [",", "."]


def test_probe_losses_end_to_end_on_the_embedded_corpora(tiny_lm):
    sae = identity_sae(tiny_lm.d_model)
    cfg = ProbeConfig(docs_per_topic=6, docs_per_language=20, news_docs=20, token_contexts=60, ctx_len=32)
    r = probe_losses(tiny_lm, {"identity": sae}, cfg, SpliceSite(layer=LAYER), progress=False)
    assert {"topic=Arts", "language=fr", "source=news", "token=punctuation"} <= set(r["tasks"])
    for name in ("residual", "identity"):
        assert 0 < r["mean"][name] < 2 * r["mean_prior"]
    # the identity SAE's latents are +-residual coordinates: on a token task (many rows) its best probe
    # is as good as the residual basis's
    punct = r["tasks"]["token=punctuation"]
    assert punct["identity"]["loss"] <= punct["residual"]["loss"] + 0.05


def _codes_where(tokens_NT, fire):
    """Codes with one active latent per position: latent id fire(tokens) (or none when -1)."""
    lat = fire(tokens_NT)
    acts = (lat >= 0).float()[..., None]
    return Codes(tokens_NT, acts, lat.clamp_min(0)[..., None], torch.ones_like(tokens_NT, dtype=torch.bool), 4)


def test_n2g_recovers_unigram_and_bigram_latents():
    g = torch.Generator().manual_seed(0)

    def fire(t):
        lat = torch.full_like(t, -1)
        lat[t == 7] = 0
        prev = torch.cat([torch.full_like(t[:, :1], -1), t[:, :-1]], 1)
        lat[(prev == 3) & (t == 5)] = 1
        return lat

    build = _codes_where(torch.randint(0, 10, (200, 16), generator=g), fire)
    held = _codes_where(torch.randint(0, 10, (100, 16), generator=g), fire)
    r = n2g_evaluation(build, held, latents=[0, 1], cfg=N2GConfig(max_n=3))
    by = {row["latent"]: row for row in r["rows"]}
    assert by[0]["f1"] == pytest.approx(1.0) and by[0]["n_ngrams"] == 1
    assert by[1]["precision"] == pytest.approx(1.0) and by[1]["recall"] == pytest.approx(1.0)
    assert r["summary"]["f1"]["mean"] == pytest.approx(1.0)


def test_n2g_scores_a_random_latent_poorly():
    g = torch.Generator().manual_seed(1)

    def fire(t):
        lat = torch.full_like(t, -1)
        lat[torch.rand(t.shape, generator=torch.Generator().manual_seed(int(t.sum()))) < 0.1] = 2
        return lat

    build = _codes_where(torch.randint(0, 50, (200, 16), generator=g), fire)
    held = _codes_where(torch.randint(0, 50, (100, 16), generator=g), fire)
    r = n2g_evaluation(build, held, latents=[2], cfg=N2GConfig(max_n=2))
    assert r["rows"][0]["f1"] < 0.3
    # an explanation that predicts nothing on held-out: precision undefined per latent, 0 in the summary, counted
    none = n2g_evaluation(build, held, latents=[2], cfg=N2GConfig(max_n=2, min_precision=1.01))
    assert none["rows"][0]["heldout_predicted"] == 0 and none["rows"][0]["precision"] != none["rows"][0]["precision"]
    assert none["summary"]["n_predicting_nothing"] == 1 and none["summary"]["precision"]["mean"] == 0.0


def test_effect_sparsity_is_the_papers_definition():
    T, V = 16, 500
    one = torch.zeros(T, V)
    one[2, 7] = 3.0  # one logit moved at one position: exactly 1 / (T V)
    assert effect_sparsity(one) == pytest.approx(1 / (T * V), rel=1e-12)
    shifted = one.clone()
    shifted[5] += 4.0  # a constant shift of a whole position changes no probability: it adds nothing
    shifted[9] -= 1.5
    assert effect_sparsity(shifted) == pytest.approx(1 / (T * V), rel=1e-12)
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(T, 4096, generator=g)  # (E|x|)^2 / E[x^2] = 2/pi for a Gaussian
    assert effect_sparsity(dense) == pytest.approx(2 / math.pi, abs=0.01)
    assert effect_sparsity(dense + torch.randn(T, 1, generator=g) * 50) == pytest.approx(2 / math.pi, abs=0.01)
    assert math.isnan(effect_sparsity(torch.ones(3, 3) * 2))  # only a shift: no effect at all


def test_an_ablation_changes_nothing_before_its_index_and_nothing_when_inactive(tiny_lm, tokens):
    from saelab.evals.ablation import _latent_replacement
    from saelab.evals.splice import patched_logits

    sae = identity_sae(tiny_lm.d_model)
    where = SpliceSite(layer=LAYER, outlier_factor=None)
    ids = tokens[:2]
    index = torch.zeros(2, ids.shape[1], dtype=torch.bool)
    index[:, 5] = True
    codes = encode_contexts(tiny_lm, sae, ids, where, progress=False)
    active = int(codes.idx_NTK[0, 5][codes.acts_NTK[0, 5] > 0][0])
    inactive = int(({*range(2 * tiny_lm.d_model)} - set(codes.idx_NTK[:, 5][codes.acts_NTK[:, 5] > 0].tolist())).pop())
    base = patched_logits(tiny_lm, ids, where, _latent_replacement(sae, active, index, "none", 0))
    ablated = patched_logits(tiny_lm, ids, where, _latent_replacement(sae, active, index, "ablate", 0))
    assert torch.equal(ablated[:, :5], base[:, :5])  # causal: positions before the ablated index are untouched
    assert not torch.equal(ablated[0, 5:], base[0, 5:])
    same = patched_logits(tiny_lm, ids, where, _latent_replacement(sae, inactive, index, "ablate", 0))
    assert torch.equal(same, base) and math.isnan(effect_sparsity(same[0, 5:21] - base[0, 5:21]))


def test_ablation_index_prefers_a_full_window():
    from saelab.evals.ablation import _choose_contexts, ablation_index

    rng = np.random.default_rng(0)
    picked = {ablation_index([3, 40, 60], ctx_len=64, window=16, rng=rng) for _ in range(50)}
    assert picked == {(3, True), (40, True)}  # random among the positions with a full window after them
    assert ablation_index([50, 60], ctx_len=64, window=16, rng=rng) == (50, False)  # cut at the context's end
    T = 64
    flat = torch.tensor([0 * T + 55, 1 * T + 60, 2 * T + 10, 3 * T + 47])
    picks = _choose_contexts(flat, T, 16, 3, seed=1)
    assert sorted(picks[:2]) == [(2, 10, True), (3, 47, True)] and picks[2][2] is False
    assert _choose_contexts(flat, T, 16, 3, seed=1) == picks  # seeded


def test_ablation_sparsity_on_the_tiny_model(tiny_lm, tokens):
    sae = identity_sae(tiny_lm.d_model)
    where = SpliceSite(layer=LAYER, outlier_factor=None)
    codes = encode_contexts(tiny_lm, sae, tokens, where, progress=False)
    ptr, _, _ = codes.latent_acts()
    alive = torch.nonzero(ptr[1:] > ptr[:-1]).squeeze(1)[:3].tolist()
    rows = ablation_sparsity(tiny_lm, sae, codes, alive, contexts_per_latent=2, where=where, progress=False)
    assert len(rows) == 3
    for r in rows:
        assert 0 < r["sparsity"] <= 1 and 0 < r["random_sparsity"] <= 1 and r["n_contexts"] >= 1
        assert 1 <= r["window"] <= 16
    dead = ablation_sparsity(tiny_lm, sae, codes, [int(torch.nonzero(ptr[1:] == ptr[:-1])[0])]
                             if bool((ptr[1:] == ptr[:-1]).any()) else [], where=where, progress=False)
    assert all(r["n_contexts"] == 0 for r in dead)


def test_position_sampling_weights_latents_by_firing_frequency():
    """Latent 0 fires on 90% of tokens, latent 1 on 10%: sampled by position, 0 is ablated ~9x as often
    (sampling latents uniformly, as saelab did before, gives each the same weight)."""
    from saelab.evals.ablation import sample_positions

    g = torch.Generator().manual_seed(0)
    N, T = 400, 32
    frequent = torch.rand(N, T, generator=g) < 0.9
    rare = torch.rand(N, T, generator=g) < 0.1
    acts = torch.stack([frequent.float(), rare.float()], -1)
    idx = torch.stack([torch.zeros(N, T, dtype=torch.long), torch.ones(N, T, dtype=torch.long)], -1)
    codes = Codes(torch.zeros(N, T, dtype=torch.long), acts, idx, torch.ones(N, T, dtype=torch.bool), 2)
    picks = sample_positions(codes, 2000, window=16, seed=0)
    assert len(picks) == 2000 and all(t + 16 <= T for _, t, _ in picks)
    counts = [sum(lat in lats for _, _, lats in picks) for lat in (0, 1)]
    assert 7 < counts[0] / counts[1] < 11
    assert all(bool(frequent[c, t]) == (0 in lats) and bool(rare[c, t]) == (1 in lats) for c, t, lats in picks)


def test_position_ablation_sparsity_on_the_tiny_model(tiny_lm, tokens):
    from saelab.evals.ablation import position_ablation_sparsity

    sae = identity_sae(tiny_lm.d_model)
    where = SpliceSite(layer=LAYER, outlier_factor=None)
    codes = encode_contexts(tiny_lm, sae, tokens, where, progress=False)
    rows = position_ablation_sparsity(tiny_lm, sae, codes, n_positions=3, where=where, progress=False)
    per_position = {(r["context"], r["index"]) for r in rows}
    assert len(per_position) == 3 and len(rows) == 3 * sae.cfg.k  # the identity SAE keeps d latents a token
    assert all(0 < r["sparsity"] <= 1 and 0 < r["random_sparsity"] <= 1 for r in rows)
    assert all(0 <= r["own_share"] <= 1 and 0 < r["sparsity_later"] <= 1 for r in rows)
    # every row's ablation equals the one-latent ablation at that index (the per-latent code path): rows and
    # latents stay aligned in the batched replacement
    from saelab.evals.ablation import _latent_replacement, effect_sparsity
    from saelab.evals.splice import patched_logits

    for r in rows[:: max(1, len(rows) // 6)]:
        one = torch.zeros(1, tokens.shape[1], dtype=torch.bool)
        one[0, r["index"]] = True
        ids = tokens[r["context"]:r["context"] + 1]
        base = patched_logits(tiny_lm, ids, where, _latent_replacement(sae, r["latent"], one, "none", 0))
        cut = patched_logits(tiny_lm, ids, where, _latent_replacement(sae, r["latent"], one, "ablate", 0))
        t = r["index"]
        assert abs(effect_sparsity((cut - base)[0, t:t + 16]) - r["sparsity"]) < 1e-3
    assert len({r["sparsity"] for r in rows}) > 1 and len({r["random_sparsity"] for r in rows}) > 1


def test_cli_eval_and_sweep_write_reports(tmp_path, tiny_lm):
    import csv
    import json

    from saelab.cli import main

    sae = SAE(SAEConfig(d_in=tiny_lm.d_model, n_latents=64, k=4, model="tiny-gpt2", site="resid_post", layer=LAYER))
    sae.save(tmp_path / "tiny" / "sae")
    rc = main(["eval", "--sae", f"tiny={tmp_path / 'tiny' / 'sae'}", "--out", str(tmp_path / "eval"),
               "--downstream_contexts", "2", "--n2g_build_contexts", "8", "--n2g_heldout_contexts", "4",
               "--n2g_latents", "8", "--ablation_latents", "2", "--ablation_contexts", "1",
               "--probes.docs_per_topic", "4", "--probes.docs_per_language", "8", "--probes.news_docs", "8",
               "--probes.token_contexts", "8"])
    assert rc == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    r = report["saes"]["tiny"]
    assert {"downstream", "probe_loss", "n2g", "ablation"} <= set(r)
    assert r["downstream"]["n_positions_spliced"] > 0 and len(r["n2g_rows"]) == 8
    assert "plotly" in (tmp_path / "eval" / "report.html").read_text()
    assert (tmp_path / "eval" / "plotly.min.js").stat().st_size > 100_000
    rc = main(["sweep", "--sae", str(tmp_path / "tiny" / "sae"), "--ks", "2,4,8", "--eval-tokens", "600",
               "--shrinkage-tokens", "100", "--out", str(tmp_path / "sweep")])
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "sweep" / "sweep.csv")))
    assert [r["activation"] for r in rows] == ["topk"] * 3 + ["jumprelu"] * 3
    assert [float(r["param"]) for r in rows[:3]] == [2, 4, 8]
    assert float(rows[2]["nmse"]) <= float(rows[0]["nmse"]) + 1  # finite, parsed
    assert (tmp_path / "sweep" / "shrinkage.csv").exists() and (tmp_path / "sweep" / "sweep.html").exists()


def test_cli_eval_without_an_sae_names_the_fix(tmp_path, capsys):
    from saelab.cli import main

    assert main(["eval", "--sae", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "saelab train" in capsys.readouterr().err


def test_probe_screening_finds_the_same_feature_as_a_full_fit():
    g = torch.Generator().manual_seed(3)
    y = (torch.rand(2000, generator=g) < 0.2).to(torch.int8)
    x = torch.randn(2000, 500, generator=g)
    x[:, 123] += 1.5 * y.float()  # a noisy but best feature
    x[:, 7] += 0.7 * y.float()
    full, screened = best_probe(x, y, screen=0), best_probe(x, y, screen=16)
    assert full["feature"] == screened["feature"] == 123
    assert abs(full["loss"] - screened["loss"]) < 1e-9


@pytest.mark.assets
def test_probe_documents_are_held_out_and_the_english_side_spans_the_topics():
    from saelab.acts.corpus import load_corpus as corpus
    from saelab.evals.probes import document_tasks, heldout_rows

    texts, labels = document_tasks(ProbeConfig())
    held = {r["text"]: r["topic"] for r in heldout_rows("wiki-en")}
    train_texts = {r["text"] for r in corpus("wiki-en")} - set(held)
    assert not set(texts) & train_texts  # no document the SAE trained on
    for task in ("language=en", "source=news"):
        en = [texts[i] for i in np.flatnonzero(labels[task] == (1 if task == "language=en" else 0))]
        topics = {held[t] for t in en if t in held}
        assert len(topics) >= 10, (task, topics)  # not a handful of topics a topic latent could stand for


def test_token_probes_split_by_context_not_by_token():
    from saelab.evals.probes import probe_split

    groups = torch.arange(40).repeat_interleave(25)  # 40 contexts of 25 tokens
    fit, test = probe_split(1000, groups_M=groups)
    assert not set(groups[fit].tolist()) & set(groups[test].tolist())
    assert len(set(groups[fit].tolist())) == 20 and len(fit) + len(test) == 1000
    fit2, test2 = probe_split(1000)  # without groups: a token-level split mixes contexts
    assert set(groups[fit2].tolist()) & set(groups[test2].tolist())
    g = torch.Generator().manual_seed(0)
    y = (torch.rand(1000, generator=g) < 0.3).to(torch.int8)
    x = torch.randn(1000, 3, generator=g) + y[:, None].float()
    assert best_probe(x, y, groups_M=groups)["loss"] < best_probe(x, y)["prior_loss"]


def test_domain_table_scores_own_corpus_on_test_and_others_on_all(tiny_lm, caches):
    import copy
    import tempfile

    from saelab.studies.domain_shift import DomainConfig, domain_table, shares_documents
    from saelab.training.trainer import TrainConfig, Trainer

    mixed = SAE(SAEConfig(d_in=8, n_latents=16, k=2))
    mixed.data_record = {"corpus": "english-mix"}
    assert shares_documents(mixed, "news") and shares_documents(mixed, "wiki-en")
    assert not shares_documents(mixed, "tweets-en")
    wiki = SAE(SAEConfig(d_in=8, n_latents=16, k=2))
    wiki.data_record = {"corpus": "wiki-en"}
    assert shares_documents(wiki, "english-mix") and not shares_documents(wiki, "news")
    assert not shares_documents(SAE(SAEConfig(d_in=8, n_latents=16, k=2)), "wiki-en")  # no record: nothing shared
    multi = SAE(SAEConfig(d_in=8, n_latents=16, k=2))
    multi.data_record = {"corpus": "wiki-multi"}  # outside the mixture's family: test split unless out of mixture
    assert shares_documents(multi, "wiki-en") and not shares_documents(multi, "tweets-en")

    with tempfile.TemporaryDirectory() as out:
        Trainer(TrainConfig(n_latents=128, k=4, batch_size=512, epochs=2.0, progress=False, checkpoint_every=0,
                            eval_every=10**6), caches[0], out).train()
        sae = SAE.load(f"{out}/sae")
    assert sae.data_record["corpus"] == "synthetic"
    stranger = copy.deepcopy(sae)
    stranger.data_record = {**sae.data_record, "corpus": "wiki-en"}  # as if trained elsewhere: synthetic is foreign
    df = domain_table({"own": sae, "stranger": stranger}, tiny_lm,
                      DomainConfig(corpora="synthetic", tokens=630, delta_ce_contexts=2)).set_index("sae")
    assert df.loc["own", "split"] == "test" and df.loc["own", "nmse_ratio"] == 1.0
    assert df.loc["stranger", "split"] == "all" and df.loc["stranger", "nmse_ratio"] != df.loc["stranger", "nmse_ratio"]
    assert (df.tokens > 0).all() and df.delta_ce.notna().all() and (df.l0 <= 4 + 1e-6).all()


def test_the_suite_runs_saebenchs_absorption_on_request_and_refuses_unknown_metrics(tiny_lm):
    from dataclasses import replace

    import saelab.evals.suite as suite
    from saelab.evals.absorption import AbsorptionConfig
    from saelab.evals.spelling import SpellingConfig

    a = identity_sae(tiny_lm.d_model)
    cfg = replace(suite.fast_suite_config(), corpus="synthetic", metrics="absorption",
                  absorption=AbsorptionConfig(spelling=SpellingConfig(max_words=52, icl_examples=4, probe_epochs=5),
                                              sparse_epochs=5, max_k=2))
    report = suite.run_suite(tiny_lm, {"a": a}, cfg, progress=False)
    got = report["saes"]["a"]["absorption"]
    assert got["letters_passing"] == report["absorption"]["sites"][got["site"]]["letters_passing"]
    assert set(got) >= {"absorption", "full_absorption", "readable", "letters"} and got["site"].startswith("resid_post")
    row = suite.summary_rows(report)[0]
    assert row["absorption_letters_passing"] == got["letters_passing"] and "delta_loss" not in row
    with pytest.raises(ValueError, match="unknown metrics \\['absorbtion'\\].*absorption"):
        suite.run_suite(tiny_lm, {"a": a}, replace(cfg, metrics="absorbtion"), progress=False)


def test_the_suite_reports_both_splice_conventions_and_saebenchs_core_metrics(tiny_lm):
    from dataclasses import replace

    import saelab.evals.suite as suite

    a = identity_sae(tiny_lm.d_model)  # reconstructs exactly: every core metric at its best value
    cfg = replace(suite.fast_suite_config(), corpus="synthetic", metrics="core", downstream_contexts=3)
    report = suite.run_suite(tiny_lm, {"a": a}, cfg, progress=False)
    r = report["saes"]["a"]
    trained, every = r["downstream_trained_positions"], r["downstream_every_position"]
    assert trained["n_positions_left_clean"] > 0 and every["n_positions_left_clean"] == 0
    assert every["n_predictions"] > trained["n_predictions"]  # every position counts every prediction
    assert r["downstream"] is trained  # --splice_positions trained (the default) names the headline one
    core = r["core"]
    for key, best in (("explained_variance", 1), ("explained_variance_legacy", 1), ("cossim", 1), ("l2_ratio", 1),
                      ("relative_reconstruction_bias", 1), ("ce_loss_score", 1), ("kl_div_score", 1)):
        assert core[key] == pytest.approx(best, abs=1e-4), key
    assert core["tokens"] > r["core_trained_positions"]["tokens"]  # position 0 is scored at every position
    assert core["l0"] == pytest.approx(tiny_lm.d_model, rel=0.05) and 0 < core["frac_alive"] <= 1
    row = suite.summary_rows(report)[0]
    assert {"delta_loss_every_position", "delta_loss_trained_positions", "core_explained_variance"} <= set(row)


def test_probe_controls_share_the_saes_space_and_count(tiny_lm):
    sae = identity_sae(tiny_lm.d_model)  # its latents are +-the normalised residual coordinates
    cfg = ProbeConfig(docs_per_topic=6, docs_per_language=20, news_docs=20, token_contexts=40, ctx_len=32)
    r = probe_losses(tiny_lm, {"identity": sae}, cfg, SpliceSite(layer=LAYER), progress=False)
    assert {"residual", "residual_normalised", "random_directions", "pca", "identity"} == set(r["mean"])
    for task in r["tasks"].values():  # the identity SAE's probes are the normalised coordinates' probes
        assert task["identity"]["loss"] == pytest.approx(task["residual_normalised"]["loss"], abs=0.05)
    comp = r["comparisons"]["identity"]
    assert set(comp) == {"residual", "residual_normalised", "random_directions", "pca"}
    same = comp["residual_normalised"]
    assert same["n"] == len(r["tasks"]) and same["lo"] <= same["mean"] <= same["hi"]
    assert same["verdict"] == "within noise" or abs(same["mean"]) < 0.05
    assert 0 <= comp["random_directions"]["wins"] <= len(r["tasks"])


def test_downstream_conventions_names_both_splices(tiny_lm, tokens):
    """The main job's report: an exact SAE costs nothing under either convention; only the trained-positions splice
    leaves positions clean."""
    from saelab.evals.downstream import downstream_conventions

    r = downstream_conventions(tiny_lm, identity_sae(tiny_lm.d_model), tokens, tokens, progress=False)
    assert set(r) == {"trained_positions", "every_position"}
    assert r["every_position"]["n_positions_left_clean"] == 0 < r["trained_positions"]["n_positions_left_clean"]
    for d in r.values():
        assert d["delta_loss"] == pytest.approx(0, abs=1e-4) and d["loss_recovered"] == pytest.approx(1, abs=1e-4)

"""SAEBench's first-letter absorption (saelab.evals.absorption, saelab.evals.spelling): its formulas on cases worked
by hand, the main-latent rule, the prompts, a planted absorber found end to end, and the pipeline on SmolLM2."""

import math

import pytest
import torch

from saelab.evals.absorption import (
    AbsorptionConfig,
    absorption_fraction,
    full_absorption,
    latent_projections,
    score_sae,
    split_rule,
)
from saelab.evals.spelling import LETTERS, SpellingConfig, SpellingData, alphabetic_tokens, letter_probe, prompt_ids
from saelab.sae.config import SAEConfig
from saelab.sae.model import SAE

# probe direction e0 in 3-D; decoder rows with cosines 1 (the main latent), 0.6, 0.05, 0.3, -0.5, 0.2, 0.15, 0.02
COS = [1.0, 0.6, 0.05, 0.3, -0.5, 0.2, 0.15, 0.02]


def _case(acts: dict[int, float], P: float):
    a = torch.zeros(1, len(COS))
    for i, v in acts.items():
        a[0, i] = v
    cos = torch.tensor(COS)
    return a, a * cos, cos, torch.tensor([P])


MAIN = torch.tensor([True] + [False] * (len(COS) - 1))


@pytest.mark.parametrize("acts, P, frac, full", [
    # main 0.5, one absorber 0.6: T/P = 0.6/1.4 >= 0.4, A = min(0.6, 1.4 - 0.5) = 0.6 -> 0.6 / 1.1
    ({0: 0.5, 1: 1.0}, 1.4, 0.6 / 1.1, False),
    # main silent, absorbers 1.2 and 0.3 (latent 2's 0.05 is below the 0.1 cosine): fraction 1; full: the top
    # latent (1.2, cos 0.6) carries 1.2 / 2 >= 0.4 of P
    ({1: 2.0, 2: 1.0, 3: 1.0}, 2.0, 1.0, True),
    # the main latents already carry P: 0
    ({0: 2.0, 1: 1.0}, 1.5, 0.0, False),
    # the absorbers carry less than 0.4 of P (0.15 / 1): 0
    ({0: 0.2, 3: 0.5}, 1.0, 0.0, False),
    # four absorbers (0.6, 0.3, 0.2, 0.15): only the top 3 count, T = 1.1, A = min(1.1, 2 - 0.1) -> 1.1 / 1.2
    ({0: 0.1, 1: 1.0, 3: 1.0, 5: 1.0, 6: 1.0}, 2.0, 1.1 / 1.2, False),
    # a latent pointing away (cos -0.5) is not an absorber: T = 0.6 -> 0.6 / (0.6 + 0.1)
    ({0: 0.1, 1: 1.0, 4: 3.0}, 1.2, 0.6 / 0.7, False),
    # main silent, the one latent carrying P has cosine 0.05: no absorber for the fraction (cos < 0.1) but full
    # absorption (its cosine >= 0.025, 0.6 / 1 >= 0.4)
    ({2: 12.0}, 1.0, 0.0, True),
    # ... and at cosine 0.02 not even that
    ({7: 30.0}, 1.0, 0.0, False),
    # main silent, the top latent carries 0.6 of P = 2: below 0.4 of P? 0.6 / 2 = 0.3 -> not full; fraction 0
    ({1: 1.0}, 2.0, 0.0, False),
    # P < 0: never full absorption
    ({1: 1.0}, -0.5, 0.0, False),
])
def test_absorption_fraction_and_full_absorption_match_saebench_by_hand(acts, P, frac, full):
    a, proj, cos, P_W = _case(acts, P)
    assert float(absorption_fraction(proj, cos, MAIN, P_W)[0]) == pytest.approx(frac, abs=1e-6)
    assert bool(full_absorption(a, proj, cos, MAIN, P_W)[0]) is full


def test_several_words_at_once_equal_each_word_alone():
    cases = [_case({0: 0.5, 1: 1.0}, 1.4), _case({1: 2.0, 2: 1.0, 3: 1.0}, 2.0), _case({0: 2.0, 1: 1.0}, 1.5)]
    a = torch.cat([c[0] for c in cases])
    proj, P = a * cases[0][2], torch.cat([c[3] for c in cases])
    together = absorption_fraction(proj, cases[0][2], MAIN, P)
    alone = torch.cat([absorption_fraction(c[1], c[2], MAIN, c[3]) for c in cases])
    assert torch.allclose(together, alone) and together.tolist() == pytest.approx([0.6 / 1.1, 1.0, 0.0])


def test_a_negative_probe_projection_is_never_full_absorption_nor_absorbed():
    # no main latents (all of them "silent"), every latent active with a negative projection: without the P >= 0
    # condition the top latent (-0.25 of P = -0.5, cosine 1) would count as full absorption
    a, cos, main = torch.tensor([[-0.25, 0.6]]), torch.tensor([1.0, -0.5]), torch.tensor([False, False])
    proj, P = a * cos, torch.tensor([-0.5])
    assert not bool(full_absorption(a, proj, cos, main, P)[0])
    assert float(absorption_fraction(proj, cos, main, P)[0]) == 0.0
    assert float(absorption_fraction(torch.tensor([[0.0, 0.0]]), cos, main, torch.tensor([0.0]))[0]) == 0.0  # P = 0


@pytest.mark.parametrize("f1s, k", [([0.5, 0.53], 1), ([0.5, 0.52, 0.9], 1), ([0.5, 0.54, 0.6, 0.6], 3),
                                    ([0.0, 0.0], 1), ([0.2, 0.4, 0.6, 0.8, 0.81], 4)])
def test_main_latents_grow_while_f1_rises_by_more_than_0_03(f1s, k):
    assert split_rule(f1s, 0.03) == k


@pytest.mark.parametrize("normalize", ["none", "dataset_unit_norm", "layernorm", "per_token_unit_norm",
                                       "constant_norm_rescale"])
def test_latent_projection_is_the_latents_contribution_to_the_reconstruction(normalize):
    torch.manual_seed(0)
    sae = SAE(SAEConfig(d_in=8, n_latents=16, k=3, normalize=normalize))
    with torch.no_grad():
        sae.input_scale.fill_(0.25)
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, 16)[:, None])  # rows that are not unit norm
    x = 3 * torch.randn(5, 8) + 1  # norms and means away from 1 and 0: every scale matters
    p = torch.randn(8)
    p /= p.norm()
    z, proj, cos = latent_projections(sae, x, p)
    enc = sae.encode(x)
    for w in range(5):
        for j in range(3):
            i = int(enc.top_idx_BK[w, j])
            only = torch.zeros(1, 3)
            only[0, j] = enc.top_acts_BK[w, j]
            with_it = sae.decode(only, enc.top_idx_BK[w:w + 1], x[w:w + 1])
            without = sae.decode(torch.zeros(1, 3), enc.top_idx_BK[w:w + 1], x[w:w + 1])
            assert float(proj[w, i]) == pytest.approx(float((with_it - without)[0] @ p), rel=1e-4, abs=1e-6)
    W = sae.W_dec.detach()
    assert torch.allclose(cos, W @ p / W.norm(dim=1), atol=1e-6)


def _planted(absorb: bool, per_letter=40, a_words=800, groups=16, d=48, seed=0):
    """Words whose residual is their letter's direction e_letter (+ noise); 40% of the 'a' words, and as many words
    of other letters, fall in 16 small groups (token-like features: "short", "shiny", ...) that add a direction
    e_(26+g). A ReLU SAE has a latent per letter and one per group. When `absorb`, the 'a' latent's encoder
    subtracts the group directions (it goes silent on grouped 'a' words) and each group latent's decoder row is
    (e_0 + e_(26+g))/sqrt(2): it carries the 'a' direction there. The group latents fire on other letters too, so the
    k-sparse probe does not take them for 'a' latents: absorbers, not a feature split."""
    g = torch.Generator().manual_seed(seed)
    letter = torch.cat([torch.arange(26 * per_letter) % 26, torch.zeros(a_words - per_letter, dtype=torch.long)])
    n = len(letter)
    x = torch.zeros(n, d)
    x[torch.arange(n), letter] = 1.0
    is_a, other = (letter == 0).nonzero().squeeze(1), (letter != 0).nonzero().squeeze(1)
    n_grouped = int(0.4 * len(is_a))
    grouped = torch.cat([is_a[torch.randperm(len(is_a), generator=g)[:n_grouped]],
                         other[torch.randperm(len(other), generator=g)[:n_grouped]]])
    group = torch.full((n,), -1)
    group[grouped] = torch.arange(len(grouped)) % groups
    x[grouped, 26 + group[grouped]] = 1.0
    x += 0.02 * torch.randn(n, d, generator=g)
    test = torch.rand(n, generator=g) < 0.3
    data = SpellingData(x_WD=x, letter_W=letter, test_W=test, words=[LETTERS[i] for i in letter])
    W_enc = torch.eye(d)[:26 + groups].clone()
    W_dec = W_enc.clone()
    if absorb:
        W_enc[0, 26:26 + groups] = -1.0
        W_dec[26:] = (torch.eye(d)[0] + torch.eye(d)[26:26 + groups]) / 2 ** 0.5
    sae = SAE(SAEConfig(d_in=d, n_latents=26 + groups, k=4, activation="relu", normalize="none"))
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_enc.fill_(-0.1)  # noise alone never fires a latent
        sae.b_pre.zero_()
    return data, sae, (group >= 0) & (letter == 0)


def test_a_planted_absorber_is_found_and_a_clean_sae_scores_none():
    data, absorbing, grouped = _planted(True)
    # batches of 128 for the L1 probe: at batch 4096 these 1,500 words give it 50 steps, too few to move its weights
    # past their random init (+-0.15 over 42 latents); SAEBench's 25,000+ words give it 6 steps an epoch
    cfg = AbsorptionConfig(spelling=SpellingConfig(probe_epochs=20), sparse_batch_size=128)
    probe = letter_probe(data, cfg.spelling)
    got = score_sae(absorbing, data, probe, cfg)
    assert got["readable"] and got["letters_passing"] == 26
    a = got["letters"]["a"]
    assert a["main_latents"] == [0], a["sparse_f1"]
    # the absorbed words are the grouped 'a' words among the probe's true positives (40%)
    share = float(grouped[data.test_W & (data.letter_W == 0)].float().mean())
    assert a["full_absorption"] == pytest.approx(share, abs=0.05) and 0.3 < a["full_absorption"] < 0.5
    assert a["absorption"] == pytest.approx(a["full_absorption"], abs=0.05)
    assert all(v["absorption"] == 0.0 for k, v in got["letters"].items() if k != "a")
    assert got["absorption"] == pytest.approx(a["absorption"] / 26, abs=1e-6)
    clean_data, clean, _ = _planted(False)
    none = score_sae(clean, clean_data, letter_probe(clean_data, cfg.spelling), cfg)
    assert none["readable"] and none["absorption"] == 0.0 and none["full_absorption"] == 0.0


def test_fewer_than_20_letters_passing_is_reported_not_scored():
    data, sae, _ = _planted(True)
    cfg = AbsorptionConfig(spelling=SpellingConfig(probe_epochs=20), sparse_batch_size=128, min_probe_f1=0.999)
    data.x_WD += 0.5 * torch.randn_like(data.x_WD)  # probes far below F1 0.999
    got = score_sae(sae, data, letter_probe(data, cfg.spelling), cfg)
    assert not got["readable"] and got["letters_passing"] < 20
    assert math.isnan(got["absorption"]) and math.isnan(got["full_absorption"])


class _Tok:
    """A tokenizer stand-in: one token per whitespace-led piece."""

    vocab = {"Ġcat": 0, "Ġdog": 1, "ĠA": 2, "ĠC": 3, "ĠD": 4, "Ġhas": 5, "Ġthe": 6, "Ġfirst": 7, "Ġletter": 8, ":": 9,
             "Ċ": 10, "Ġ42": 11, "éclair": 12, "x": 13, "Ġ": 14, "Ġa": 15, "<s>": 16}

    def get_vocab(self):
        return self.vocab

    def convert_ids_to_tokens(self, i):
        return {v: k for k, v in self.vocab.items()}[i]

    def convert_tokens_to_string(self, toks):
        return "".join(toks).replace("Ġ", " ").replace("Ċ", "\n")

    def __call__(self, text, add_special_tokens=False):
        out, piece = [], ""
        for ch in text:
            if ch in " \n:" and piece:
                out.append(piece)
                piece = ""
            piece += ch
        out.append(piece)
        return {"input_ids": [self.vocab[p.replace(" ", "Ġ").replace("\n", "Ċ")] for p in out]}


def test_words_are_the_ascii_alphabetic_tokens_less_one_leading_space():
    words = [t for _, t in alphabetic_tokens(_Tok())]
    assert sorted(words) == sorted([" cat", " dog", " A", " C", " D", " has", " the", " first", " letter", "x", " a"])


def test_a_prompt_is_saebenchs_text_with_the_word_six_tokens_from_the_end():
    tok = _Tok()
    ids, pos = prompt_ids(tok, 0, [(1, " dog"), (15, " a")])
    text = tok.convert_tokens_to_string([tok.convert_ids_to_tokens(i) for i in ids])
    assert text == " dog has the first letter: D\n a has the first letter: A\n cat has the first letter:"
    assert pos == len(ids) - 6 and ids[pos] == 0


@pytest.mark.assets
def test_the_pipeline_runs_on_smollm2_and_says_whether_it_can_be_read():
    from saelab.evals.absorption import absorption_summary, first_letter_absorption
    from saelab.lm.models import load_lm

    lm = load_lm()
    sae = SAE(SAEConfig(d_in=lm.d_model, n_latents=256, k=8, layer=lm.default_layer, normalize="none"))
    cfg = AbsorptionConfig(spelling=SpellingConfig(max_words=160, probe_epochs=10), max_k=3, sparse_epochs=5)
    rep = first_letter_absorption(lm, {"random": sae}, cfg)
    site = rep["sites"][f"resid_post.{lm.default_layer}"]
    assert site["words"] == 160 and site["test_words"] == 32 and len(site["probe_f1"]) == 26
    r = rep["saes"]["random"]
    assert r["letters_passing"] == site["letters_passing"] and all(len(v["sparse_f1"]) <= 3
                                                                   for v in r["letters"].values())
    text = absorption_summary(rep)
    assert ("cannot be read" in text) == (not r["readable"])

"""The splice API (saelab.interp.steering), gradients and attribution (saelab.interp.attribution) on the tiny GPT-2."""

import pytest
import torch

from saelab.evals.splice import SpliceSite, patched_logits, sae_replacement
from saelab.interp.attribution import ablation_effects, attribute
from saelab.interp.dashboard import logit_effects
from saelab.interp.steering import ablate, clamp, generate, scale, spliced, steer
from saelab.lm.models import load_lm
from saelab.sae.config import SAEConfig
from saelab.sae.model import SAE


@pytest.fixture(scope="module")
def lm():
    return load_lm("tiny-gpt2")


def tiny_sae(layer=3, normalize="none", k=8, seed=0):
    sae = SAE(SAEConfig(d_in=64, n_latents=256, k=k, layer=layer, normalize=normalize), seed=seed)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.2, generator=torch.Generator().manual_seed(seed))
    return sae


IDS = torch.tensor([[3, 70, 81, 90, 5, 66, 70, 12, 99, 101, 33, 44]])


def logits_of(lm, ids=IDS):
    with torch.no_grad():
        return lm.model(input_ids=ids, use_cache=False).logits.float()


@pytest.mark.parametrize("normalize", ["none", "layernorm"])
def test_error_term_without_edits_gives_clean_logits(lm, normalize):
    sae = tiny_sae(layer=1, normalize=normalize)
    clean = logits_of(lm)
    with spliced(lm, sae):
        same = logits_of(lm)
    torch.testing.assert_close(same, clean, atol=1e-5, rtol=1e-5)
    with spliced(lm, sae, keep_error=False):  # the reconstruction alone: what the suite's splice measures
        recon = logits_of(lm)
    assert (recon - clean).abs().max() > 1e-3
    torch.testing.assert_close(recon, patched_logits(lm, IDS, SpliceSite.of(sae, lm), sae_replacement(sae)))


def test_ablating_an_inactive_latent_changes_nothing(lm):
    sae = tiny_sae(layer=1)
    cap = {}
    with spliced(lm, sae, capture=cap):
        logits_of(lm)
    rows = cap["acts"][cap["mask"]]
    enc = sae.encode(rows)
    active = set(enc.top_idx_BK[enc.top_acts_BK > 0].tolist())
    inactive = next(j for j in range(sae.cfg.n_latents) if j not in active)
    busiest = max(active, key=lambda j: int((enc.top_idx_BK == j).sum()))
    for keep_error in (True, False):
        with spliced(lm, sae, keep_error=keep_error):
            base = logits_of(lm)
        with spliced(lm, sae, [ablate(inactive), scale(inactive, 5.0)], keep_error=keep_error):
            torch.testing.assert_close(logits_of(lm), base, atol=1e-5, rtol=1e-5)
        with spliced(lm, sae, [ablate(busiest)], keep_error=keep_error):
            assert (logits_of(lm) - base).abs().max() > 1e-4  # an active latent's ablation does change them


def test_edits_change_the_latents_they_name(lm):
    """Clamping a latent to v and re-encoding the spliced activations reads v back (no other change)."""
    sae = tiny_sae(layer=1)
    cap = {}
    with spliced(lm, sae, capture=cap):
        logits_of(lm)
    rows, positions = cap["acts"][cap["mask"]], cap["positions"][cap["mask"]]
    from saelab.interp.steering import edit_rows

    j = 7
    new = edit_rows(sae, rows, positions, [clamp(j, 3.0, positions=[4, 5])])
    pre_before = sae.encode(rows, keep_pre=True).pre_acts_BN
    pre_after = sae.encode(new, keep_pre=True).pre_acts_BN
    hit = torch.isin(positions, torch.tensor([4, 5]))
    a_before = sae.encode(rows)
    a_j = (a_before.top_acts_BK * (a_before.top_idx_BK == j)).sum(-1)
    # the edit moved latent j's pre-activation by (3 - a_j) * <W_enc_j, W_dec_j> at the two positions only
    expected = (3.0 - a_j) * (sae.W_enc[j] @ sae.W_dec[j])
    torch.testing.assert_close((pre_after - pre_before)[hit, j], expected[hit], atol=1e-4, rtol=1e-4)
    assert torch.equal(new[~hit], rows[~hit])


def test_steering_raises_the_tokens_its_logit_effects_rank_highest(lm):
    sae = tiny_sae(layer=3)  # the last block: its decoder row reaches the logits through ln_f only
    clean = logits_of(lm)[0, -1]
    for j in (11, 42):
        top = logit_effects(lm, sae, j, k=10)["positive_ids"]
        with spliced(lm, sae, [steer(j, 300.0)]):  # far above the stream's norm (~10): the row dominates
            steered = logits_of(lm)[0, -1]
        change = steered - clean
        assert change[top].mean() > change.mean() + change.std(), j  # the ten are raised more than the rest
        assert len(set(steered.topk(10).indices.tolist()) & set(top)) >= 8, j  # and they now lead


def test_generation_sees_absolute_positions_and_edits_apply_to_new_tokens(lm):
    sae = tiny_sae(layer=2)
    prompt = "hello wor"
    plain = generate(lm, sae, prompt, max_new_tokens=6)
    assert plain == generate(lm, sae, prompt, [ablate(0, positions=[0])], max_new_tokens=6)  # pos 0: untouched
    assert generate(lm, sae, prompt, [steer(5, 60.0)], max_new_tokens=6) != plain
    cap = {}
    ids = lm.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with spliced(lm, sae, capture=cap):
        lm.model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(ids))
    assert cap["positions"].tolist() == [[ids.shape[1] + 1]]  # the last step fed the 2nd new token


def test_attribution_matches_ablation_for_a_linear_metric():
    """With the final norm removed and the SAE after the last block, the logits are linear in the site's
    activations: activation x gradient must equal the real ablation effect."""
    lm = load_lm("tiny-gpt2")
    lm.model.transformer.ln_f = torch.nn.Identity()
    for normalize in ("none", "layernorm"):
        sae = tiny_sae(layer=3, normalize=normalize)

        def metric(logits):
            return logits[0, :, 70].sum() - logits[0, -1, 81]

        att = attribute(lm, sae, IDS, metric)
        assert att.metric == pytest.approx(float(metric(logits_of(lm))), rel=1e-5)
        top = [j for j, _ in att.top(6)]
        assert len(top) == 6
        real = ablation_effects(lm, sae, IDS, metric, top)
        for j in top:
            assert real[j] == pytest.approx(float(att.per_latent_N[j]), rel=1e-3, abs=1e-4), (normalize, j)


def test_batched_calls_with_broadcast_positions_and_no_grad_left_on_the_sae(lm):
    sae = tiny_sae(layer=1)
    ids = torch.cat([IDS, IDS.flip(-1)])
    pos = torch.arange(IDS.shape[1])[None]  # [1, T] for a batch of 2, as some callers pass it
    with torch.no_grad():
        clean = lm.model(input_ids=ids, position_ids=pos).logits
        with spliced(lm, sae, [ablate(int(sae.encode(torch.randn(3, 64)).top_idx_BK[0, 0]))], keep_error=False):
            spliced_logits = lm.model(input_ids=ids, position_ids=pos).logits
    assert (spliced_logits - clean).abs().max() > 1e-3  # the SAE ran on both rows
    attribute(lm, sae, IDS, lambda logits: logits[0, -1, 5])
    assert all(p.grad is None for p in sae.parameters())


def test_encode_with_grad_keeps_the_graph():
    sae = tiny_sae()
    x = torch.randn(5, 64, requires_grad=True)
    enc = sae.encode(x, grad=True)
    enc.top_acts_BK.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and sae.W_enc.grad is not None
    assert not sae.encode(x).top_acts_BK.requires_grad
    recon = sae.reconstruct(x, grad=True)
    assert recon.requires_grad and not sae.reconstruct(x).requires_grad


def test_bad_edits_and_mismatched_saes_get_clear_errors(lm):
    with pytest.raises(ValueError, match="latent must be between 0 and 255"):
        with spliced(lm, tiny_sae(), [ablate(999)]):
            pass
    wide = SAE(SAEConfig(d_in=768, n_latents=64, k=4, model="gpt2"))
    with pytest.raises(ValueError, match="768-wide activations but tiny-gpt2 has d_model 64.*trained on gpt2"):
        with spliced(lm, wide):
            pass
    with pytest.raises(ValueError, match="edit op must be one of"):
        from saelab.interp.steering import Edit

        Edit(1, "boost")

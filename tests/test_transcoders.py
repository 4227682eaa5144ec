"""Transcoders (`saelab.sae.families.transcoder`): a harvest of paired sites (an MLP's input and output from one forward
pass), training with the Trainer, the splice that puts the transcoder's output in place of the MLP's, and SAE Lens's
transcoder format both ways (against the real SAE Lens, the `peers` extra)."""

import os
from dataclasses import replace

import pytest
import torch
from conftest import tiny_harvest_config

from saelab.sae.config import SAEConfig
from saelab.sae.model import SAE
from saelab.training.trainer import TrainConfig, Trainer


def need(module: str):
    try:
        return __import__(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is missing under CI: pip install -e '.[peers]'")
        pytest.skip(f"{module} is not installed: pip install -e '.[peers]'")


@pytest.fixture(scope="module")
def paired(tmp_path_factory, tiny_lm):
    """(train, held-out) caches of the tiny model's layer-2 MLP input and output, paired."""
    from saelab.acts.harvest import harvest

    cfg = replace(tiny_harvest_config(), site="mlp_in+mlp_out", max_tokens=63 * 96)
    root = tmp_path_factory.mktemp("paired")
    return (harvest(cfg, root / "train", lm=tiny_lm, progress=False),
            harvest(replace(cfg, split="heldout", max_tokens=63 * 32), root / "held", lm=tiny_lm, progress=False))


def test_a_paired_site_is_the_mlps_input_and_output_from_one_pass(tiny_lm):
    from saelab.lm.sites import find_blocks, run_to_site

    ids = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    both = run_to_site(tiny_lm, ids, "mlp_in+mlp_out", 2)
    d = tiny_lm.d_model
    assert both.shape[-1] == 2 * d
    assert torch.equal(both[..., :d], run_to_site(tiny_lm, ids, "mlp_in", 2))
    assert torch.equal(both[..., d:], run_to_site(tiny_lm, ids, "mlp_out", 2))
    mlp = find_blocks(tiny_lm.model)[2].mlp
    with torch.no_grad():  # the MLP maps what mlp_in holds to what mlp_out holds
        torch.testing.assert_close(mlp(both[..., :d]), both[..., d:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown site"):
        run_to_site(tiny_lm, ids, "mlp_in+nowhere", 2)


def test_a_transcoder_trains_with_the_trainer_and_predicts_the_mlp_output(paired, caches, tmp_path):
    from saelab.evals.reconstruction import reconstruction_metrics

    train, held = paired
    d = train.d_model // 2
    cfg = TrainConfig(activation="transcoder", n_latents=128, k=8, normalize="dataset_unit_norm", batch_size=256,
                      epochs=3.0, lr=3e-3, eval_every=5, checkpoint_every=0, progress=False, transcoder_skip=True)
    trainer = Trainer(cfg, train, tmp_path / "run", eval_cache=held)
    before = trainer.heldout_metrics()["nmse"]
    trainer.train()
    after = trainer.heldout_metrics()
    assert after["nmse"] < 0.8 * before and 7 < after["l0"] <= 8  # TopK: at most k per token
    sae = SAE.load(tmp_path / "run" / "sae")
    assert (sae.cfg.d_in, sae.cfg.site, sae.cfg.transcoder_target, sae.cfg.layer) == (d, "mlp_in", "mlp_out", 2)
    assert float(sae.W_skip.detach().abs().max()) > 0 and float(sae.threshold[0]) > 0  # skip learned, threshold set
    rows = held.activations()
    x, y = rows[:, :d], rows[:, d:]
    with torch.no_grad():  # its output is a prediction of the MLP's output, in that output's space
        y_hat = sae.reconstruct(x)
        nmse = float(((y_hat - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
    assert nmse == pytest.approx(after["nmse"], rel=1e-4)
    assert reconstruction_metrics(sae, rows)["nmse"] == pytest.approx(nmse, rel=1e-4)
    with pytest.raises(ValueError, match="rows of two sites"):
        Trainer(cfg, caches[0])  # a single site (the residual stream) is not a transcoder's data
    with pytest.raises(ValueError, match="per-token normalisation"):
        SAEConfig(d_in=8, n_latents=16, k=2, activation="transcoder", normalize="per_token_unit_norm")


def test_the_splice_gives_the_transcoder_the_mlps_input_of_the_same_pass(tiny_lm):
    """A 'transcoder' that is the MLP itself, spliced in place of the MLP's output: the logits do not move."""
    import copy

    from saelab.evals.downstream import downstream_losses
    from saelab.evals.splice import SpliceSite, patched_logits
    from saelab.lm.sites import find_blocks

    mlp = copy.deepcopy(find_blocks(tiny_lm.model)[2].mlp)  # a copy: the hooked module itself would call its hook
    where = SpliceSite(layer=2, site="mlp_out", reads="mlp_in", exclude_first=0, outlier_factor=None)
    ids = torch.randint(0, 200, (3, 16), generator=torch.Generator().manual_seed(1))
    clean = patched_logits(tiny_lm, ids, where, None)
    itself = patched_logits(tiny_lm, ids, where, lambda src, m, p: mlp(src))
    torch.testing.assert_close(itself, clean, atol=1e-4, rtol=1e-4)
    res = downstream_losses(tiny_lm, ids, {"mlp": lambda src, m, p: mlp(src), "zero": lambda src, m, p: src * 0},
                            where, progress=False)
    assert abs(res["mlp"]["delta_loss"]) < 1e-4 and res["zero"]["delta_loss"] > 1e-3


def test_a_trained_transcoders_splice_site_and_delta_ce_at_every_position(paired, tiny_lm):
    from saelab.evals.downstream import downstream_loss
    from saelab.evals.splice import SpliceSite

    train, _ = paired
    cfg = TrainConfig(activation="transcoder", n_latents=128, k=8, normalize="none", batch_size=256, epochs=2.0,
                      lr=3e-3, checkpoint_every=0, progress=False)
    trainer = Trainer(cfg, train)
    trainer.train()
    where = SpliceSite.of(trainer.sae, tiny_lm, positions="all")
    assert (where.site, where.reads, where.exclude_first, where.outlier_factor) == ("mlp_out", "mlp_in", 0, None)
    ids = torch.randint(0, 200, (4, 20), generator=torch.Generator().manual_seed(2))
    r = downstream_loss(tiny_lm, trainer.sae, ids, where, progress=False)
    assert r["n_positions_left_clean"] == 0 and r["ce_spliced"] != r["ce_clean"]


def _trained_like(skip: bool, normalize: str = "dataset_unit_norm") -> SAE:
    """A transcoder with random weights, scales and a threshold (as if trained), d 16, n 64."""
    g = torch.Generator().manual_seed(0)
    sae = SAE(SAEConfig(d_in=16, n_latents=64, k=6, activation="transcoder", normalize=normalize, site="mlp_in",
                        layer=3, transcoder_target="mlp_out", transcoder_skip=skip, model="m"), seed=0)
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(64, generator=g))
        sae.b_pre.copy_(torch.randn(16, generator=g))
        if skip:
            sae.W_skip.copy_(0.1 * torch.randn(16, 16, generator=g))
        sae.input_scale.fill_(0.37)
        sae.output_scale.fill_(2.5)
        sae.threshold.fill_(0.9)
    return sae


@pytest.mark.parametrize("skip", [True, False])
def test_saelab_transcoder_round_trips_through_the_real_sae_lens(tmp_path, skip):
    sl = need("sae_lens")
    from saelab.sae.formats import load_sae, to_saelens

    sae = _trained_like(skip)
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(3)) * 3
    to_saelens(sae, tmp_path / "tc")
    theirs = sl.SAE.load_from_disk(str(tmp_path / "tc"), device="cpu")
    assert type(theirs).__name__ == ("JumpReLUSkipTranscoder" if skip else "JumpReLUTranscoder")
    assert theirs.cfg.d_out == 16 and theirs.cfg.metadata.hook_name == "blocks.3.ln2.hook_normalized"
    with torch.no_grad():  # SAE Lens runs the JumpReLU form: saelab's transcoder at its threshold
        torch.testing.assert_close(theirs(x), sae.reconstruct(x, activation="jumprelu"), atol=1e-4, rtol=1e-4)
    back = load_sae(tmp_path / "tc")
    c = back.cfg
    assert (c.activation, c.transcoder_encode, c.transcoder_skip, c.site, c.transcoder_target, c.layer, c.k) == (
        "transcoder", "topk", skip, "mlp_in", "mlp_out", 3, 6)
    with torch.no_grad():  # read back as the TopK transcoder it was (scales folded into the weights)
        torch.testing.assert_close(back.reconstruct(x), sae.reconstruct(x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(back.reconstruct(x, activation="jumprelu"), theirs(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["transcoder", "skip_transcoder", "jumprelu_skip_transcoder"])
def test_sae_lens_transcoders_load_and_run_as_sae_lens_runs_them(tmp_path, arch):
    sl = need("sae_lens")
    from sae_lens.saes.sae import SAEMetadata

    from saelab.sae.formats import load_sae

    cls, cfg_cls = {"transcoder": (sl.Transcoder, sl.TranscoderConfig),
                    "skip_transcoder": (sl.SkipTranscoder, sl.SkipTranscoderConfig),
                    "jumprelu_skip_transcoder": (sl.JumpReLUSkipTranscoder, sl.JumpReLUSkipTranscoderConfig)}[arch]
    theirs = cls(cfg_cls(d_in=16, d_sae=64, d_out=16, apply_b_dec_to_input=False,
                         metadata=SAEMetadata(hook_name="blocks.1.ln2.hook_normalized",
                                                 hook_name_out="blocks.1.hook_mlp_out", model_name="gpt2")))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            v = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(v.abs() * 2.5 if name == "threshold" else v)
    theirs.save_model(str(tmp_path / arch))
    ours = load_sae(tmp_path / arch)
    assert (ours.cfg.activation, ours.cfg.site, ours.cfg.transcoder_target, ours.cfg.layer) == (
        "transcoder", "mlp_in", "mlp_out", 1)
    assert ours.cfg.transcoder_encode == ("jumprelu" if arch.startswith("jumprelu") else "relu")
    x = torch.randn(32, 16, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(ours.reconstruct(x), theirs(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("wrong,message", [
    ({"target": "x"}, "that is an SAE's loss"), ({"centre": True}, "subtracted b_dec from x"),
    ({"skip": "none"}, "skip connection is missing"), ({"skip": "transposed"}, "x @ W_skip.T"),
    ({"base": "x"}, "predicting y's mean"), ({"relu": False}, "through a ReLU")])
def test_exercise_8_5_names_each_mistake(wrong, message, monkeypatch):
    from saelab.teach.exercises import check_transcoder_loss
    from saelab.teach.exercises.transcoders import _variant, transcoder_loss

    monkeypatch.delenv("SAELAB_SOLUTIONS", raising=False)
    check_transcoder_loss(transcoder_loss)

    def mistaken(x, y, *rest):
        kw = {k: (x if v == "x" else v) for k, v in wrong.items()}
        return _variant(x, y, *rest, **({"base": x} if "target" in kw else {}), **kw)

    with pytest.raises(AssertionError, match=message):
        check_transcoder_loss(mistaken)
    monkeypatch.setenv("SAELAB_SOLUTIONS", "1")
    check_transcoder_loss(mistaken)  # under SAELAB_SOLUTIONS=1 the check grades the reference solution

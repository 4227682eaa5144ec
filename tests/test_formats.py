"""Round trips with the real peer libraries (the `peers` extra: sae-lens, eai-sparsify), not imitations of
their formats: an SAE saved by each library loads in saelab and encodes / decodes the same activations, and
saelab's exports load in each library likewise. Skipped when a library is missing, except under CI."""

import json
import os
from pathlib import Path

import pytest
import torch

from saelab.sae.config import SAEConfig
from saelab.sae.formats import detect_format, load_sae, to_saelens, to_sparsify
from saelab.sae.formats.hooks import site_from_hook
from saelab.sae.kernels import dense_codes
from saelab.sae.model import SAE


def need(module: str):
    try:
        return __import__(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is missing under CI: pip install -e '.[peers]'")
        pytest.skip(f"{module} is not installed: pip install -e '.[peers]'")


def dense(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    enc = sae.encode(x)
    return dense_codes(enc.top_acts_BK.float(), enc.top_idx_BK, sae.cfg.n_latents)


def randomize_(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if "b_" in name or "bias" in name else 1.0))


D, N = 16, 64


def saelens_sae(arch: str, norm: str = "none", apply_b_dec: bool = True, rescale: bool = False):
    sl = need("sae_lens")
    from sae_lens.saes.sae import SAEMetadata

    meta = SAEMetadata(hook_name="blocks.3.hook_resid_post", model_name="tiny-gpt2")
    common = dict(d_in=D, d_sae=N, normalize_activations=norm, apply_b_dec_to_input=apply_b_dec, metadata=meta)
    if arch == "topk":
        sae = sl.TopKSAE(sl.TopKSAEConfig(k=5, rescale_acts_by_decoder_norm=rescale, **common))
    elif arch == "jumprelu":
        sae = sl.JumpReLUSAE(sl.JumpReLUSAEConfig(**common))
    else:
        sae = sl.StandardSAE(sl.StandardSAEConfig(**common))
    randomize_(sae)
    if arch == "jumprelu":
        with torch.no_grad():
            sae.threshold.copy_(torch.rand(N) * 0.5)
    return sae


@pytest.mark.parametrize("arch,norm,apply_b_dec,rescale", [
    ("standard", "none", True, False), ("standard", "layer_norm", False, False),
    ("topk", "none", True, False), ("topk", "constant_norm_rescale", True, True), ("topk", "layer_norm", False, False),
    ("jumprelu", "none", True, False), ("jumprelu", "layer_norm", True, False),
])
def test_saelens_folder_loads_and_encodes_like_saelens(tmp_path, arch, norm, apply_b_dec, rescale):
    theirs = saelens_sae(arch, norm, apply_b_dec, rescale)
    theirs.save_model(tmp_path / "sl")
    assert detect_format(tmp_path / "sl") == "sae_lens"
    ours = load_sae(tmp_path / "sl")
    assert (ours.cfg.site, ours.cfg.layer, ours.cfg.hook) == ("resid_post", 3, "blocks.3.hook_resid_post")
    assert ours.cfg.model == "tiny-gpt2" and ours.cfg.source.startswith("sae_lens:")
    x = torch.randn(40, D) * 2 + 0.5
    with torch.no_grad():
        z_theirs = theirs.encode(x)
        recon_theirs = theirs.decode(z_theirs)
    assert (z_theirs > 0).sum() > 40  # the comparison is not between empty codes
    torch.testing.assert_close(dense(ours, x), z_theirs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.reconstruct(x), recon_theirs, atol=1e-4, rtol=1e-4)


def test_pre_6_saelens_config_reads_as_saelens_reads_it(tmp_path):
    """Before SAE Lens 6: hook_point, activation_fn_str 'topk' on a 'standard' architecture, a boolean
    normalize_activations; and a scaling_factor that is not all ones is refused, as SAE Lens refuses it."""
    from safetensors.torch import load_file, save_file

    theirs = saelens_sae("topk")
    theirs.save_model(tmp_path / "sl")
    cfg = json.loads((tmp_path / "sl" / "cfg.json").read_text())
    old = {"architecture": "standard", "d_in": D, "d_sae": N, "dtype": "float32", "device": "cpu",
           "activation_fn_str": "topk", "activation_fn_kwargs": {"k": cfg["k"]}, "apply_b_dec_to_input": True,
           "normalize_activations": False, "hook_point": "blocks.3.hook_resid_post", "model_name": "gpt2-small"}
    (tmp_path / "sl" / "cfg.json").write_text(json.dumps(old))
    ours = load_sae(tmp_path / "sl")
    assert (ours.cfg.activation, ours.cfg.k, ours.cfg.layer, ours.cfg.model) == ("topk", cfg["k"], 3, "gpt2")
    x = torch.randn(30, D)
    with torch.no_grad():
        torch.testing.assert_close(ours.reconstruct(x), theirs.decode(theirs.encode(x)), atol=1e-4, rtol=1e-4)
    w = load_file(tmp_path / "sl" / "sae_weights.safetensors")
    save_file({**w, "scaling_factor": torch.full((N,), 2.0)}, tmp_path / "sl" / "sae_weights.safetensors")
    with pytest.raises(ValueError, match="scaling_factor.*not all ones"):
        load_sae(tmp_path / "sl")
    old["activation_fn_str"] = "tanh"
    (tmp_path / "sl" / "cfg.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="activation_fn 'tanh' is not supported"):
        load_sae(tmp_path / "sl")


def test_unmapped_hook_warns_at_load_and_refuses_to_splice(tmp_path, tiny_lm):
    from saelab.evals.splice import SpliceSite

    sl = need("sae_lens")
    from sae_lens.saes.sae import SAEMetadata

    meta = SAEMetadata(hook_name="blocks.1.hook_resid_mid", model_name="tiny-gpt2")  # between attention and MLP
    sl.StandardSAE(sl.StandardSAEConfig(d_in=tiny_lm.d_model, d_sae=N, metadata=meta)).save_model(tmp_path / "mid")
    with pytest.warns(UserWarning, match="hook 'blocks.1.hook_resid_mid' is not a site"):
        sae = load_sae(tmp_path / "mid")
    with pytest.raises(ValueError, match="cannot map to a site.*pass site= and layer="):
        SpliceSite.of(sae, tiny_lm)
    with pytest.warns(UserWarning):
        fixed = load_sae(tmp_path / "mid", site="resid_post", layer=1)
    assert SpliceSite.of(fixed, tiny_lm).layer == 1


@pytest.mark.parametrize("activation,normalize", [("topk", "none"), ("topk", "dataset_unit_norm"),
                                                  ("topk", "per_token_unit_norm"), ("relu", "none"),
                                                  ("batchtopk", "per_token_unit_norm")])
def test_saelab_export_loads_in_saelens(tmp_path, activation, normalize):
    sl = need("sae_lens")
    torch.manual_seed(0)
    x = torch.randn(60, D) * 4 + 1
    ours = SAE(SAEConfig(d_in=D, n_latents=N, k=5, activation=activation, normalize=normalize, layer=2,
                         site="mlp_out", model="tiny-gpt2"))
    ours.init_from_data(x)
    with torch.no_grad():
        ours.b_enc.normal_(0, 0.3)
        if activation == "batchtopk":  # exported as SAE Lens saves BatchTopK SAEs: a JumpReLU at its threshold
            ours.threshold.fill_(0.3)
    to_saelens(ours, tmp_path / "export")
    theirs = sl.SAE.load_from_disk(tmp_path / "export")
    meta = theirs.cfg.metadata  # read as a 6.x config: nothing dropped or defaulted
    assert (meta.hook_name, meta.prepend_bos, meta.context_size) == ("blocks.2.hook_mlp_out", False, 64)
    with torch.no_grad():
        recon = theirs.decode(theirs.encode(x))
    tol = 1e-3 if normalize == "per_token_unit_norm" else 1e-4  # layer norm's eps differs from unit norm's
    torch.testing.assert_close(recon, ours.reconstruct(x), atol=tol, rtol=tol)
    back = load_sae(tmp_path / "export")  # and back into saelab
    torch.testing.assert_close(back.reconstruct(x), ours.reconstruct(x), atol=tol, rtol=tol)



WIDTHS = [8, 24, N]
FAMILIES = {"batchtopk": dict(activation="batchtopk"),
            "matryoshka": dict(activation="batchtopk", matryoshka_widths=WIDTHS),
            "jumprelu": dict(activation="jumprelu", jumprelu_bandwidth=0.02, jumprelu_init_threshold=0.005)}
EXPECTED = {"batchtopk": ("batchtopk", None), "matryoshka": ("batchtopk", WIDTHS),  # (activation, widths) in saelab
            "matryoshka_batchtopk": ("batchtopk", WIDTHS), "jumprelu": ("jumprelu", None)}


def saelab_family(family: str, normalize: str = "none", seed: int = 0) -> tuple[SAE, torch.Tensor]:
    """A saelab BatchTopK / Matryoshka / JumpReLU SAE with random weights and thresholds, and inputs for it."""
    torch.manual_seed(seed)
    x = torch.randn(48, D) * 3 + 0.5
    sae = SAE(SAEConfig(d_in=D, n_latents=N, k=5, normalize=normalize, layer=2, site="resid_post", model="tiny-gpt2",
                        **FAMILIES[family]))
    randomize_(sae, seed)
    sae.init_from_data(x)
    with torch.no_grad():  # a BatchTopK threshold is one value; a JumpReLU's one per latent
        sae.threshold.copy_(torch.full((N,), 1.5) if family != "jumprelu" else torch.rand(N) * 3)
    return sae, x


def saelens_codes(theirs, x):
    z = theirs.encode(x).detach()
    return z, theirs.decode(z).detach()


@pytest.mark.parametrize("family,normalize", [("batchtopk", "none"), ("matryoshka", "dataset_unit_norm"),
                                              ("jumprelu", "none"), ("jumprelu", "per_token_unit_norm")])
def test_batchtopk_matryoshka_jumprelu_export_as_saelens_saves_them(tmp_path, family, normalize):
    """Exported as SAE Lens's inference save writes them: 'jumprelu' with a per-latent threshold, the family and widths
    in metadata.training_architecture[_details]; SAE Lens codes as saelab does; they load back as the family."""
    sl = need("sae_lens")
    ours, x = saelab_family(family, normalize)
    to_saelens(ours, tmp_path / "export")
    cfg = json.loads((tmp_path / "export" / "cfg.json").read_text())
    trained = {"batchtopk": "batchtopk", "matryoshka": "matryoshka_batchtopk", "jumprelu": "jumprelu"}[family]
    assert cfg["architecture"] == "jumprelu" and cfg["metadata"]["training_architecture"] == trained
    theirs = sl.SAE.load_from_disk(tmp_path / "export")
    assert type(theirs).__name__ == "JumpReLUSAE" and theirs.cfg.metadata.training_architecture_details.get(
        "matryoshka_widths") == EXPECTED[family][1]
    z, recon = saelens_codes(theirs, x)
    assert 48 < (z > 0).sum() < 48 * N // 2  # the threshold zeroes some latents and keeps others
    tol = 1e-3 if normalize == "per_token_unit_norm" else 1e-4  # layer norm's eps differs from unit norm's
    torch.testing.assert_close(dense(ours, x), z, atol=tol, rtol=tol)
    torch.testing.assert_close(recon, ours.reconstruct(x), atol=tol, rtol=tol)
    back = load_sae(tmp_path / "export")
    assert (back.cfg.activation, back.cfg.matryoshka_widths) == EXPECTED[family]
    torch.testing.assert_close(back.threshold, ours.threshold)
    torch.testing.assert_close(back.reconstruct(x), ours.reconstruct(x), atol=tol, rtol=tol)
    assert family != "jumprelu" or (back.cfg.jumprelu_bandwidth, back.cfg.jumprelu_init_threshold) == (0.02, 0.005)


def saelens_training_sae(arch: str, norm: str, apply_b_dec: bool, rescale: bool):
    sl = need("sae_lens")
    from sae_lens.saes.sae import SAEMetadata

    common = dict(d_in=D, d_sae=N, normalize_activations=norm, apply_b_dec_to_input=apply_b_dec,
                  metadata=SAEMetadata(hook_name="blocks.3.hook_resid_post", model_name="tiny-gpt2"))
    topk = dict(k=5, rescale_acts_by_decoder_norm=rescale)
    name, extra = {"jumprelu": ("JumpReLU", dict(jumprelu_bandwidth=0.03)), "batchtopk": ("BatchTopK", topk),
                   "matryoshka_batchtopk": ("MatryoshkaBatchTopK", dict(topk, matryoshka_widths=list(WIDTHS)))}[arch]
    sae = getattr(sl, f"{name}TrainingSAE")(getattr(sl, f"{name}TrainingSAEConfig")(**extra, **common))
    randomize_(sae, seed=2)
    with torch.no_grad():  # topk_threshold is in units of pre-activations times decoder norms when rescaling (~4)
        (sae.threshold.copy_(torch.rand(N) * 2) if arch == "jumprelu" else
         sae.topk_threshold.fill_(6.0 if rescale else 1.5))
    return sae


@pytest.mark.parametrize("arch,norm,apply_b_dec,rescale", [
    ("batchtopk", "none", True, True), ("batchtopk", "layer_norm", False, False),
    ("matryoshka_batchtopk", "none", True, True), ("matryoshka_batchtopk", "constant_norm_rescale", False, False),
    ("jumprelu", "none", True, False), ("jumprelu", "layer_norm", False, False),
])
def test_saelens_training_and_inference_saves_load_in_saelab(tmp_path, arch, norm, apply_b_dec, rescale):
    """Both of SAE Lens's saves: `save_model` (training: 'batchtopk' / 'matryoshka_batchtopk', a scalar topk_threshold,
    norms unfolded) and `save_inference_model` ('jumprelu') load as the family and code as SAE Lens's inference SAE."""
    sl = need("sae_lens")
    trained = saelens_training_sae(arch, norm, apply_b_dec, rescale)
    trained.save_model(tmp_path / "train")
    trained.save_inference_model(tmp_path / "inference")
    assert json.loads((tmp_path / "train" / "cfg.json").read_text())["architecture"] == arch
    assert json.loads((tmp_path / "inference" / "cfg.json").read_text())["architecture"] == "jumprelu"
    z, recon = saelens_codes(sl.SAE.load_from_disk(tmp_path / "inference"), x := torch.randn(40, D) * 2 + 0.5)
    assert 40 < (z > 0).sum() < 40 * N // 2
    for folder in ("train", "inference"):
        ours = load_sae(tmp_path / folder)
        assert (ours.cfg.activation, ours.cfg.matryoshka_widths, ours.cfg.layer) == (*EXPECTED[arch], 3)
        assert ours.cfg.jumprelu_bandwidth == 0.03 if arch == "jumprelu" else (
            ours.cfg.k == 5 and bool(torch.all(ours.threshold == ours.threshold[0])))
        torch.testing.assert_close(dense(ours, x), z, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ours.reconstruct(x), recon, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["batchtopk", "matryoshka", "jumprelu"])
def test_each_family_round_trips_through_saelab_and_saelens_folders(tmp_path, family):
    """saelab's folder -> saelab -> SAE Lens's folder -> SAE Lens, which saves it again itself -> saelab: the
    same family, widths, thresholds and reconstructions (SAE Lens keeps the metadata that records the family)."""
    sl = need("sae_lens")
    ours, x = saelab_family(family, seed=3)
    ours.save(tmp_path / "saelab")
    mine = load_sae(tmp_path / "saelab")
    assert mine.cfg == ours.cfg and isinstance(mine.threshold, type(ours.threshold))  # a parameter for JumpReLU
    to_saelens(mine, tmp_path / "export")
    sl.SAE.load_from_disk(tmp_path / "export").save_model(tmp_path / "resaved")
    back = load_sae(tmp_path / "resaved")
    assert (back.cfg.activation, back.cfg.matryoshka_widths) == EXPECTED[family]
    assert isinstance(back.threshold, torch.nn.Parameter) == (family == "jumprelu")
    torch.testing.assert_close(back.threshold, ours.threshold)
    torch.testing.assert_close(back.reconstruct(x), ours.reconstruct(x), atol=1e-4, rtol=1e-4)


def test_saelens_folders_saelab_cannot_read_say_what_and_what_to_do(tmp_path):
    from safetensors.torch import load_file, save_file

    sl = need("sae_lens")
    sl.GatedSAE(sl.GatedSAEConfig(d_in=D, d_sae=N)).save_model(tmp_path / "gated")
    with pytest.raises(ValueError, match=r"architecture 'gated' is not supported \(a gated SAE.*through sae_lens"):
        load_sae(tmp_path / "gated")
    trained = saelens_training_sae("matryoshka_batchtopk", "none", True, False)
    trained.save_model(tmp_path / "train")
    w = load_file(weights := tmp_path / "train" / "sae_weights.safetensors")
    save_file({k: v for k, v in w.items() if k != "topk_threshold"}, weights)
    with pytest.raises(ValueError, match="'matryoshka_batchtopk' training folder needs a scalar 'topk_threshold'.*"
                                         "save_inference_model"):
        load_sae(tmp_path / "train")
    save_file(w, weights)
    cfg = json.loads((path := tmp_path / "train" / "cfg.json").read_text())
    path.write_text(json.dumps({**cfg, "matryoshka_widths": [8, 4, N]}))
    with pytest.raises(ValueError, match=r"matryoshka_widths \[8, 4, 64\] do not fit.*fix them there"):
        load_sae(tmp_path / "train")
    trained.save_inference_model(tmp_path / "tuned")  # a BatchTopK threshold tuned per latent: a JumpReLU now
    w = load_file(weights := tmp_path / "tuned" / "sae_weights.safetensors")
    save_file({**w, "threshold": torch.rand(N)}, weights)
    assert load_sae(tmp_path / "tuned").cfg.activation == "jumprelu"


def sparsify_coder(k=4, multi_topk=False):
    sp = need("sparsify")
    coder = sp.SparseCoder(D, sp.SparseCoderConfig(num_latents=N, k=k, multi_topk=multi_topk))
    randomize_(coder, seed=1)
    return coder


def test_sparsify_folder_and_checkpoint_load_and_encode_like_sparsify(tmp_path):
    theirs = sparsify_coder()
    theirs.save_to_disk(tmp_path / "ckpt" / "layers.3")
    sparsify_coder(k=8).save_to_disk(tmp_path / "ckpt" / "layers.5.mlp")
    assert detect_format(tmp_path / "ckpt" / "layers.3") == "sparsify"
    assert detect_format(tmp_path / "ckpt") == "sparsify_checkpoint"
    ours = load_sae(tmp_path / "ckpt", hookpoint="layers.3")
    assert (ours.cfg.site, ours.cfg.layer, ours.cfg.k) == ("resid_post", 3, 4)
    assert load_sae(tmp_path / "ckpt" / "layers.5.mlp").cfg.site == "mlp_out"
    with pytest.raises(ValueError, match=r"2 hook points \['layers.3', 'layers.5.mlp'\]; pick one"):
        load_sae(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="no hook point 'layers.9'"):
        load_sae(tmp_path / "ckpt", hookpoint="layers.9")
    x = torch.randn(40, D)
    with torch.no_grad():
        enc = theirs.encode(x)
        recon = theirs.decode(enc.top_acts, enc.top_indices)
    z_theirs = dense_codes(enc.top_acts.float(), enc.top_indices, N)
    assert (z_theirs > 0).sum() > 40
    torch.testing.assert_close(dense(ours, x), z_theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.reconstruct(x), recon, atol=1e-5, rtol=1e-5)


def test_saelab_export_loads_in_sparsify(tmp_path):
    sp = need("sparsify")
    torch.manual_seed(0)
    x = torch.randn(50, D) * 3
    ours = SAE(SAEConfig(d_in=D, n_latents=N, k=4, normalize="dataset_unit_norm", layer=3))
    ours.init_from_data(x)
    with torch.no_grad():
        ours.b_enc.normal_(0, 0.3)
    to_sparsify(ours, tmp_path / "layers.3")
    theirs = sp.SparseCoder.load_from_disk(tmp_path / "layers.3")
    with torch.no_grad():
        enc = theirs.encode(x)
        recon = theirs.decode(enc.top_acts, enc.top_indices)
    torch.testing.assert_close(recon, ours.reconstruct(x), atol=1e-4, rtol=1e-4)
    assert load_sae(tmp_path / "layers.3").cfg.layer == 3
    per_token = SAE(SAEConfig(d_in=D, n_latents=N, k=4, normalize="per_token_unit_norm"))
    with pytest.raises(ValueError, match="sparsify has no input normalisation.*to_saelens"):
        to_sparsify(per_token, tmp_path / "no")


def test_unknown_folders_and_files_name_what_they_hold(tmp_path):
    (tmp_path / "weird").mkdir()
    (tmp_path / "weird" / "model.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"holds no SAE saelab recognises \(found \['model.bin'\]\).*SAE Lens"):
        load_sae(tmp_path / "weird")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "cfg.json").write_text(json.dumps({"hidden": 3}))
    (tmp_path / "odd" / "sae.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"neither saelab's nor sparsify's \(keys \['hidden'\]\)"):
        load_sae(tmp_path / "odd")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"a file saelab does not read \(.bin\).*Gemma Scope.*dictionary_learning"):
        load_sae(tmp_path / "w.bin")
    (tmp_path / "w.npz").write_bytes(b"x")  # a damaged Gemma Scope params file
    with pytest.raises(ValueError, match=r"w.npz could not be read as Gemma Scope parameters"):
        load_sae(tmp_path / "w.npz")
    with pytest.raises(FileNotFoundError, match="hf://runs/nope"):
        load_sae("runs/nope")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not an openai/sparse_autoencoder state dict"):
        load_sae(tmp_path / "bad.pt")


def test_hub_source_downloads_only_the_subfolder(tmp_path, monkeypatch):
    import shutil

    import huggingface_hub

    ours = SAE(SAEConfig(d_in=D, n_latents=N, k=4, layer=1))
    to_sparsify(ours, tmp_path / "repo" / "layers.1")
    to_sparsify(ours, tmp_path / "repo" / "layers.2")
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, allow_patterns))
        out = tmp_path / "cache"
        for pattern in allow_patterns:
            src = tmp_path / "repo" / pattern
            if src.is_file():
                (out / pattern).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, out / pattern)
        return str(out)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    sae = load_sae("hf://someone/sae-repo/layers.1")
    assert calls[0][0] == "someone/sae-repo" and all(p.startswith("layers.1/") for p in calls[0][1])
    assert not (tmp_path / "cache" / "layers.2").exists()
    assert sae.cfg.source == "sparsify:hf://someone/sae-repo/layers.1" and sae.cfg.layer == 1
    torch.testing.assert_close(sae.W_dec, ours.W_dec)
    with pytest.raises(ValueError, match="hf://owner/repo"):
        load_sae("hf://just-a-name")
    calls.clear()
    assert load_sae("hf://someone/sae-repo", hookpoint="layers.2").cfg.layer == 2  # only that hook point's files
    assert all(p.startswith("layers.2/") for p in calls[0][1])


def test_hook_names_map_to_sites():
    assert site_from_hook("blocks.8.hook_resid_post") == ("resid_post", 8)
    assert site_from_hook("blocks.8.hook_resid_pre") == ("resid_post", 7)
    assert site_from_hook("blocks.0.hook_resid_pre") is None  # the embeddings: no saelab site
    assert site_from_hook("blocks.2.hook_mlp_out") == ("mlp_out", 2)
    assert site_from_hook("model.layers.22") == ("resid_post", 22)
    assert site_from_hook("layers.4.self_attn") == ("attn_out", 4)
    assert site_from_hook("transformer.h.6.mlp") == ("mlp_out", 6)
    assert site_from_hook("blocks.2.attn.hook_z") is None


@pytest.mark.assets
def test_saelab_eval_runs_on_saelens_and_sparsify_folders(tmp_path, capsys):
    """`saelab eval --sae` on folders written by SAE Lens and sparsify for the embedded SmolLM2 (layer 22)."""
    sl = need("sae_lens")
    sp = need("sparsify")
    from sae_lens.saes.sae import SAEMetadata

    from saelab.cli import main

    d, n = 576, 512
    lens = sl.TopKSAE(sl.TopKSAEConfig(d_in=d, d_sae=n, k=16, metadata=SAEMetadata(
        hook_name="blocks.22.hook_resid_post", model_name="smollm2-135m")))
    lens.save_model(tmp_path / "lens")
    coder = sp.SparseCoder(d, sp.SparseCoderConfig(num_latents=n, k=16))
    coder.save_to_disk(tmp_path / "ckpt" / "layers.22")
    rc = main(["eval", "--sae", f"lens={tmp_path / 'lens'}", "--sae", f"sparse={tmp_path / 'ckpt' / 'layers.22'}",
               "--metrics", "downstream", "--downstream_contexts", "4", "--out", str(tmp_path / "eval"),
               "--device", "cpu"])
    assert rc == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["site"]["layer"] == 22 and report["site"]["site"] == "resid_post"  # read from the hook names
    for name in ("lens", "sparse"):
        assert report["saes"][name]["downstream"]["ce_spliced"] > report["saes"][name]["downstream"]["ce_clean"]
    printed = capsys.readouterr().out
    assert "lens" in printed and "sparse" in printed and "report:" in printed


SAVED_BEFORE = Path(__file__).parent / "data" / "saved_before_regroup"


@pytest.mark.parametrize("name", ["topk_per_token", "relu_dataset_norm"])
def test_a_folder_saved_before_the_regroup_loads_and_reconstructs_as_then(name):
    """Folders written by saelab before the package moved into stages (format 2) still load, through both
    `SAE.load` and `load_sae`, with their buffers, and reconstruct the recorded inputs as they did then."""
    from safetensors.torch import load_file

    expected = load_file(SAVED_BEFORE / "expected.safetensors")
    x = expected[f"{name}.x"]
    for sae in (SAE.load(SAVED_BEFORE / name), load_sae(SAVED_BEFORE / name)):
        assert float(sae.input_scale) == pytest.approx(0.37) and int(sae.tokens_seen) == 12345
        torch.testing.assert_close(sae.reconstruct(x), expected[f"{name}.recon"], rtol=1e-5, atol=1e-5)
        enc = sae.encode(x)
        torch.testing.assert_close(enc.top_acts_BK.sort(-1).values, expected[f"{name}.top_acts"].sort(-1).values,
                                   rtol=1e-5, atol=1e-5)
        if sae.cfg.activation == "topk":  # which latents: the same sets (order within a row is not compared)
            assert torch.equal(enc.top_idx_BK.sort(-1).values, expected[f"{name}.top_idx"].sort(-1).values)


def test_a_saelab_run_folder_loads_its_sae_and_a_sparsify_checkpoint_still_loads_as_one(tmp_path):
    from saelab.sae.formats import load_sae

    sae = SAE(SAEConfig(d_in=8, n_latents=16, k=2))
    sae.save(tmp_path / "run" / "sae")
    (tmp_path / "run" / "log.jsonl").write_text("")
    got = load_sae(tmp_path / "run")
    assert torch.equal(got.W_dec, sae.W_dec) and got.cfg.source is None
    sae.save(tmp_path / "run" / "other")
    with pytest.raises(ValueError, match="pick one"):  # two hook points: a checkpoint's, refused as before
        load_sae(tmp_path / "run")

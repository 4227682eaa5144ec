"""The public suites load: dictionary_learning folders written by the library itself, Gemma Scope and Llama Scope
folders built to their published layouts, and SAE Lens release names, from a local path, hf:// and saelens:.

Each loaded SAE reconstructs within 1e-5 of the library's own forward pass: dictionary_learning's (recorded in the
fixtures by tests/data/dictionary_learning/make_fixtures.py: the library does not install beside torch 2.13) and
SAE Lens's converters for Gemma Scope and Llama Scope, run here on the same files. The Hub is a local Hub cache
read offline (HF_HUB_OFFLINE), which is also how the offline errors are checked.
"""

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from saelab.sae.formats import detect_format, load_sae

DL = Path(__file__).parent / "data" / "dictionary_learning"
KINDS = {"standard": ("relu", None), "topk": ("topk", None), "batchtopk": ("batchtopk", None),
         "jumprelu": ("jumprelu", None), "matryoshka": ("batchtopk", [16, 32, 64])}
D, N = 16, 64


def need_saelens():
    from tests.test_formats import need

    return need("sae_lens")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """put(repo_id, path_in_repo, write) places a file in an offline Hub cache; returns the cache's root."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    commit = "0123456789abcdef0123456789abcdef01234567"

    def put(repo_id: str, path: str, write) -> Path:
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        target = repo / "snapshots" / commit / path
        target.parent.mkdir(parents=True, exist_ok=True)
        write(target)
        return target

    put.root = cache
    return put


def max_error(sae, x, x_hat) -> float:
    return float((sae.reconstruct(x) - x_hat).abs().max())


# ---- dictionary_learning: files the library wrote ---------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_dictionary_learning_folders_reconstruct_like_the_library(kind, tmp_path, hub):
    ref = load_file(DL / kind / "reference.safetensors")
    folder = DL / kind / "trainer_0"
    family, widths = KINDS[kind]
    for source in (folder, folder / "ae.pt", DL / kind):  # the trainer folder, its ae.pt, trainSAE's save_dir
        assert detect_format(source) == "dictionary_learning"
        sae = load_sae(source)
        assert sae.cfg.activation == family and sae.cfg.matryoshka_widths == widths
        assert max_error(sae, ref["x"], ref["x_hat"]) < 1e-5
    assert (sae.cfg.model, sae.cfg.site, sae.cfg.layer) == ("EleutherAI/pythia-70m-deduped", "resid_post", 3)
    if family in ("topk", "batchtopk"):
        assert sae.cfg.k == 4
    for name in ("ae.pt", "config.json"):  # hf://: only that folder's files come from the Hub cache
        hub("someone/saebench", f"{kind}/trainer_0/{name}", lambda p, n=name: shutil.copy(folder / n, p))
    remote = load_sae(f"hf://someone/saebench/{kind}/trainer_0")
    assert remote.cfg.source.startswith("dictionary_learning:hf://")
    assert max_error(remote, ref["x"], ref["x_hat"]) < 1e-5


def test_dictionary_learning_save_dirs_name_their_trainers_and_odd_files_are_refused(tmp_path):
    shutil.copytree(DL / "topk" / "trainer_0", tmp_path / "run" / "trainer_0")
    shutil.copytree(DL / "batchtopk" / "trainer_0", tmp_path / "run" / "trainer_1")
    with pytest.raises(ValueError, match=r"2 dictionary_learning trainers \['trainer_0', 'trainer_1'\].*hookpoint"):
        load_sae(tmp_path / "run")
    assert load_sae(tmp_path / "run", hookpoint="trainer_1").cfg.activation == "batchtopk"
    (tmp_path / "run" / "trainer_1" / "config.json").unlink()  # TopK and BatchTopK share their tensors
    with pytest.raises(ValueError, match="cannot tell a TopK from a BatchTopK"):
        load_sae(tmp_path / "run", hookpoint="trainer_1")
    gated = tmp_path / "gated"
    gated.mkdir()
    torch.save({"encoder.weight": torch.zeros(N, D), "r_mag": torch.zeros(N)}, gated / "ae.pt")
    (gated / "config.json").write_text(json.dumps({"trainer": {"dict_class": "GatedAutoEncoder"}}))
    with pytest.raises(ValueError, match="GatedAutoEncoder is not supported"):
        load_sae(gated)
    (gated / "ae.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="tensors-only state dict"):
        load_sae(gated)


# ---- Gemma Scope: built to the published layout, compared with SAE Lens's converter ------------------------------
def gemma_params(seed: int = 0) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    W_enc = g.normal(size=(D, N)).astype(np.float32) / math.sqrt(D)
    return {"W_enc": W_enc, "W_dec": g.normal(size=(N, D)).astype(np.float32) / math.sqrt(D),
            "b_enc": g.normal(size=N).astype(np.float32) * 0.1, "b_dec": g.normal(size=D).astype(np.float32) * 0.3,
            "threshold": g.uniform(0.05, 0.4, size=N).astype(np.float32)}


def saelens_from_converter(loader, repo_id, folder, **overrides):
    """SAE Lens's own SAE from one of its converters, built as its SAE.from_pretrained builds it."""
    from sae_lens import SAE
    from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting

    cfg_dict, state, _ = loader(repo_id, folder, device="cpu", cfg_overrides={"device": "cpu", **overrides})
    cfg_dict = handle_config_defaulting(cfg_dict)
    cfg = SAE.get_sae_config_class_for_architecture(cfg_dict["architecture"]).from_dict(cfg_dict)
    sae = SAE.get_sae_class_for_architecture(cfg.architecture())(cfg)
    sae.load_state_dict(state)
    return sae


def test_gemma_scope_params_npz_reconstructs_like_saelens_from_a_path_hf_and_a_release_name(hub):
    need_saelens()
    from sae_lens.loading.pretrained_sae_loaders import gemma_2_sae_huggingface_loader

    from saelab.sae.formats.registry import resolve

    entry = resolve("saelens:gemma-scope-2b-pt-res-canonical/layer_3/width_16k/canonical")
    assert entry.repo_id == "google/gemma-scope-2b-pt-res" and entry.folder.startswith("layer_3/width_16k/average_l0_")
    params = gemma_params()
    file = hub(entry.repo_id, f"{entry.folder}/params.npz", lambda p: np.savez(p, **params))
    theirs = saelens_from_converter(gemma_2_sae_huggingface_loader, entry.repo_id, entry.folder, d_in=D, d_sae=N)
    x = torch.randn(256, D) * 2
    with torch.no_grad():
        x_hat = theirs(x)
        assert 0 < float((theirs.encode(x) > 0).float().sum(-1).mean()) < N  # a real JumpReLU cut, not all or none
    for source in (file.parent, file, f"hf://{entry.repo_id}/{entry.folder}",
                   "saelens:gemma-scope-2b-pt-res-canonical/layer_3/width_16k/canonical"):
        sae = load_sae(source)
        assert sae.cfg.activation == "jumprelu" and max_error(sae, x, x_hat) < 1e-5, source
        assert (sae.cfg.model, sae.cfg.site, sae.cfg.layer) == ("google/gemma-2-2b", "resid_post", 3)
        assert sae.cfg.k == int(entry.folder.rsplit("_", 1)[1])  # the release's L0: test-time TopK's default k'
    assert sae.cfg.source == "saelens:gemma-scope-2b-pt-res-canonical/layer_3/width_16k/canonical"


def test_gemma_scope_2_params_safetensors_reconstructs_like_saelens(hub, monkeypatch):
    need_saelens()
    import sae_lens.loading.pretrained_sae_loaders as loaders

    from saelab.sae.formats.registry import resolve

    entry = resolve("saelens:gemma-scope-2-4b-pt-res/layer_17_width_16k_l0_big")
    params = {k.replace("W_", "w_"): torch.from_numpy(v) for k, v in gemma_params(1).items()}
    file = hub(entry.repo_id, f"{entry.folder}/params.safetensors", lambda p: save_file(params, p))
    # SAE Lens asks the Hub for the tensors' shapes (an HTTP range request); answered here from the same file
    monkeypatch.setattr(loaders, "get_safetensors_tensor_shapes",
                        lambda repo, name: {k: list(v.shape) for k, v in load_file(file).items()})
    monkeypatch.setattr(loaders, "hf_hub_download", lambda repo_id, filename, **kw: (
        str(file) if filename.endswith("params.safetensors") else (_ for _ in ()).throw(
            loaders.EntryNotFoundError("no config.json"))))
    theirs = saelens_from_converter(loaders.gemma_3_sae_huggingface_loader, entry.repo_id, entry.folder)
    x = torch.randn(256, D) * 2
    with torch.no_grad():
        x_hat = theirs(x)
    for source in ("saelens:gemma-scope-2-4b-pt-res/layer_17_width_16k_l0_big", f"hf://{entry.repo_id}/{entry.folder}"):
        sae = load_sae(source)
        assert max_error(sae, x, x_hat) < 1e-5, source
    assert (sae.cfg.model, sae.cfg.site, sae.cfg.layer) == ("google/gemma-3-4b-pt", "resid_post", 17)


def test_gemma_scope_transcoders_embeddings_and_mlp_saes_say_what_they_are(hub, tmp_path):
    params = gemma_params()
    tc = hub("google/gemma-scope-2b-pt-transcoders", "layer_3/width_16k/average_l0_8/params.npz",
             lambda p: np.savez(p, **params))
    with pytest.raises(ValueError, match="transcoder.*reconstructs another site"):
        load_sae(tc.parent)
    emb = tmp_path / "gemma-scope-2b-pt-res" / "embedding" / "width_4k" / "average_l0_6"
    emb.mkdir(parents=True)
    np.savez(emb / "params.npz", **params)
    with pytest.raises(ValueError, match="embedding SAE"):
        load_sae(emb)
    mlp = tmp_path / "gemma-scope-2b-pt-mlp" / "layer_3" / "width_16k" / "average_l0_8"
    mlp.mkdir(parents=True)
    np.savez(mlp / "params.npz", **params)
    with pytest.warns(UserWarning, match="not a residual-stream SAE"):
        sae = load_sae(mlp)
    assert sae.cfg.site is None and sae.cfg.hook == "blocks.3.hook_mlp_out"
    np.savez(mlp / "params.npz", **{k: v for k, v in params.items() if k != "threshold"})
    with pytest.raises(ValueError, match=r"lacks \['threshold'\]"):
        load_sae(mlp)


# ---- Llama Scope: built to the published layout, compared with SAE Lens's from_pretrained ------------------------
def test_llama_scope_reconstructs_like_saelens_from_pretrained(hub):
    sl = need_saelens()
    from saelab.sae.formats.registry import resolve

    entry = resolve("saelens:llama_scope_lxr_8x/l3r_8x")
    assert entry.norm_scaling_factor is not None
    g = torch.Generator().manual_seed(0)
    # the average input norm that gives the registry's factor f = sqrt(d_model) / norm at d_model 16
    hp = {"d_model": D, "d_sae": N, "hook_point_in": "blocks.3.hook_resid_post",
          "hook_point_out": "blocks.3.hook_resid_post", "act_fn": "jumprelu", "jump_relu_threshold": 0.02,
          "norm_activation": "dataset-wise",
          "dataset_average_activation_norm": {"in": math.sqrt(D) / entry.norm_scaling_factor,
                                              "out": math.sqrt(D) / entry.norm_scaling_factor}}
    weights = {"encoder.weight": torch.randn(N, D, generator=g) * 0.3,
               "encoder.bias": torch.randn(N, generator=g) * 0.1,
               "decoder.weight": torch.randn(D, N, generator=g) * 0.3, "decoder.bias": torch.randn(D, generator=g)}
    hub(entry.repo_id, f"{entry.folder}/hyperparams.json", lambda p: p.write_text(json.dumps(hp)))
    hub(entry.repo_id, f"{entry.folder}/checkpoints/final.safetensors",
        lambda p: save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, p))
    theirs = sl.SAE.from_pretrained("llama_scope_lxr_8x", "l3r_8x", device="cpu")
    x = torch.randn(256, D, generator=g) * 0.1  # raw activations, norm ~0.4: about the average the factor implies
    with torch.no_grad():
        x_hat = theirs(x)
        assert 0 < float((theirs.encode(x) > 0).float().sum(-1).mean()) < N
    sae = load_sae("saelens:llama_scope_lxr_8x/l3r_8x")
    assert max_error(sae, x, x_hat) < 1e-5
    assert (sae.cfg.model, sae.cfg.site, sae.cfg.layer) == ("meta-llama/Llama-3.1-8B", "resid_post", 3)
    local = next(hub.root.rglob("hyperparams.json")).parent  # the folder itself: f from hyperparams.json
    assert detect_format(local) == "llama_scope" and max_error(load_sae(local), x, x_hat) < 1e-5
    assert max_error(load_sae(f"hf://{entry.repo_id}/{entry.folder}"), x, x_hat) < 1e-5


# ---- names and errors ---------------------------------------------------------------------------------------------
def test_saelens_release_of_saelens_folders_loads_like_saelens(hub):
    sl = need_saelens()
    from saelab.sae.config import SAEConfig
    from saelab.sae.formats import to_saelens
    from saelab.sae.formats.registry import resolve
    from saelab.sae.model import SAE

    entry = resolve("saelens:gpt2-small-res-jb/blocks.4.hook_resid_pre")
    assert entry.converter == "sae_lens"
    ours = SAE(SAEConfig(d_in=D, n_latents=N, k=4, site="resid_post", layer=3, model="gpt2"), seed=3)
    with torch.no_grad():
        ours.b_pre.normal_()
    for name in ("cfg.json", "sae_weights.safetensors"):
        hub(entry.repo_id, f"{entry.folder}/{name}", lambda p, n=name: to_saelens(ours, p.parent))
    theirs, _, _ = sl.SAE.from_pretrained_with_cfg_and_sparsity("gpt2-small-res-jb", "blocks.4.hook_resid_pre")
    x = torch.randn(64, D)
    with torch.no_grad():
        x_hat = theirs(x)
    assert max_error(load_sae("saelens:gpt2-small-res-jb/blocks.4.hook_resid_pre"), x, x_hat) < 1e-5


def test_names_that_cannot_load_say_why_and_what_to_do(hub, monkeypatch):
    with pytest.raises(ValueError, match=r"google/gemma-scope-2b-pt-res.*HF_HUB_OFFLINE.*hf download "
                                         r"google/gemma-scope-2b-pt-res --include 'layer_9/width_16k/average_l0_5/\*'"):
        load_sae("hf://google/gemma-scope-2b-pt-res/layer_9/width_16k/average_l0_5")
    hub("google/gemma-scope-2b-pt-res", "layer_1/width_16k/average_l0_5/other.txt", lambda p: p.write_text("x"))
    with pytest.raises(ValueError, match=r"HF_HUB_OFFLINE=1 and the local Hub cache holds none of the SAE files of "
                                         r"google/gemma-scope-2b-pt-res/layer_2.*params.npz"):
        load_sae("hf://google/gemma-scope-2b-pt-res/layer_2")
    if "sae_lens" in sys.modules or _importable("sae_lens"):
        with pytest.raises(ValueError, match="no SAE Lens release 'gemma-scope-2b-pt-rez'.*gemma-scope-2b-pt-res"):
            load_sae("saelens:gemma-scope-2b-pt-rez/layer_3/width_16k/canonical")
        with pytest.raises(ValueError, match="has no SAE 'layer_3/width_16k/canon'.*layer_3/width_16k/canonical"):
            load_sae("saelens:gemma-scope-2b-pt-res-canonical/layer_3/width_16k/canon")
        with pytest.raises(ValueError, match="'gemma_2_transcoder' converter, whose files saelab does not read"):
            load_sae("saelens:gemma-scope-2b-pt-transcoders/layer_0/width_16k/average_l0_76")
    monkeypatch.setitem(sys.modules, "sae_lens.loading.pretrained_saes_directory", None)  # as if not installed
    with pytest.raises(ValueError, match=r"sae_lens is not installed: pip install 'saelab\[peers\]'"):
        load_sae("saelens:gemma-scope-2b-pt-res-canonical/layer_3/width_16k/canonical")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None

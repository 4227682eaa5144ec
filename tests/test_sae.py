"""The TopK SAE core: sparse kernels vs dense autograd, losses, inits, activations, persistence."""

import json

import pytest
import torch
import torch.nn.functional as F

from saelab.sae.config import SAEConfig, default_k_aux
from saelab.sae.formats import from_openai, to_saelens
from saelab.sae.kernels import (
    dense_decode,
    dense_encode,
    sampled_dot,
    scatter_outer,
    selected_encode,
    sparse_decode,
    split_decode,
    transposed_pattern,
)
from saelab.sae.model import SAE, geometric_median

ATOL = 1e-5  # fp32, sums of <= 64 terms of size ~1


def _rand_problem(B=64, D=24, N=96, K=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g)
    W = torch.randn(N, D, generator=g)
    idx = torch.randn(B, N, generator=g).topk(K).indices
    vals = torch.rand(B, K, generator=g)
    return x, W, idx, vals


def test_scatter_outer_and_sampled_dot_match_dense():
    x, W, idx, vals = _rand_problem()
    N = W.shape[0]
    dense = torch.zeros(x.shape[0], N).scatter(1, idx, vals)
    torch.testing.assert_close(scatter_outer(idx, vals, x, N), dense.t() @ x, atol=ATOL, rtol=0)
    torch.testing.assert_close(sampled_dot(x, W, idx), (x @ W.t()).gather(1, idx), atol=ATOL, rtol=0)
    by_latent = sampled_dot(x, W, idx, transposed_pattern(idx, N))  # the dots taken latent by latent
    torch.testing.assert_close(by_latent, (x @ W.t()).gather(1, idx), atol=ATOL, rtol=0)


def test_split_decode_matches_two_dense_decodes():
    """Multi-TopK's decode: (first k entries, the rest) of one selection, gradients of both into one product."""
    _, W, idx, vals = _rand_problem(K=12)
    g1, g2 = torch.randn(2, idx.shape[0], W.shape[1]).unbind()
    outs = []
    for sparse in (True, False):
        Wp, vp = W.clone().requires_grad_(), vals.clone().requires_grad_()
        if sparse:
            first, rest = split_decode(idx, vp, Wp, 4, transposed_pattern(idx, W.shape[0]))
        else:
            first, rest = dense_decode(idx[:, :4], vp[:, :4], Wp), dense_decode(idx[:, 4:], vp[:, 4:], Wp)
        ((first * g1).sum() + (rest * g2).sum()).backward()
        outs.append((first.detach(), rest.detach(), vp.grad, Wp.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_sparse_decode_values_and_grads_match_dense_reference():
    _, W, idx, vals = _rand_problem()
    g = torch.randn(idx.shape[0], W.shape[1])
    outs = []
    for fn in (sparse_decode, dense_decode):
        Wp, vp = W.clone().requires_grad_(), vals.clone().requires_grad_()
        y = fn(idx, vp, Wp)
        y.backward(g)
        outs.append((y.detach(), vp.grad, Wp.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_selected_encode_grads_match_dense_reference():
    x, W, idx, _ = _rand_problem()
    b_enc, b_pre = torch.randn(W.shape[0]), torch.randn(x.shape[1])
    g = torch.randn(idx.shape)
    outs = []
    for sparse in (True, False):
        xs, bp, Wp, be = (t.clone().requires_grad_() for t in (x, b_pre, W, b_enc))
        if sparse:
            pre = F.linear(x - b_pre, W, b_enc).gather(1, idx)
            y = selected_encode(xs, bp, Wp, be, idx, pre)
        else:
            y = dense_encode(xs, bp, Wp, be, idx)
        y.backward(g)
        outs.append((y.detach(), xs.grad, bp.grad, Wp.grad, be.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def test_nmse_is_mse_over_mean_predictor():
    sae = SAE(SAEConfig(d_in=8, n_latents=16, k=2))
    x = torch.randn(256, 8) * 2 + 5
    out = sae(x)
    mse = (out.recon_BD - x).pow(2).sum(-1).mean()
    baseline = (x - x.mean(0)).pow(2).sum(-1).mean()
    torch.testing.assert_close(out.losses["nmse"], mse / baseline)
    # Predicting the mean exactly scores 1.0.
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_pre.copy_(x.mean(0))
    assert abs(float(sae(x).losses["nmse"]) - 1.0) < 1e-5


def test_aux_loss_does_not_add_decoder_bias_twice():
    """With a huge b_pre, a residual exactly spanned by one dead latent must give aux loss ~0."""
    d, n = 8, 16
    sae = SAE(SAEConfig(d_in=d, n_latents=n, k=1, k_aux=1), seed=0)
    with torch.no_grad():
        sae.W_dec.copy_(torch.eye(n, d))
        sae.W_enc.copy_(torch.eye(n, d))
        sae.b_pre.fill_(100.0)
        sae.b_enc.zero_()
    # x - b_pre has a big component on axis 0 (alive) and a small one on axis 5 (dead).
    x = torch.full((4, d), 100.0)
    x[:, 0] += 3.0
    x[:, 5] += torch.tensor([0.5, 1.0, 1.5, 2.0])
    dead = torch.zeros(n, dtype=torch.bool)
    dead[5] = True
    out = sae(x, dead_mask_N=dead)
    assert float(out.losses["aux"]) < 1e-6
    # And the aux term really is computed (not skipped): mark a useless latent dead instead.
    dead2 = torch.zeros(n, dtype=torch.bool)
    dead2[12] = True
    assert float(sae(x, dead_mask_N=dead2).losses["aux"]) > 0.5


def test_multi_topk_loss_is_l_k_plus_l_4k_over_8():
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    sae = SAE(SAEConfig(d_in=16, n_latents=64, k=2, multi_topk=True, k_aux=0))
    out = sae(x)
    expected = out.losses["nmse"] + out.losses["multi_topk"] / 8
    torch.testing.assert_close(out.losses["total"], expected)
    rec4 = sae.reconstruct(x, k=8)
    nmse4 = (rec4 - x).pow(2).sum(-1).mean() / (x - x.mean(0)).pow(2).sum(-1).mean()
    torch.testing.assert_close(out.losses["multi_topk"], nmse4, atol=1e-5, rtol=1e-5)


def test_init_transpose_unit_norm_and_geometric_median():
    sae = SAE(SAEConfig(d_in=16, n_latents=40, k=3))
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(40))
    torch.testing.assert_close(sae.W_enc, sae.W_dec)
    # Geometric median of points on a line with an outlier is the middle point, unlike the mean.
    pts = torch.tensor([[0.0, 0], [1, 0], [2, 0], [3, 0], [1000, 0]])
    gm = geometric_median(pts)
    assert abs(float(gm[0]) - 2.0) < 1e-3 and pts.mean(0)[0] > 200
    x = torch.randn(500, 16) + 7
    sae.init_from_data(x)
    assert (sae.b_pre - 7).abs().max() < 0.5


def test_decoder_projection_and_renorm():
    sae = SAE(SAEConfig(d_in=8, n_latents=16, k=2))
    sae.W_dec.grad = torch.randn(16, 8)
    sae.project_decoder_grad_()
    assert (sae.W_dec.grad * sae.W_dec).sum(-1).abs().max() < 1e-5
    with torch.no_grad():
        sae.W_dec.mul_(3)
    sae.normalize_decoder_()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(16))


def test_default_k_aux_is_power_of_two_near_half_width():
    assert default_k_aux(768) == 512 and default_k_aux(576) == 256 and default_k_aux(64) == 32


@pytest.mark.parametrize("norm", ["none", "dataset_unit_norm", "layernorm", "per_token_unit_norm"])
def test_normalisation_roundtrip_and_identical_in_train_and_encode(norm):
    torch.manual_seed(0)
    x = torch.randn(64, 16) * 4 + 2
    sae = SAE(SAEConfig(d_in=16, n_latents=64, k=64, normalize=norm, k_aux=0))
    sae.init_from_data(x)
    xn, undo = sae.preprocess(x)
    torch.testing.assert_close(undo(xn), x, atol=1e-4, rtol=1e-4)
    if norm == "dataset_unit_norm":
        assert abs(float(xn.pow(2).sum(-1).mean()) - 1) < 1e-4
    if norm == "per_token_unit_norm":  # paper 2.1: each token centred over d_model and at unit norm
        torch.testing.assert_close(xn.norm(dim=-1), torch.ones(64))
        torch.testing.assert_close(xn.mean(-1), torch.zeros(64), atol=1e-6, rtol=0)
        xn2, _ = sae.preprocess(x * 7 + 3)  # invariant to a token's scale and offset
        torch.testing.assert_close(xn2, xn, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(sae(x).recon_BD, sae.reconstruct(x), atol=1e-4, rtol=1e-4)


def test_test_time_activations():
    torch.manual_seed(0)
    x = torch.randn(32, 16)
    sae = SAE(SAEConfig(d_in=16, n_latents=64, k=4))
    e8 = sae.encode(x, k=8, keep_pre=True)
    assert e8.top_idx_BK.shape == (32, 8)
    pre = e8.pre_acts_BN
    thr = 0.5
    j = sae.encode(x, activation="jumprelu", threshold=thr)
    assert torch.equal((j.top_acts_BK > 0).sum(-1), (pre > thr).sum(-1))
    bt = sae.encode(x, activation="batchtopk", k=4)
    assert int((bt.top_acts_BK > 0).sum()) == 4 * 32
    r = sae.encode(x, activation="relu")
    torch.testing.assert_close(sae.decode(r.top_acts_BK, r.top_idx_BK), pre.relu() @ sae.W_dec + sae.b_pre)


def test_bad_inputs_have_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="k must be between"):
        SAEConfig(d_in=4, n_latents=8, k=0)
    with pytest.raises(ValueError, match="k must be between"):
        SAEConfig(d_in=4, n_latents=8, k=9)
    sae = SAE(SAEConfig(d_in=4, n_latents=8, k=2))
    with pytest.raises(ValueError, match="d_in=4"):
        sae(torch.randn(3, 5))
    x = torch.randn(10, 4)
    x[2, 1] = float("nan")
    x[7, 0] = float("inf")
    with pytest.raises(ValueError, match="2 of 10 rows"):
        sae.encode(x)
    with pytest.raises(FileNotFoundError, match="missing cfg.json"):
        SAE.load(tmp_path)
    sae.save(tmp_path)
    meta = json.loads((tmp_path / "cfg.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "cfg.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="newer than this saelab"):
        SAE.load(tmp_path)
    other = tmp_path / "other"
    SAE(SAEConfig(d_in=4, n_latents=16, k=2)).save(other)
    meta = json.loads((other / "cfg.json").read_text())
    meta["config"]["n_latents"] = 8
    (other / "cfg.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match its cfg.json"):
        SAE.load(other)


def test_save_load_roundtrip(tmp_path):
    sae = SAE(SAEConfig(d_in=8, n_latents=32, k=3, model="m", layer=2, normalize="dataset_unit_norm"), seed=3)
    sae.tokens_since_fired[5] = 77
    sae.tokens_seen.fill_(123)
    sae.input_scale.fill_(0.25)
    sae.save(tmp_path)
    again = SAE.load(tmp_path)
    assert again.cfg == sae.cfg
    for (k, a), (_, b) in zip(sae.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_from_openai_matches_paper_formula(tmp_path):
    """A synthetic state dict in the released layout; forward = the paper's LN + TopK formula."""
    torch.manual_seed(0)
    n, d, k = 64, 16, 4
    state = {"encoder.weight": torch.randn(n, d), "decoder.weight": torch.randn(d, n),
             "pre_bias": torch.randn(d), "latent_bias": torch.randn(n) * 0.1,
             "stats_last_nonzero": torch.zeros(n, dtype=torch.long),
             "activation": "TopK", "activation_state_dict": {"k": k, "postact_fn": "ReLU"}}
    path = tmp_path / "ae.pt"
    torch.save(state, path)
    sae = from_openai(path)
    assert sae.cfg.k == k and sae.cfg.normalize == "layernorm"
    x = torch.randn(10, d) * 3
    mu = x.mean(-1, keepdim=True)
    std = (x - mu).std(-1, keepdim=True)
    xn = (x - mu) / (std + 1e-5)
    pre = (xn - state["pre_bias"]) @ state["encoder.weight"].t() + state["latent_bias"]
    top = pre.topk(k)
    z = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    expected = (z @ state["decoder.weight"].t() + state["pre_bias"]) * std + mu  # their decode undoes with std
    torch.testing.assert_close(sae.reconstruct(x), expected, atol=1e-4, rtol=1e-4)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not an openai/sparse_autoencoder state dict"):
        from_openai(tmp_path / "bad.pt")


def test_to_saelens_folds_scale_and_matches(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    x = torch.randn(50, 8) * 10
    sae = SAE(SAEConfig(d_in=8, n_latents=32, k=3, normalize="dataset_unit_norm"))
    sae.init_from_data(x)
    to_saelens(sae, tmp_path)
    w = load_file(tmp_path / "sae_weights.safetensors")
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["d_sae"] == 32 and cfg["k"] == 3
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    top = pre.topk(3)
    z = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    torch.testing.assert_close(z @ w["W_dec"] + w["b_dec"], sae.reconstruct(x), atol=1e-4, rtol=1e-4)



def test_to_saelens_names_the_site_hook_and_folds_the_per_token_norm(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    d, k = 16, 3
    x = torch.randn(40, d) * 5 + 1
    sae = SAE(SAEConfig(d_in=d, n_latents=48, k=k, normalize="per_token_unit_norm", site="mlp_out", layer=3))
    sae.init_from_data(x)
    to_saelens(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["hook_name"] == "blocks.3.hook_mlp_out" and cfg["normalize_activations"] == "layer_norm"
    w = load_file(tmp_path / "sae_weights.safetensors")
    mu = x.mean(-1, keepdim=True)  # SAE Lens's layer_norm: (x - mu) / (std + 1e-5), undone after decoding
    std = (x - mu).std(-1, keepdim=True)
    x_ln = (x - mu) / (std + 1e-5)
    pre = (x_ln - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    top = pre.topk(k)
    z = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    recon = (z @ w["W_dec"] + w["b_dec"]) * std + mu
    torch.testing.assert_close(recon, sae.reconstruct(x), atol=1e-3, rtol=1e-3)


def test_load_names_damaged_files_and_other_libraries_folders(tmp_path):
    sae = SAE(SAEConfig(d_in=8, n_latents=16, k=2))
    good = sae.save(tmp_path / "good")
    bad_cfg = sae.save(tmp_path / "bad_cfg")
    (bad_cfg / "cfg.json").write_text('{"format_version": 1, "conf')
    with pytest.raises(ValueError, match=r"bad_cfg/cfg.json is damaged.*re-save"):
        SAE.load(bad_cfg)
    cut = sae.save(tmp_path / "truncated")
    data = (cut / "sae.safetensors").read_bytes()
    (cut / "sae.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated/sae.safetensors is damaged or truncated"):
        SAE.load(cut)
    sparsify = tmp_path / "sparsify"  # EleutherAI sparsify writes cfg.json + sae.safetensors too
    sparsify.mkdir()
    (sparsify / "cfg.json").write_text(json.dumps({"expansion_factor": 32, "normalize_decoder": True,
                                                   "num_latents": 0, "k": 32, "multi_topk": False, "d_in": 8}))
    (sparsify / "sae.safetensors").write_bytes((good / "sae.safetensors").read_bytes())
    with pytest.raises(ValueError, match="EleutherAI sparsify.*load_sae") as e:
        SAE.load(sparsify)
    assert "newer" not in str(e.value)
    saelens = tmp_path / "saelens"
    to_saelens(sae, saelens)
    with pytest.raises(ValueError, match="SAE Lens"):
        SAE.load(saelens)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        SAE.load(tmp_path / "nothing-here")
    assert SAE.load(good).cfg.n_latents == 16


@pytest.mark.parametrize("field,value,expected", [
    ("k", "2", r"'k' is '2' \(str\), expected int"), ("k", True, r"'k' is True \(bool\), expected int"),
    ("multi_topk", "no", "expected bool"), ("aux_coef", None, "expected float"),
    ("layer", 1.5, "expected int or null"), ("normalize", "bogus", "normalize must be one of")])
def test_a_config_field_of_the_wrong_type_names_the_field_folder_and_fix(tmp_path, field, value, expected):
    folder = SAE(SAEConfig(d_in=8, n_latents=16, k=2)).save(tmp_path / "edited")
    meta = json.loads((folder / "cfg.json").read_text())
    meta["config"][field] = value
    (folder / "cfg.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=f"edited/cfg.json: .*{expected}.*(fix that value in cfg.json|re-save)"):
        SAE.load(folder)
    meta["config"][field] = {"k": 2, "multi_topk": False, "aux_coef": 1, "layer": None, "normalize": "none"}[field]
    (folder / "cfg.json").write_text(json.dumps(meta))  # an int where a float is asked is fine
    assert SAE.load(folder).cfg.k == 2


def test_format_1_folder_loads_with_its_scale_moved_to_buffers(tmp_path):
    """saelab <= 0.1 kept input_scale and tokens_seen in cfg.json and called the dataset scale 'unit_msn'."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    x = torch.randn(40, 8) * 3
    sae = SAE(SAEConfig(d_in=8, n_latents=32, k=3, normalize="dataset_unit_norm"))
    sae.init_from_data(x)
    state = {k: v for k, v in sae.state_dict().items() if k not in ("input_scale", "tokens_seen")}
    save_file(state, tmp_path / "sae.safetensors")
    config = {**{k: v for k, v in json.loads(json.dumps(sae.cfg.__dict__)).items()}, "normalize": "unit_msn",
              "input_scale": float(sae.input_scale), "tokens_seen": 4096}
    (tmp_path / "cfg.json").write_text(json.dumps({"format_version": 1, "config": config}))
    old = SAE.load(tmp_path)
    assert old.cfg.normalize == "dataset_unit_norm" and int(old.tokens_seen) == 4096
    assert float(old.input_scale) == pytest.approx(float(sae.input_scale)) and float(old.input_scale) != 1.0
    torch.testing.assert_close(old.reconstruct(x), sae.reconstruct(x))


def test_training_leaves_the_config_as_asked(tmp_path, caches):
    """The L1 warmup, the data's scale and the token count live in the trainer and the SAE's buffers."""
    from dataclasses import asdict

    from saelab.training.trainer import TrainConfig, Trainer

    cfg = TrainConfig(n_latents=64, k=4, activation="relu", l1_coef=0.05, l1_warmup_frac=0.5,
                      normalize="dataset_unit_norm", batch_size=512, epochs=0.2, progress=False, k_aux=0)
    tr = Trainer(cfg, caches[0], tmp_path)
    asked = asdict(tr.sae.cfg)
    assert tr.penalty_ramp(0) < 1 and tr.penalty_ramp(tr.total_steps - 1) == 1
    tr.train()
    assert asdict(tr.sae.cfg) == asked and asked["l1_coef"] == 0.05
    assert int(tr.sae.tokens_seen) == tr.total_steps * 512 and float(tr.sae.input_scale) != 1.0


@pytest.mark.parametrize("k,sorted_", [(4, False), (32, True), (128, False)])
def test_topk_rows_matches_torch_topk(k, sorted_):
    from saelab.sae.kernels import topk_rows

    g = torch.Generator().manual_seed(k)
    pre = torch.randn(64, 4096, generator=g)
    pre[3] = -pre[3].abs()  # an all-negative row
    pre[5, 17::512] += 50.0  # a row whose 8 largest entries share one column group (columns 17 + 512 i)
    pre[6, 17::64] += 50.0  # 64 largest entries in 8 groups whose maxima share one group at the recursion's 2nd level
    vals, idx = topk_rows(pre, k, sorted=sorted_)
    ref = pre.topk(k, dim=-1, sorted=True)
    torch.testing.assert_close(vals.sort(-1, descending=True).values, ref.values, atol=0, rtol=0)
    assert torch.equal(idx.sort(-1).values, ref.indices.sort(-1).values)
    assert torch.equal(pre.gather(1, idx), vals)
    if sorted_:
        assert torch.equal(vals, ref.values)

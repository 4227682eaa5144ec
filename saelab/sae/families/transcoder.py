"""TopK transcoders (Dunefsky, Chlenski & Nanda 2024, arXiv 2406.11944), optionally with a learned skip connection
(skip transcoders: Paulo, Shabalin & Belrose 2025, arXiv 2501.18823): read one site, reconstruct another, here an
MLP's input and its output, so the latents explain what the MLP computes rather than what it wrote.

    rows  = [x | y]                                 x: the MLP's input, y: its output, from one forward pass
                                                    (`saelab harvest --site mlp_in+mlp_out`: paired sites)
    z     = TopK_k(W_enc x_n + b_enc)               (no input bias: b_pre is the output's)
    y_hat = W_dec^T z + b_pre [+ W_skip x_n]        (W_skip d x d, zero at the start: Paulo et al.'s skip)
    L     = nmse(y_hat, y) + aux_coef * AuxK        (AuxK's dead latents model y - y_hat)

Everything else is TopK's: the sparse kernels, AuxK, the unit-norm decoder. The input's and the output's spaces are
normalised apart: 'none', or 'dataset_unit_norm' (one scale for x, `input_scale`, one for y, `output_scale`); a
per-token normalisation of y could not be undone at inference, where y is not known. d_out = d_in (an MLP's input
and output are both d_model wide); SAE Lens transcoders of another output width are refused.

Inference: TopK(k) by default (`transcoder_encode`). SAE Lens 6.54 has no TopK transcoder class (its `Transcoder`
and `SkipTranscoder` are ReLU, and its JumpReLU ones take a threshold per latent): `to_saelens` writes the JumpReLU
form, at one threshold estimated after training as BatchTopK's is (the mean over 8 training batches of the B*k-th
largest pre-activation, so that the average L0 is k), and records `topk_transcoder` in its metadata, so saelab reads
it back as the TopK transcoder it was. SAE Lens's own transcoders load with their encoding ('relu', 'jumprelu').
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from saelab.sae.families.base import SparseFamily, SparseStep
from saelab.sae.input_norm import check_input, dataset_scale_from, normalize

ENCODINGS = ("topk", "jumprelu", "relu")
SAELENS = {"transcoder": "relu", "skip_transcoder": "relu", "jumprelu_transcoder": "jumprelu",
           "jumprelu_skip_transcoder": "jumprelu"}
"""SAE Lens's transcoder architectures and their encoding."""


@dataclass
class TranscoderOptions:
    transcoder_skip: bool = False
    """Transcoders: a learned skip connection W_skip x (d x d, zero at the start; Paulo et al. 2025)."""
    transcoder_target: str | None = None
    """Transcoders: the site reconstructed (the input is `site`): set from a paired harvest's sites ('mlp_in+mlp_out':
    reads mlp_in, reconstructs mlp_out)."""
    transcoder_encode: str = "topk"
    """Transcoders: how it encodes at inference: 'topk' (as trained), 'jumprelu' (at `threshold`) or 'relu' (SAE
    Lens's transcoders)."""


class Transcoder(SparseFamily):
    name, display, options, selection = "transcoder", "TopK transcoder", TranscoderOptions, "topk"
    studied, centres_input, saelens_tensors = False, False, ("W_skip",)  # studied: its data are paired sites
    saelens_reads, saelens_training = {arch: "transcoder" for arch in SAELENS}, "topk_transcoder"

    def check(self, cfg, selection) -> None:
        if cfg.activation != self.name:
            return
        if cfg.normalize not in ("none", "dataset_unit_norm"):
            raise ValueError(f"a transcoder's normalize must be 'none' or 'dataset_unit_norm' (a per-token "
                             f"normalisation of its target cannot be undone at inference), got {cfg.normalize!r}")
        if cfg.transcoder_encode not in ENCODINGS:
            raise ValueError(f"transcoder_encode must be one of {ENCODINGS}, got {cfg.transcoder_encode!r}")

    def config_for_data(self, cfg, width: int, where: dict):
        site = where.get("site")
        if width % 2 or (site is not None and site.count("+") != 1):
            raise ValueError(f"a transcoder trains on rows of two sites, its input and its target, side by side: "
                             f"harvest them with --harvest.site mlp_in+mlp_out (got site {site!r}, rows {width} wide)")
        reads, writes = site.split("+") if site else (None, None)
        return replace(cfg, d_in=width // 2, **{**where, "site": reads}, transcoder_target=writes)

    def writes(self, cfg) -> str | None:
        return cfg.transcoder_target

    def data_width(self, cfg) -> int:
        return 2 * cfg.d_in

    def add_parameters(self, sae, dtype, device) -> None:
        n, d = sae.cfg.n_latents, sae.cfg.d_in
        if sae.cfg.transcoder_skip:
            sae.W_skip = torch.nn.Parameter(torch.zeros(d, d, dtype=dtype, device=device))
        sae.register_buffer("threshold", torch.zeros(n, dtype=dtype, device=device))  # the JumpReLU form's
        sae.register_buffer("output_scale", torch.ones((), dtype=torch.float32, device=device))
        sae.register_buffer("zero_input_bias", torch.zeros(d, dtype=dtype, device=device), persistent=False)

    # ---- two sites: what is read, what is reconstructed ------------------------------------------------------
    def split(self, sae, rows):
        d = sae.cfg.d_in
        if rows.shape[-1] != 2 * d:
            raise ValueError(f"a transcoder's data are rows of its input and its target side by side ([x | y], "
                             f"{2 * d} wide), got {rows.shape[-1]}: encode() and reconstruct() take inputs alone")
        return rows[..., :d], rows[..., d:]

    def encoder_bias(self, sae):
        return sae.zero_input_bias

    def fit_scales(self, sae, inputs, targets) -> None:
        if sae.cfg.normalize == "dataset_unit_norm":
            sae.input_scale.fill_(dataset_scale_from(inputs))
            sae.output_scale.fill_(dataset_scale_from(targets))

    def target_space(self, sae, inputs, targets):
        return normalize(targets, sae.cfg.normalize, sae.output_scale.to(targets.device, targets.dtype))

    def output_undo(self, sae, x_like, like):
        return normalize(like.detach(), sae.cfg.normalize, sae.output_scale.to(like.device, like.dtype))[1]

    def decode_extra(self, sae, recon_n, x_like):
        if not sae.cfg.transcoder_skip:
            return recon_n
        if x_like is None:
            raise ValueError("a skip transcoder's output needs its input: pass x_like= (decode) or use reconstruct")
        return recon_n + F.linear(sae.preprocess(x_like.to(recon_n.device, recon_n.dtype))[0], sae.W_skip)

    # ---- training ----------------------------------------------------------------------------------------
    def forward(self, sae, rows, ctx):
        cfg = sae.cfg
        if cfg.transcoder_encode != "topk":
            raise ValueError(f"saelab trains TopK transcoders; this one encodes with {cfg.transcoder_encode!r} (made "
                             "elsewhere): set transcoder_encode='topk' to train it further as TopK")
        x, y = self.split(sae, rows.to(sae.W_enc.dtype))
        check_input(x, cfg.d_in)
        x_n = sae.preprocess(x)[0].detach()
        y_n, undo = self.target_space(sae, x, y)
        step = SparseStep(sae, x_n, y_n.detach(), F.linear(x_n, sae.W_skip) if cfg.transcoder_skip else None)
        acts, idx, pre_BN = self.codes(sae, step, ctx)
        first = step.decoded(idx, acts)
        losses, total, _ = step.reconstruction(first, ctx)
        return step.finish(first, acts, idx, losses, total, pre_BN, ctx, undo)

    def codes(self, sae, step: SparseStep, ctx):
        with torch.no_grad():
            vals, idx, pre_BN = sae.select(step.centred, sae.cfg.k, sorted_=False)
        return step.encode(idx, vals), idx, pre_BN

    @torch.no_grad()
    def finalize(self, sae, batches, ranks=None) -> None:
        """The JumpReLU form's threshold (SAE Lens's export): the mean over `batches` of each one's B*k-th largest
        pre-activation (the global batch's under `ranks`)."""
        if sae.cfg.transcoder_encode != "topk":
            return
        cuts = []
        for rows in batches:
            x, _ = self.split(sae, rows.to(sae.W_enc.device, sae.W_enc.dtype))
            pre = sae.pre_acts(sae.preprocess(x)[0]).relu().flatten()
            pre = ranks.cat(pre) if ranks is not None else pre
            cuts.append(pre.topk(min(len(pre), sae.cfg.k * len(pre) // sae.cfg.n_latents)).values.min())
        if cuts:
            sae.threshold.fill_(float(torch.stack(cuts).mean()))

    def inference(self, sae):
        return {"topk": ("topk", None), "jumprelu": ("jumprelu", sae.threshold), "relu": ("relu", None)}[
            sae.cfg.transcoder_encode]

    # ---- SAE Lens ----------------------------------------------------------------------------------------
    def export_architecture(self, cfg) -> str:
        encode = {"topk": "jumprelu"}.get(cfg.transcoder_encode, cfg.transcoder_encode)
        return f"{'' if encode == 'relu' else encode + '_'}{'skip_' if cfg.transcoder_skip else ''}transcoder"

    def training_architecture(self, cfg) -> str:
        return self.saelens_training if cfg.transcoder_encode == "topk" else self.export_architecture(cfg)

    def saelens_details(self, cfg) -> dict:
        return {"k": cfg.k, "transcoder_skip": cfg.transcoder_skip} if cfg.transcoder_encode == "topk" else {}

    @torch.no_grad()
    def saelens_weights(self, sae) -> dict:
        """SAE Lens's transcoder tensors on raw activations: the input scale folded into W_enc and W_skip, the
        output's into W_dec, b_dec and W_skip; a JumpReLU form's threshold (the pre-activations are unchanged)."""
        s_in = float(sae.input_scale) if sae.cfg.normalize == "dataset_unit_norm" else 1.0
        s_out = float(sae.output_scale) if sae.cfg.normalize == "dataset_unit_norm" else 1.0
        out = {"W_enc": (sae.W_enc * s_in).t().contiguous().cpu(), "b_enc": sae.b_enc.detach().cpu().clone(),
               "W_dec": (sae.W_dec / s_out).contiguous().cpu(), "b_dec": (sae.b_pre / s_out).detach().cpu()}
        if sae.cfg.transcoder_skip:
            out["W_skip"] = (sae.W_skip * (s_in / s_out)).detach().contiguous().cpu()
        if self.export_architecture(sae.cfg).startswith("jumprelu"):
            out["threshold"] = sae.threshold.detach().cpu().clone()
        return out

    def saelens_options(self, fields: dict, site_of=None) -> dict:
        arch = fields.get("architecture", "transcoder")
        trained = (fields.get("metadata") or {}).get("training_architecture") == self.saelens_training
        out = site_of(fields.get("hook_name_out") or (fields.get("metadata") or {}).get("hook_name_out")) \
            if site_of else None
        return {"transcoder_skip": "skip" in arch, "transcoder_target": out[0] if out else None,
                "transcoder_encode": "topk" if trained and arch.startswith("jumprelu") else SAELENS.get(arch, "relu")}

    def examples(self):
        return {"transcoder": {"activation": "transcoder", "normalize": "none"},
                "skip_transcoder": {"activation": "transcoder", "normalize": "none", "transcoder_skip": True}}


FAMILY = Transcoder()

"""Latent statistics over a corpus, computed once and stored next to the SAE, so the explorer opens in seconds.

What is stored (`<sae folder>/latent_stats.safetensors` + `latent_stats.json`):
- the token contexts and the SAE's sparse codes on them (acts/idx per position), from which every
  per-token highlight is read back;
- per latent: activation density (fraction of tokens where it fires), mean and max activation
  when firing, a histogram of its activations on log-spaced bins, its top-N activating positions
  and a few positions sampled from each activation-quantile interval.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from saelab.acts.corpus import ContextConfig, build_contexts, load_corpus
from saelab.evals.splice import Codes, SpliceSite, encode_contexts
from saelab.files import atomic_write, atomic_write_text
from saelab.lm.models import LM
from saelab.sae.model import SAE

STATS_VERSION = 1


@dataclass
class StatsConfig:
    """Which text the statistics are computed on and how many examples are kept."""

    corpus: str = "wiki-en"
    """Corpus (held-out split: text the SAE was not trained on)."""
    split: str = "heldout"
    """Its split: heldout (validation and test together), validation, test, train or all."""
    n_contexts: int = 512
    """Contexts of 64 tokens (512: ~32k tokens, about a minute for SmolLM2 on a 2-core CPU)."""
    top_n: int = 20
    """Top-activating positions kept per latent."""
    n_intervals: int = 5
    """Activation-quantile intervals sampled per latent."""
    per_interval: int = 4
    """Positions sampled from each interval."""
    hist_bins: int = 40
    """Log-spaced bins of the per-latent activation histograms."""
    seed: int = 0
    """Seed of the examples sampled from each activation interval."""


@dataclass
class LatentStats:
    """The stored statistics (see the module docstring); `codes` gives per-token activations."""

    codes: Codes
    density_N: torch.Tensor
    mean_act_N: torch.Tensor
    max_act_N: torch.Tensor
    hist_NB: torch.Tensor
    bin_edges_B: torch.Tensor
    top_pos_NM: torch.Tensor
    """Flat positions (context * T + t) of each latent's top activations, -1 padded."""
    interval_pos_NIP: torch.Tensor
    """Flat positions sampled per quantile interval, -1 padded."""
    interval_edges_NI: torch.Tensor
    """Upper activation edge of each interval."""
    config: dict

    @property
    def n_latents(self) -> int:
        return len(self.density_N)

    @property
    def ctx_len(self) -> int:
        return self.codes.tokens_NT.shape[1]

    def latent_values(self, latent: int) -> torch.Tensor:
        """[N, T] activation of `latent` at every position (0 where it does not fire)."""
        return self.codes.latent_values(latent)


def compute_latent_stats(lm: LM, sae: SAE, cfg: StatsConfig | None = None, where: SpliceSite | None = None,
                         progress: bool = True) -> LatentStats:
    """Encode `cfg.n_contexts` contexts and derive every per-latent statistic."""
    cfg = cfg or StatsConfig()
    ctx = build_contexts(load_corpus(cfg.corpus), lm.tokenizer, ContextConfig(), cfg.split, cfg.n_contexts)
    if len(ctx) == 0:
        raise ValueError(f"corpus {cfg.corpus!r} split {cfg.split!r} gave no contexts")
    codes = encode_contexts(lm, sae, torch.from_numpy(ctx.tokens_NT).long(), where, progress=progress)
    return stats_from_codes(codes, cfg)


def stats_from_codes(codes: Codes, cfg: StatsConfig | None = None) -> LatentStats:
    cfg = cfg or StatsConfig()
    n = codes.n_latents
    n_valid = int(codes.valid_NT.sum())
    ptr, pos, val = codes.latent_acts()
    counts = (ptr[1:] - ptr[:-1]).float()
    density = counts / max(n_valid, 1)
    lat_of = torch.repeat_interleave(torch.arange(n), ptr[1:] - ptr[:-1])  # the latent of each CSR entry
    mean_act = torch.zeros(n).index_add_(0, lat_of, val) / counts.clamp_min(1)
    max_act = torch.zeros(n)
    if len(val):
        max_act.scatter_reduce_(0, lat_of, val, reduce="amax")
    hi = float(val.max()) if len(val) else 1.0
    lo = max(hi * 1e-4, float(val.min()) if len(val) else 1e-4)
    edges = torch.logspace(torch.log10(torch.tensor(lo)), torch.log10(torch.tensor(hi * 1.0001)), cfg.hist_bins + 1)
    b = torch.bucketize(val, edges).clamp(1, cfg.hist_bins) - 1
    hist = torch.zeros(n * cfg.hist_bins).index_add_(0, lat_of * cfg.hist_bins + b, torch.ones_like(val))
    top = torch.full((n, cfg.top_n), -1, dtype=torch.long)
    inter = torch.full((n, cfg.n_intervals, cfg.per_interval), -1, dtype=torch.long)
    inter_edges = torch.zeros(n, cfg.n_intervals)
    g = torch.Generator().manual_seed(cfg.seed)
    for lat in torch.nonzero(counts > 0).squeeze(1).tolist():
        p, v = pos[ptr[lat]:ptr[lat + 1]], val[ptr[lat]:ptr[lat + 1]]
        order = v.argsort(descending=True)
        top[lat, : min(cfg.top_n, len(p))] = p[order[: cfg.top_n]]
        # quantile intervals by rank: interval i holds ranks [i/I, (i+1)/I) of the ascending values
        asc = order.flip(0)
        chunks = torch.tensor_split(asc, cfg.n_intervals)
        for i, ch in enumerate(chunks):
            if len(ch) == 0:
                continue
            pick = ch[torch.randperm(len(ch), generator=g)[: cfg.per_interval]]
            inter[lat, i, : len(pick)] = p[pick]
            inter_edges[lat, i] = v[ch].max()
    return LatentStats(codes, density, mean_act, max_act, hist.reshape(n, cfg.hist_bins), edges, top, inter,
                       inter_edges, asdict(cfg) | {"n_valid_tokens": n_valid, "version": STATS_VERSION})


def save_latent_stats(stats: LatentStats, folder: str | Path) -> Path:
    """Write latent_stats.safetensors + latent_stats.json into the SAE's folder (atomic renames)."""
    folder = Path(folder)
    c = stats.codes
    small = c.acts_NTK.abs().max() < 6e4
    tensors = {"tokens_NT": c.tokens_NT.to(torch.int32), "acts_NTK": c.acts_NTK.half() if small else c.acts_NTK,
               "idx_NTK": c.idx_NTK.to(torch.int32), "valid_NT": c.valid_NT.to(torch.uint8),
               "density_N": stats.density_N, "mean_act_N": stats.mean_act_N, "max_act_N": stats.max_act_N,
               "hist_NB": stats.hist_NB, "bin_edges_B": stats.bin_edges_B, "top_pos_NM": stats.top_pos_NM,
               "interval_pos_NIP": stats.interval_pos_NIP, "interval_edges_NI": stats.interval_edges_NI}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(folder / "latent_stats.safetensors", lambda p: save_file(tensors, p))
    meta = {**stats.config, "n_latents": stats.n_latents}
    atomic_write_text(folder / "latent_stats.json", json.dumps(meta, indent=1))
    return folder / "latent_stats.safetensors"


def load_latent_stats(folder: str | Path) -> LatentStats:
    folder = Path(folder)
    path = folder / "latent_stats.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no latent statistics: compute them with "
                                "saelab.interp.latent_stats.latent_stats_for(lm, sae, folder)")
    meta = json.loads((folder / "latent_stats.json").read_text())
    if meta.get("version", 0) > STATS_VERSION:
        raise ValueError(f"{path} was written by a newer saelab; upgrade saelab or recompute the statistics")
    t = load_file(path)
    codes = Codes(t["tokens_NT"].long(), t["acts_NTK"].float(), t["idx_NTK"].long(), t["valid_NT"].bool(),
                  int(meta["n_latents"]))
    return LatentStats(codes, t["density_N"], t["mean_act_N"], t["max_act_N"], t["hist_NB"], t["bin_edges_B"],
                       t["top_pos_NM"], t["interval_pos_NIP"], t["interval_edges_NI"], meta)


def latent_stats_for(lm: LM, sae: SAE, folder: str | Path, cfg: StatsConfig | None = None,
                     recompute: bool = False, progress: bool = True) -> LatentStats:
    """Load the statistics stored in the SAE's folder, computing and storing them the first time."""
    folder = Path(folder)
    cfg = cfg or StatsConfig()
    if not recompute and (folder / "latent_stats.safetensors").exists():
        stats = load_latent_stats(folder)
        if all(stats.config.get(k) == v for k, v in asdict(cfg).items()):
            return stats
    stats = compute_latent_stats(lm, sae, cfg, progress=progress)
    save_latent_stats(stats, folder)
    return stats

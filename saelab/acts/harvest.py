"""Harvest a causal LM's activations at one site, or several from one pass, into verified, resumable disk caches.

The forward pass stops right after the last hooked module (`saelab.lm.sites.run_to_sites`): no later blocks and
no LM head run. Several sites or layers (`layers='6,12,18,22'`, `sites='resid_post,mlp_out'`) share one pass and
write one cache each, each the cache a harvest of that site alone writes (the same folder name, the same tensors).
Positions before `exclude_first` and norm outliers (`outliers.outlier_mask`, per site) are dropped.
Under torchrun, rank r harvests shards i with i % world == r into one folder. The files are
described in `saelab.acts.cache`; `saelab.acts.stream` gives the same tokens without writing them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from saelab import assets
from saelab.acts.cache import (
    FORMAT_VERSION,
    ActivationCache,
    CacheError,
    check_or_write_fingerprint,
    shard_ok,
    write_manifest,
    write_shard,
)
from saelab.acts.corpus import (
    DEFAULT_CORPUS,
    ContextConfig,
    Split,
    build_contexts,
    corpus_fingerprint,
    load_corpus,
    separator_id,
)
from saelab.acts.outliers import outlier_mask
from saelab.distributed import rank_world
from saelab.flags import check_choices
from saelab.lm.models import LM, check_device, load_lm, resolve_device
from saelab.lm.sites import run_to_sites, site_module, site_parts


@dataclass
class HarvestConfig:
    """What to harvest and how to store it."""

    model: str = "smollm2-135m"
    """saelab model name (smollm2-135m, tiny-gpt2) or Hugging Face hub id (e.g. gpt2; needs the hub)."""
    corpus: str = DEFAULT_CORPUS
    """Embedded corpus (english-mix: Wikipedia + news + parliament, the default; its parts wiki-en, news,
    parliament-en; tweets-en, python-docs; wiki-es, wiki-fr, wiki-multi; synthetic) or hub dataset id."""
    corpus_config: str | None = None
    """Hub datasets only: the dataset's configuration (e.g. wikitext-103-raw-v1 for wikitext)."""
    corpus_split: str = "train"
    """Hub datasets only: the dataset's split to read (saelab then makes its own train/heldout documents)."""
    split: Split = "train"
    """Which documents: 'train', 'heldout' (about 1 in 20, chosen by a hash of the title), its halves
    'validation' (tuning, curves) and 'test' (reported numbers), or 'all'."""
    site: Literal["resid_post", "mlp_out", "attn_out", "mlp_in", "mlp_in+mlp_out"] = "resid_post"
    """Hook site: the residual stream after the block, the block's MLP or attention output, the MLP's input, or the
    MLP's input and output paired from one forward pass (rows [x | y], 2 x d_model wide: a transcoder's data)."""
    layer: int | None = None
    """Block index (0-based); None = the model's default (3/4 depth)."""
    context: ContextConfig = field(default_factory=ContextConfig)
    """How text becomes token contexts."""
    max_tokens: int | None = 400_000
    """Stop after about this many stored tokens (None: the whole split)."""
    exclude_first: int = 1
    """Drop positions < this in each context (position 0 is an attention sink with outlier norms)."""
    batch_size: int = 32
    """Contexts per forward pass (16-64 ran alike on a 2-core CPU; benchmark: benchmarks/bench_harvest.py)."""
    shard_contexts: int = 1024
    """Contexts per shard file."""
    outlier_factor: float | None = 10.0
    """Drop tokens whose activation norm exceeds this multiple of the batch median (None keeps all).
    On SmolLM2 layer 22 the <|endoftext|> separators sit ~50x above it (about 1% of wiki-en tokens)."""
    store_dtype: Literal["float16", "float32"] = "float16"
    """Activations on disk (float16 halves the disk; values beyond its range are refused)."""
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Model dtype: float32 on CPU (bfloat16 is many times slower there); bfloat16/float16 on CUDA."""
    device: str = "auto"
    """Where the model runs: 'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    layers: str = ""
    """Several layers from one forward pass, e.g. '6,12,18,22' (replaces `layer`; '' = just `layer`): one cache
    each, the same as harvesting each alone, in about the time of the deepest one alone."""
    sites: str = ""
    """Several sites from the same pass, e.g. 'resid_post,mlp_out' (replaces `site`; '' = just `site`); with
    `layers`, every site at every layer."""

    def __post_init__(self):
        check_choices(self)
        check_device(self.device)
        for site in split_list(self.sites):
            try:
                site_parts(site)
            except ValueError as err:
                raise ValueError(f"HarvestConfig.sites: {err}") from None
        try:
            [int(v) for v in split_list(self.layers)]
        except ValueError:
            raise ValueError(f"HarvestConfig.layers must be comma-separated block indices like '6,12,18,22', got "
                             f"{self.layers!r}") from None

    @property
    def several(self) -> bool:
        """True when `layers` or `sites` asks for more than one site from one pass."""
        return len(split_list(self.layers)) > 1 or len(split_list(self.sites)) > 1


MULTI_FIELDS = ("layers", "sites")
"""Fields that choose which caches one pass writes, not what any one cache holds."""


def harvest_settings(cfg: HarvestConfig) -> dict:
    """What a run folder records of its harvest: the config, without `layers` / `sites` when unset (a run.json
    written before they existed compares equal)."""
    return {k: v for k, v in asdict(cfg).items() if k not in MULTI_FIELDS or v}


def split_list(text: str) -> list[str]:
    return [v.strip() for v in str(text or "").split(",") if v.strip()]


def targets(cfg: HarvestConfig, lm: LM | None = None) -> list[HarvestConfig]:
    """One single-site config for each (site, layer) `cfg` asks for, in order (the default layer needs `lm`)."""
    layers = [int(v) for v in split_list(cfg.layers)] or [cfg.layer]
    if None in layers:
        if lm is None:
            raise ValueError("the default layer needs the model: pass lm=, or set layer / layers")
        layers = [lm.default_layer if v is None else v for v in layers]
    return [replace(cfg, site=site, layer=layer, layers="", sites="")
            for site in (split_list(cfg.sites) or [cfg.site]) for layer in layers]


def target_name(cfg: HarvestConfig) -> str:
    """'resid_post6': a single-site config's folder name inside a several-site output folder."""
    return f"{cfg.site}{cfg.layer}"


def weights_hash(model: torch.nn.Module) -> str:
    """A short hash of the model's parameters, recorded in caches to refuse another model's. Hashed from the
    tensors' memory, without byte copies (~1.6 s instead of 2.4 s for SmolLM2's 540 MB; same digest)."""
    h = hashlib.blake2b(digest_size=12)
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(memoryview(t.detach().to("cpu", torch.float32).reshape(-1).contiguous().numpy()).cast("B"))
    return h.hexdigest()


def _fingerprint(cfg: HarvestConfig, lm: LM, layer: int, whash: str) -> dict:
    return {
        "format_version": FORMAT_VERSION, "model": cfg.model, "model_hash": whash,
        "d_model": lm.d_model * len(site_parts(cfg.site)),  # the rows' width: a paired site's are two sites wide
        "site": cfg.site, "layer": layer, "corpus": cfg.corpus, "split": cfg.split,
        "corpus_hash": corpus_fingerprint(cfg.corpus, cfg.context), "context": asdict(cfg.context),
        "separator_id": separator_id(lm.tokenizer), "outlier_factor": cfg.outlier_factor,
        "exclude_first": cfg.exclude_first, "store_dtype": cfg.store_dtype, "shard_contexts": cfg.shard_contexts,
        **_hub_corpus_settings(cfg),
    }


def _hub_corpus_settings(cfg: HarvestConfig) -> dict:
    """corpus_config / corpus_split when set (left out at their defaults, so older caches keep their names)."""
    return {k: v for k, v in (("corpus_config", cfg.corpus_config), ("corpus_split", cfg.corpus_split))
            if v != {"corpus_config": None, "corpus_split": "train"}[k]}


def harvest_key(cfg: HarvestConfig) -> dict:
    """The settings that decide which activations a harvest gives (not where or in what batches it runs);
    the hub-corpus fields count only when set, so keys made before they existed stay the same; `layers` and
    `sites` never (each cache is keyed by its own site and layer)."""
    asked = {k: v for k, v in asdict(cfg).items() if k not in ("corpus_config", "corpus_split", *MULTI_FIELDS)}
    return {**asked, **_hub_corpus_settings(cfg), "device": None, "batch_size": None}


def default_cache_dir(cfg: HarvestConfig, layer: int) -> Path:
    key = json.dumps({**harvest_key(cfg), "layer": layer, "format_version": FORMAT_VERSION}, sort_keys=True)
    tag = hashlib.sha256(key.encode()).hexdigest()[:10]
    safe_model = cfg.model.replace("/", "__")
    return assets.home() / "acts" / f"{safe_model}-{cfg.site}{layer}-{cfg.corpus.replace('/', '__')}-{cfg.split}-{tag}"



def harvest(cfg: HarvestConfig, out_dir: str | Path | None = None, lm: LM | None = None,
            progress: bool = True) -> ActivationCache:
    """Harvest activations at one site into `out_dir` (resuming whatever shards are already there); returns the
    cache. Several sites (`cfg.layers`, `cfg.sites`): `harvest_sites`.

    Under torchrun (torch.distributed initialised), rank r harvests shards i with i % world == r
    into the same folder, and rank 0 writes the manifest once all ranks are done.
    """
    if cfg.several:
        raise ValueError(f"this harvest asks for several sites (layers={cfg.layers!r}, sites={cfg.sites!r}); "
                         "harvest_sites returns one cache each")
    lm = lm or load_harvest_lm(cfg)
    return next(iter(harvest_sites(cfg, out_dir, lm, progress).values()))


def harvest_sites(cfg: HarvestConfig, out_dirs: str | Path | dict | None = None, lm: LM | None = None,
                  progress: bool = True) -> dict[tuple[str, int], ActivationCache]:
    """Harvest every (site, layer) `cfg` asks for from ONE forward pass per batch; {(site, layer): cache}.

    `out_dirs`: a folder (the cache itself for one site; for several, one subfolder a site, named by `target_name`),
    a {(site, layer): folder} dict, or None (each cache where a harvest of that site alone puts it, so later
    single-site runs reuse it). Resumable per site: a batch runs the model only for the shards some site lacks.
    """
    from tqdm.auto import tqdm

    lm = lm or load_harvest_lm(cfg)
    jobs = targets(cfg, lm)
    keys = [(t.site, t.layer) for t in jobs]
    for t in jobs:
        site_module(lm.model, t.site, t.layer)  # validates sites and layers early
    if isinstance(out_dirs, (str, Path)):
        out_dirs = {(t.site, t.layer): Path(out_dirs) / target_name(t) if len(jobs) > 1 else Path(out_dirs)
                    for t in jobs}
    folders = {key: Path((out_dirs or {}).get(key) or default_cache_dir(t, t.layer)) for key, t in zip(keys, jobs)}
    for (site, layer), folder in folders.items():
        if assets.cached_only() and not (folder / "manifest.json").exists():
            raise assets.missing_from_cache(f"the harvest of {cfg.model} {site}{layer} on {cfg.corpus} ({cfg.split})",
                                            folder)
    whash = weights_hash(lm.model)
    fps = {key: _fingerprint(t, lm, t.layer, whash) for key, t in zip(keys, jobs)}
    for key in keys:
        folders[key].mkdir(parents=True, exist_ok=True)
        check_or_write_fingerprint(folders[key], fps[key])
    rank, world = rank_world()

    per_ctx, contexts = harvest_contexts(cfg, lm)
    n_shards = math.ceil(len(contexts) / cfg.shard_contexts)
    todo = {i: [key for key in keys if not shard_ok(folders[key], i)] for i in range(n_shards) if i % world == rank}
    todo = {i: need for i, need in todo.items() if need}
    total_tokens = sum(min(cfg.shard_contexts, len(contexts) - i * cfg.shard_contexts) for i in todo) * per_ctx
    what = ", ".join(f"{s}{layer}" for s, layer in keys)
    bar = tqdm(total=total_tokens, unit="tok", unit_scale=True, disable=not progress or rank != 0,
               desc=f"harvest {cfg.model} {what}", dynamic_ncols=True)
    for i, need in todo.items():
        c0, c1 = i * cfg.shard_contexts, min((i + 1) * cfg.shard_contexts, len(contexts))
        toks = torch.from_numpy(contexts.tokens_NT[c0:c1]).long()
        docs = torch.from_numpy(contexts.doc_NT[c0:c1])
        ctx = torch.arange(c0, c1, dtype=torch.int32)[:, None].expand(-1, per_ctx)
        pos = torch.arange(cfg.exclude_first, cfg.context.ctx_len, dtype=torch.int16)[None].expand(c1 - c0, -1)
        cols = {key: {"acts": [], "tokens": [], "ctx": [], "pos": [], "doc": []} for key in need}
        for s in range(0, len(toks), cfg.batch_size):
            sl = slice(s, s + cfg.batch_size)
            for key, out in run_to_sites(lm, toks[sl], need).items():
                acts = out[:, cfg.exclude_first:].float().cpu()
                acts = acts.reshape(-1, acts.shape[-1])
                keep = outlier_mask(acts, cfg.outlier_factor)
                col = cols[key]
                col["acts"].append(acts[keep])
                col["tokens"].append(toks[sl, cfg.exclude_first:].reshape(-1)[keep].to(torch.int32))
                col["ctx"].append(ctx[sl].reshape(-1)[keep])
                col["pos"].append(pos[sl].reshape(-1)[keep])
                col["doc"].append(docs[sl, cfg.exclude_first:].reshape(-1)[keep])
            bar.update(toks[sl].shape[0] * per_ctx)
        for key in need:
            write_shard(folders[key], i, _stored(cols[key], cfg.store_dtype, key),
                        {"shard": str(i), "ctx_start": str(c0), "ctx_end": str(c1)})
    bar.close()
    if world > 1:
        torch.distributed.barrier()
    if rank == 0:
        for key in keys:
            write_manifest(folders[key], fps[key], n_shards, len(contexts))
    if world > 1:
        torch.distributed.barrier()
    return {key: ActivationCache(folders[key], verify="size") for key in keys}


def _stored(cols: dict, store_dtype: str, key) -> dict[str, torch.Tensor]:
    """One shard's tensors, activations in the store dtype (float16 refuses values beyond its range)."""
    tensors = {k: torch.cat(v).contiguous() for k, v in cols.items()}
    if store_dtype == "float16":
        too_big = int((tensors["acts"].abs() > torch.finfo(torch.float16).max).any(-1).sum())
        if too_big:
            raise CacheError(f"{too_big} tokens at {key[0]} layer {key[1]} exceed the float16 range; harvest with "
                             "store_dtype='float32'")
    tensors["acts"] = tensors["acts"].to(getattr(torch, store_dtype))
    return tensors


def load_harvest_lm(cfg: HarvestConfig) -> LM:
    """The model a harvest config asks for, on its device and compute dtype."""
    return load_lm(cfg.model, device=resolve_device(cfg.device), dtype=getattr(torch, cfg.compute_dtype))


def harvest_contexts(cfg: HarvestConfig, lm: LM):
    """(positions kept per context, the token contexts covering about cfg.max_tokens kept positions)."""
    per_ctx = cfg.context.ctx_len - cfg.exclude_first
    if per_ctx <= 0:
        raise ValueError(f"exclude_first={cfg.exclude_first} leaves no positions in ctx_len={cfg.context.ctx_len}")
    max_ctx = None if cfg.max_tokens is None else math.ceil(cfg.max_tokens / per_ctx)
    corpus = load_corpus(cfg.corpus, config=cfg.corpus_config, split=cfg.corpus_split)
    contexts = build_contexts(corpus, lm.tokenizer, cfg.context, split=cfg.split,
                              max_contexts=max_ctx)
    if len(contexts) == 0:
        raise ValueError(f"corpus {cfg.corpus!r} split {cfg.split!r} gave no contexts of {cfg.context.ctx_len} tokens")
    return per_ctx, contexts



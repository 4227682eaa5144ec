"""Harvest a causal LM's activations at one site into a verified, resumable disk cache.

The forward pass stops right after the hooked module (a hook raises `_StopForward`): no later
blocks and no LM head run. Sites: ``resid_post`` (residual stream after block L, the paper's
choice), ``mlp_out`` and ``attn_out`` (outputs of block L's MLP and attention).

Cache format: sharded safetensors. Each shard holds ``acts [T, d]`` (fp16 or fp32), ``tokens [T]``,
``ctx [T]`` (context index) and ``pos [T]`` for a fixed range of contexts, so shard i is the same
on every run and rank. Why safetensors: no pickle, memory-mapped slices, one atomic rename per
shard, and the same format as the SAE checkpoints. A harvest killed at any point resumes by
skipping the shards already on disk; ``manifest.json`` (model + weight hash, site, layer, corpus
+ hash, context policy, dtype, excluded positions, token count, per-shard sha256) is written
last and verified when the cache is opened.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import assets
from .data import ContextConfig, build_contexts, corpus_fingerprint, load_corpus, separator_id
from .files import atomic_write_text
from .models import LM, load_lm

FORMAT_VERSION = 2  # 2: fingerprint records the document separator and the outlier rule
SITES = ("resid_post", "mlp_out", "attn_out")


class CacheError(RuntimeError):
    """An activation cache is broken or was built for something else; the message names the fix."""


@dataclass
class HarvestConfig:
    """What to harvest and how to store it."""

    model: str = "smollm2-135m"
    """saelab model name or Hugging Face hub id."""
    corpus: str = "wiki-en"
    """Embedded corpus name or hub dataset id."""
    split: str = "train"
    """'train', 'heldout' or 'all' documents (see saelab.data)."""
    site: str = "resid_post"
    """'resid_post', 'mlp_out' or 'attn_out'."""
    layer: int | None = None
    """Block index (0-based); None = the model's default (3/4 depth)."""
    context: ContextConfig = field(default_factory=ContextConfig)
    """How text becomes token contexts."""
    max_tokens: int | None = 400_000
    """Stop after about this many stored tokens (None: the whole split)."""
    exclude_first: int = 1
    """Drop positions < this in each context (position 0 is an attention sink with outlier norms)."""
    batch_size: int = 32
    """Contexts per forward pass. On a 2-core CPU, SmolLM2 to layer 22, the bare forward ran ~690 tokens/s
    at 16-32 contexts and ~600 at 64; 40k-token harvests alternating 32/64 in one process ran 706, 597 vs
    584, 586 tokens/s; whole 412k-token harvests took 693 s (32) and 648 s (64) on two runs of one day."""
    shard_contexts: int = 1024
    """Contexts per shard file."""
    outlier_factor: float | None = 10.0
    """Drop tokens whose activation norm exceeds this multiple of the batch median (None keeps all).
    On SmolLM2 layer 22 the <|endoftext|> separators sit ~50x above it (about 1% of wiki-en tokens)."""
    store_dtype: str = "float16"
    """'float16' or 'float32' on disk (fp16 halves the disk; values beyond fp16 range are refused)."""
    compute_dtype: str = "float32"
    """Model dtype: float32 on CPU; bfloat16/float16 allowed on CUDA."""
    device: str = "cpu"
    """Where the model runs: 'cpu' or 'cuda'."""


def find_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The list of transformer blocks of a Hugging Face causal LM (Llama, GPT-2, NeoX, ...)."""
    n = model.config.num_hidden_layers
    for _, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == n:
            return mod
    raise ValueError(f"could not find the {n} transformer blocks in {type(model).__name__}")


def site_module(model: torch.nn.Module, site: str, layer: int) -> torch.nn.Module:
    blocks = find_blocks(model)
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer {layer} out of range: the model has {len(blocks)} blocks (0..{len(blocks) - 1})")
    block = blocks[layer]
    if site == "resid_post":
        return block
    names = {"mlp_out": ("mlp", "feed_forward", "ffn"), "attn_out": ("self_attn", "attn", "attention")}
    if site not in names:
        raise ValueError(f"unknown site {site!r}; choose from {SITES}")
    for name in names[site]:
        if hasattr(block, name):
            return getattr(block, name)
    raise ValueError(f"block {layer} of {type(model).__name__} has none of {names[site]}")


class _StopForward(Exception):
    pass


@torch.no_grad()
def run_to_site(lm: LM, input_ids: torch.Tensor, site: str, layer: int) -> torch.Tensor:
    """Activations [B, T, d] at (site, layer); the forward pass stops right after that module."""
    captured = {}

    def hook(_mod, _inp, out):
        captured["acts"] = out[0] if isinstance(out, tuple) else out
        raise _StopForward

    handle = site_module(lm.model, site, layer).register_forward_hook(hook)
    try:
        lm.model(input_ids=input_ids.to(lm.device), use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "acts" not in captured:
        raise RuntimeError(f"the hook at {site} {layer} never ran")
    return captured["acts"]


def weights_hash(model: torch.nn.Module) -> str:
    """A short hash of the model's parameters, recorded in caches to refuse another model's."""
    h = hashlib.blake2b(digest_size=12)
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _fingerprint(cfg: HarvestConfig, lm: LM, layer: int, whash: str) -> dict:
    return {
        "format_version": FORMAT_VERSION, "model": cfg.model, "model_hash": whash, "d_model": lm.d_model,
        "site": cfg.site, "layer": layer, "corpus": cfg.corpus, "split": cfg.split,
        "corpus_hash": corpus_fingerprint(cfg.corpus, cfg.context), "context": asdict(cfg.context),
        "separator_id": separator_id(lm.tokenizer), "outlier_factor": cfg.outlier_factor,
        "exclude_first": cfg.exclude_first, "store_dtype": cfg.store_dtype, "shard_contexts": cfg.shard_contexts,
    }


def default_cache_dir(cfg: HarvestConfig, layer: int) -> Path:
    key = json.dumps({**asdict(cfg), "layer": layer, "device": None, "batch_size": None,
                      "format_version": FORMAT_VERSION}, sort_keys=True)
    tag = hashlib.sha256(key.encode()).hexdigest()[:10]
    safe_model = cfg.model.replace("/", "__")
    return assets.home() / "acts" / f"{safe_model}-{cfg.site}{layer}-{cfg.corpus.replace('/', '__')}-{cfg.split}-{tag}"


def _shard_path(folder: Path, i: int) -> Path:
    return folder / f"shard-{i:05d}.safetensors"


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def harvest(cfg: HarvestConfig, out_dir: str | Path | None = None, lm: LM | None = None,
            progress: bool = True) -> ActivationCache:
    """Harvest activations into `out_dir` (resuming whatever shards are already there); returns the cache.

    Under torchrun (torch.distributed initialised), rank r harvests shards i with i % world == r
    into the same folder, and rank 0 writes the manifest once all ranks are done.
    """
    from tqdm.auto import tqdm

    lm = lm or load_harvest_lm(cfg)
    layer = lm.default_layer if cfg.layer is None else cfg.layer
    site_module(lm.model, cfg.site, layer)  # validates site and layer early
    if cfg.store_dtype not in ("float16", "float32"):
        raise ValueError(f"store_dtype must be 'float16' or 'float32', got {cfg.store_dtype!r}")
    folder = Path(out_dir) if out_dir else default_cache_dir(cfg, layer)
    folder.mkdir(parents=True, exist_ok=True)
    whash = weights_hash(lm.model)
    fp = _fingerprint(cfg, lm, layer, whash)
    _check_or_write_fingerprint(folder, fp)
    rank, world = _dist_rank_world()

    per_ctx, contexts = _harvest_contexts(cfg, lm)
    n_shards = math.ceil(len(contexts) / cfg.shard_contexts)
    mine = [i for i in range(n_shards) if i % world == rank]
    todo = [i for i in mine if not _shard_ok(folder, i)]
    total_tokens = sum(min(cfg.shard_contexts, len(contexts) - i * cfg.shard_contexts) for i in todo) * per_ctx
    bar = tqdm(total=total_tokens, unit="tok", unit_scale=True, disable=not progress or rank != 0,
               desc=f"harvest {cfg.model} {cfg.site}{layer}", dynamic_ncols=True)
    store = getattr(torch, cfg.store_dtype)
    for i in todo:
        c0, c1 = i * cfg.shard_contexts, min((i + 1) * cfg.shard_contexts, len(contexts))
        toks = torch.from_numpy(contexts.tokens_NT[c0:c1]).long()
        docs = torch.from_numpy(contexts.doc_NT[c0:c1])
        ctx = torch.arange(c0, c1, dtype=torch.int32)[:, None].expand(-1, per_ctx)
        pos = torch.arange(cfg.exclude_first, cfg.context.ctx_len, dtype=torch.int16)[None].expand(c1 - c0, -1)
        cols = {"acts": [], "tokens": [], "ctx": [], "pos": [], "doc": []}
        for s in range(0, len(toks), cfg.batch_size):
            sl = slice(s, s + cfg.batch_size)
            acts = run_to_site(lm, toks[sl], cfg.site, layer)[:, cfg.exclude_first:].float().cpu()
            acts = acts.reshape(-1, lm.d_model)
            keep = outlier_mask(acts, cfg.outlier_factor)
            cols["acts"].append(acts[keep])
            cols["tokens"].append(toks[sl, cfg.exclude_first:].reshape(-1)[keep].to(torch.int32))
            cols["ctx"].append(ctx[sl].reshape(-1)[keep])
            cols["pos"].append(pos[sl].reshape(-1)[keep])
            cols["doc"].append(docs[sl, cfg.exclude_first:].reshape(-1)[keep])
            bar.update(len(keep))
        tensors = {k: torch.cat(v).contiguous() for k, v in cols.items()}
        if store == torch.float16:
            too_big = int((tensors["acts"].abs() > torch.finfo(torch.float16).max).any(-1).sum())
            if too_big:
                raise CacheError(f"{too_big} tokens exceed the float16 range; harvest with store_dtype='float32'")
        tensors["acts"] = tensors["acts"].to(store)
        _write_shard(folder, i, tensors, {"shard": str(i), "ctx_start": str(c0), "ctx_end": str(c1)})
    bar.close()
    if world > 1:
        torch.distributed.barrier()
    if rank == 0:
        _write_manifest(folder, fp, n_shards, len(contexts))
    if world > 1:
        torch.distributed.barrier()
    return ActivationCache(folder, verify="size")


def load_harvest_lm(cfg: HarvestConfig) -> LM:
    """The model a harvest config asks for, on its device and compute dtype."""
    return load_lm(cfg.model, device=cfg.device, dtype=getattr(torch, cfg.compute_dtype))


def _harvest_contexts(cfg: HarvestConfig, lm: LM):
    """(positions kept per context, the token contexts covering about cfg.max_tokens kept positions)."""
    per_ctx = cfg.context.ctx_len - cfg.exclude_first
    if per_ctx <= 0:
        raise ValueError(f"exclude_first={cfg.exclude_first} leaves no positions in ctx_len={cfg.context.ctx_len}")
    max_ctx = None if cfg.max_tokens is None else math.ceil(cfg.max_tokens / per_ctx)
    contexts = build_contexts(load_corpus(cfg.corpus), lm.tokenizer, cfg.context, split=cfg.split,
                              max_contexts=max_ctx)
    if len(contexts) == 0:
        raise ValueError(f"corpus {cfg.corpus!r} split {cfg.split!r} gave no contexts of {cfg.context.ctx_len} tokens")
    return per_ctx, contexts


def _check_or_write_fingerprint(folder: Path, fp: dict) -> None:
    """Refuse to mix a harvest into a cache built for another model/site/corpus."""
    path = folder / "harvest.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in fp.items() if old.get(k) != v}
        if diff:
            raise CacheError(f"{folder} holds activations of another harvest; differing: "
                             + ", ".join(f"{k}: cache has {a!r}, asked {b!r}" for k, (a, b) in diff.items())
                             + ". Use another output folder or delete this one.")
        return
    atomic_write_text(path, json.dumps(fp, indent=1))


def _write_shard(folder: Path, i: int, tensors: dict, meta: dict) -> None:
    final = _shard_path(folder, i)
    tmp = folder / f".{final.name}.{os.getpid()}.tmp"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, final)


def _shard_ok(folder: Path, i: int) -> bool:
    path = _shard_path(folder, i)
    if not path.exists():
        return False
    try:
        with safe_open(path, "pt") as f:
            return {"acts", "tokens", "ctx", "pos", "doc"} <= set(f.keys())
    except Exception:  # noqa: BLE001 - any unreadable shard is simply harvested again
        return False


def _write_manifest(folder: Path, fp: dict, n_shards: int, n_contexts: int) -> None:
    shards, n_tokens = [], 0
    for i in range(n_shards):
        path = _shard_path(folder, i)
        if not _shard_ok(folder, i):
            raise CacheError(f"shard {path.name} is missing or unreadable after harvesting; run the harvest again")
        with safe_open(path, "pt") as f:
            n = f.get_slice("tokens").get_shape()[0]
        shards.append({"file": path.name, "n_tokens": n, "bytes": path.stat().st_size,
                       "sha256": assets.sha256_file(path)})
        n_tokens += n
    positions = n_contexts * (fp["context"]["ctx_len"] - fp["exclude_first"])
    manifest = {**fp, "n_tokens": n_tokens, "n_contexts": n_contexts, "n_dropped_outliers": positions - n_tokens,
                "shards": shards, "complete": True,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=1))


def cache_from_tensor(acts_TD: torch.Tensor, folder: str | Path, shard_tokens: int = 65536,
                      name: str = "tensor") -> ActivationCache:
    """Write activations you already have ([tokens, d]) as a cache, so `Trainer` and the metrics can
    use them (synthetic data, activations from another tool). Tokens/positions are recorded as 0."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    acts_TD = torch.as_tensor(acts_TD).float()
    T, D = acts_TD.shape
    n_shards = max(1, math.ceil(T / shard_tokens))
    for i in range(n_shards):
        a = acts_TD[i * shard_tokens:(i + 1) * shard_tokens].contiguous()
        z = torch.zeros(len(a), dtype=torch.int32)
        _write_shard(folder, i, {"acts": a, "tokens": z, "ctx": z.clone(), "pos": z.to(torch.int16), "doc": z.clone()},
                     {"shard": str(i)})
    fp = {"format_version": FORMAT_VERSION, "model": name, "model_hash": None, "d_model": D, "site": None,
          "layer": None, "corpus": name, "split": "all", "context": {"ctx_len": 1}, "exclude_first": 0,
          "store_dtype": "float32"}
    _write_manifest(folder, fp, n_shards, T)
    return ActivationCache(folder)


class ActivationCache:
    """A verified, read-only view of a harvest folder."""

    def __init__(self, folder: str | Path, verify: str = "size", expect: dict | None = None):
        """verify: 'size' (fast: files present with recorded sizes) or 'sha256' (reads every byte).
        expect: manifest fields that must match (e.g. {'model': ..., 'layer': ...})."""
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        if not path.exists():
            hint = "the harvest did not finish: run it again to resume" if (self.folder / "harvest.json").exists() \
                else "not an activation cache: run `saelab harvest`"
            raise CacheError(f"{self.folder}: no manifest.json ({hint})")
        self.manifest = json.loads(path.read_text())
        if self.manifest.get("format_version", 0) > FORMAT_VERSION:
            raise CacheError(f"{self.folder} was written by a newer saelab; upgrade saelab")
        for key, want in (expect or {}).items():
            if self.manifest.get(key) != want:
                raise CacheError(f"{self.folder} was built for {key}={self.manifest.get(key)!r}, not {want!r}; "
                                 "harvest into another folder for this setting")
        for s in self.manifest["shards"]:
            p = self.folder / s["file"]
            if not p.exists():
                raise CacheError(f"{self.folder}: shard {s['file']} is missing; delete it from the folder and "
                                 "run the harvest again to rebuild it")
            if p.stat().st_size != s["bytes"] or (verify == "sha256" and assets.sha256_file(p) != s["sha256"]):
                raise CacheError(f"{self.folder}: shard {s['file']} is corrupt (size or checksum differs); delete "
                                 "that file and run the harvest again to rebuild it")
        self.shard_sizes = [s["n_tokens"] for s in self.manifest["shards"]]
        self.offsets = np.concatenate([[0], np.cumsum(self.shard_sizes)]).astype(np.int64)

    @property
    def n_tokens(self) -> int:
        return int(self.manifest["n_tokens"])

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    def shard_files(self) -> list[Path]:
        return [self.folder / s["file"] for s in self.manifest["shards"]]

    def read_shard(self, i: int, keys=("acts",)) -> dict[str, torch.Tensor]:
        with safe_open(self.shard_files()[i], "pt") as f:
            return {k: f.get_tensor(k) for k in keys}

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """A random sample of `n` activation rows as fp32 (reads at most a few shards' worth)."""
        g = np.random.default_rng(seed)
        order = g.permutation(len(self.shard_sizes))
        rows, have = [], 0
        for i in order:
            acts = self.read_shard(int(i))["acts"]
            take = min(n - have, len(acts))
            rows.append(acts[torch.from_numpy(g.choice(len(acts), take, replace=False))].float())
            have += take
            if have >= n:
                break
        return torch.cat(rows)

    def tokens(self) -> torch.Tensor:
        """All token ids, in cache order (int32; small next to the activations)."""
        return torch.cat([self.read_shard(i, ("tokens",))["tokens"] for i in range(len(self.shard_sizes))])


@dataclass
class LoaderState:
    epoch: int = 0
    batch: int = 0


class ShuffledLoader:
    """Shuffled batches from an ActivationCache without loading it all into RAM.

    Each epoch permutes the shards, groups them `shards_in_memory` at a time, and permutes the
    rows within each group; batches run across group boundaries. The order depends only on
    (seed, epoch), so a resumed run can jump to any batch, and data-parallel rank r takes rows
    [r*B/W, (r+1)*B/W) of each global batch B.
    """

    def __init__(self, cache: ActivationCache, batch_size: int, seed: int = 0, shards_in_memory: int = 4,
                 rank: int = 0, world: int = 1, device: str | torch.device = "cpu", drop_last: bool = True):
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} is not divisible by the {world} data-parallel ranks")
        self.cache, self.B, self.seed, self.m = cache, batch_size, seed, max(1, shards_in_memory)
        self.rank, self.world, self.device, self.drop_last = rank, world, torch.device(device), drop_last

    def batches_per_epoch(self) -> int:
        n = self.cache.n_tokens
        return n // self.B if self.drop_last else math.ceil(n / self.B)

    def _plan(self, epoch: int):
        g = np.random.default_rng([self.seed, epoch])
        order = g.permutation(len(self.cache.shard_sizes))
        groups = [order[i:i + self.m] for i in range(0, len(order), self.m)]
        sizes = [sum(self.cache.shard_sizes[j] for j in grp) for grp in groups]
        return g, groups, sizes

    def iter_epoch(self, epoch: int, start_batch: int = 0):
        """Yield fp32 batches [B/W, d] of `epoch`, starting at global batch `start_batch`."""
        g, groups, sizes = self._plan(epoch)
        perms = [g.permutation(s) for s in sizes]  # drawn for all groups so the order never depends on start
        starts = np.concatenate([[0], np.cumsum(sizes)])
        n_batches = self.batches_per_epoch()
        loaded: dict[int, torch.Tensor] = {}
        lo, hi = self.rank * self.B // self.world, (self.rank + 1) * self.B // self.world
        for b in range(start_batch, n_batches):
            a, z = b * self.B + lo, min(b * self.B + hi, int(starts[-1]))
            pieces = []
            pos = a
            while pos < z:
                gi = int(np.searchsorted(starts, pos, side="right") - 1)
                if gi not in loaded:
                    loaded = {k: v for k, v in loaded.items() if k >= gi}
                    acts = torch.cat([self.cache.read_shard(int(j))["acts"] for j in groups[gi]])
                    loaded[gi] = acts[torch.from_numpy(perms[gi])]
                end = min(z, int(starts[gi + 1]))
                pieces.append(loaded[gi][pos - int(starts[gi]): end - int(starts[gi])])
                pos = end
            yield torch.cat(pieces).to(self.device, torch.float32, non_blocking=True)


class ShuffleBuffer:
    """On-the-fly mode: mix incoming activation batches in a bounded buffer, yield shuffled batches
    (under data parallelism: each rank its own buffer over its own stream, batch_size = global / world,
    and its own seed)."""

    def __init__(self, source, batch_size: int, capacity: int = 65536, seed: int = 0):
        self.source, self.B, self.cap = source, batch_size, max(capacity, batch_size)
        self.gen = torch.Generator().manual_seed(seed)

    def __iter__(self):
        buf = None
        for acts in self.source:
            buf = acts if buf is None else torch.cat([buf, acts])
            while len(buf) >= self.cap:
                perm = torch.randperm(len(buf), generator=self.gen)
                buf = buf[perm]
                yield buf[: self.B].float()
                buf = buf[self.B:]
        if buf is not None and len(buf):
            buf = buf[torch.randperm(len(buf), generator=self.gen)]
            for s in range(0, len(buf) - self.B + 1, self.B):
                yield buf[s:s + self.B].float()


def stream_activations(cfg: HarvestConfig, lm: LM | None = None, rank: int | None = None, world: int | None = None,
                       with_ids: bool = False):
    """On-the-fly harvest (no disk): yield [tokens, d] fp32 activation blocks, batch by batch.

    The same tokens as `harvest` with the same config: the same contexts, cut into the same batches of
    `cfg.batch_size` contexts, and the same position and outlier rules (so separators never reach
    training). Under torchrun (or with rank/world given) rank r takes batches j with j % world == r:
    the ranks' tokens are disjoint and together are exactly one process's. with_ids: yield (acts,
    ids) with ids = context * ctx_len + position, to check which tokens a rank saw.
    """
    lm = lm or load_harvest_lm(cfg)
    layer = lm.default_layer if cfg.layer is None else cfg.layer
    if rank is None or world is None:
        rank, world = _dist_rank_world()
    T = cfg.context.ctx_len
    _, contexts = _harvest_contexts(cfg, lm)
    toks = torch.from_numpy(contexts.tokens_NT).long()
    pos = torch.arange(cfg.exclude_first, T)
    # the harvest's batches: batch_size contexts at a time within each shard of shard_contexts
    starts = [s for c0 in range(0, len(toks), cfg.shard_contexts)
              for s in range(c0, min(c0 + cfg.shard_contexts, len(toks)), cfg.batch_size)]
    for j, s in enumerate(starts):
        if j % world != rank:
            continue
        end = min(s + cfg.batch_size, (s // cfg.shard_contexts + 1) * cfg.shard_contexts, len(toks))
        batch = toks[s:end]
        acts = run_to_site(lm, batch, cfg.site, layer)[:, cfg.exclude_first:].float().reshape(-1, lm.d_model).cpu()
        keep = outlier_mask(acts, cfg.outlier_factor)
        if with_ids:
            ids = ((torch.arange(s, s + len(batch))[:, None] * T) + pos[None]).reshape(-1)
            yield acts[keep], ids[keep]
        else:
            yield acts[keep]


def outlier_mask(acts_TD: torch.Tensor, factor: float | None) -> torch.Tensor:
    """True for tokens to keep: norm <= factor * median norm of the batch (all kept when factor is None)."""
    if factor is None:
        return torch.ones(len(acts_TD), dtype=torch.bool)
    norms = acts_TD.norm(dim=-1)
    return norms <= factor * norms.median()


def norm_stats(acts_TD: torch.Tensor) -> dict:
    """Activation-norm statistics: quantiles and how many tokens sit 10x / 100x above the median."""
    norms = acts_TD.float().norm(dim=-1)
    med = float(norms.median())
    q = torch.quantile(norms[: 1_000_000], torch.tensor([0.01, 0.5, 0.99, 0.999]))
    return {"median": med, "q01": float(q[0]), "q99": float(q[2]), "q999": float(q[3]), "max": float(norms.max()),
            "frac_over_10x_median": float((norms > 10 * med).float().mean()),
            "frac_over_100x_median": float((norms > 100 * med).float().mean()), "n": int(norms.numel())}


@torch.no_grad()
def norm_survey(lm: LM, n_contexts: int = 64, corpus: str = "wiki-en", site: str = "resid_post",
                layer: int | None = None, context: ContextConfig | None = None) -> dict:
    """Activation norms per (context, position) on a few contexts, before any token is excluded.

    Returns {'norms_NT', 'tokens_NT', 'layer'}: the evidence behind `exclude_first` and
    `outlier_factor` (notebook 01 plots it).
    """
    layer = lm.default_layer if layer is None else layer
    ctx = build_contexts(load_corpus(corpus), lm.tokenizer, context or ContextConfig(), max_contexts=n_contexts)
    toks = torch.from_numpy(ctx.tokens_NT).long()
    norms = torch.cat([run_to_site(lm, toks[s:s + 32], site, layer).norm(dim=-1).cpu()
                       for s in range(0, len(toks), 32)])
    return {"norms_NT": norms, "tokens_NT": toks, "layer": layer}

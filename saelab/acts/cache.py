"""The activation cache: sharded safetensors written by `harvest`, read back verified.

Each shard holds ``acts [T, d]`` (fp16 or fp32), ``tokens [T]``, ``ctx [T]`` (context index),
``pos [T]`` and ``doc [T]`` for a fixed range of contexts, so shard i is the same on every run and
rank. Why safetensors: no pickle, memory-mapped slices, one atomic rename per shard, and the same
format as the SAE checkpoints. A harvest killed at any point resumes by skipping the shards already
on disk; ``harvest.json`` (what was asked) is written first and checked on resume, ``manifest.json``
(that plus the token count and per-shard sha256) is written last and verified when the cache is opened.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from saelab import assets
from saelab.files import atomic_write, atomic_write_text

FORMAT_VERSION = 2  # 2: fingerprint records the document separator and the outlier rule
SHARD_KEYS = ("acts", "tokens", "ctx", "pos", "doc")


class CacheError(RuntimeError):
    """An activation cache is broken or was built for something else; the message names the fix."""




def _shard_path(folder: Path, i: int) -> Path:
    return folder / f"shard-{i:05d}.safetensors"



def check_or_write_fingerprint(folder: Path, fp: dict) -> None:
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


def write_shard(folder: Path, i: int, tensors: dict, meta: dict) -> None:
    atomic_write(_shard_path(folder, i), lambda p: save_file(tensors, p, metadata=meta))


def shard_ok(folder: Path, i: int) -> bool:
    path = _shard_path(folder, i)
    if not path.exists():
        return False
    try:
        with safe_open(path, "pt") as f:
            return set(SHARD_KEYS) <= set(f.keys())
    except Exception:  # noqa: BLE001 - any unreadable shard is simply harvested again
        return False


def write_manifest(folder: Path, fp: dict, n_shards: int, n_contexts: int) -> None:
    shards, n_tokens = [], 0
    for i in range(n_shards):
        path = _shard_path(folder, i)
        if not shard_ok(folder, i):
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


def tensor_manifest(T: int, D: int, name: str) -> dict:
    """The manifest of activations given as a tensor: no model, site or document is known (tokens are recorded
    as 0)."""
    return {"format_version": FORMAT_VERSION, "model": name, "model_hash": None, "d_model": D, "site": None,
            "layer": None, "corpus": name, "split": "all", "context": {"ctx_len": 1}, "exclude_first": 0,
            "store_dtype": "float32"}


def cache_from_tensor(acts_TD: torch.Tensor, folder: str | Path, shard_tokens: int = 65536,
                      name: str = "tensor") -> ActivationCache:
    """Write activations you already have ([tokens, d]) as a cache on disk (activations from another tool, kept
    for later). To train on them or score them, pass the tensor itself: `TensorActivations` reads it in memory
    the same way."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    acts_TD = torch.as_tensor(acts_TD).float()
    T, D = acts_TD.shape
    n_shards = max(1, math.ceil(T / shard_tokens))
    for i in range(n_shards):
        a = acts_TD[i * shard_tokens:(i + 1) * shard_tokens].contiguous()
        z = torch.zeros(len(a), dtype=torch.int32)
        write_shard(folder, i, {"acts": a, "tokens": z, "ctx": z.clone(), "pos": z.to(torch.int16), "doc": z.clone()},
                    {"shard": str(i)})
    write_manifest(folder, tensor_manifest(T, D, name), n_shards, T)
    return ActivationCache(folder)


class Activations:
    """What reading activations needs, on disk (`ActivationCache`) or in memory (`TensorActivations`): a manifest
    and shards of rows, read whole, sampled, or shuffled in epochs (`ShuffledCacheLoader`)."""

    manifest: dict
    shard_sizes: list[int]

    @property
    def n_tokens(self) -> int:
        return int(self.manifest["n_tokens"])

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    def read_shard(self, i: int, keys=("acts",)) -> dict[str, torch.Tensor]:
        raise NotImplementedError

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

    def activations(self) -> torch.Tensor:
        """All activations, in order, as float32 (the whole set in RAM: for held-out caches)."""
        return torch.cat([self.read_shard(i)["acts"].float() for i in range(len(self.shard_sizes))])

    def tokens(self) -> torch.Tensor:
        """All token ids, in order (int32; small next to the activations)."""
        return torch.cat([self.read_shard(i, ("tokens",))["tokens"] for i in range(len(self.shard_sizes))])


class TensorActivations(Activations):
    """Activations held in memory ([tokens, d]), read like a cache written by `cache_from_tensor` with the same
    shard size: the same samples, the same shuffled epochs, no files."""

    def __init__(self, acts_TD: torch.Tensor, shard_tokens: int = 65536, name: str = "tensor"):
        acts_TD = torch.as_tensor(acts_TD).detach().float().cpu()
        if acts_TD.ndim != 2:
            raise ValueError(f"expected activations [tokens, d], got shape {tuple(acts_TD.shape)}")
        T, D = acts_TD.shape
        self.acts, self.shard_tokens = acts_TD, shard_tokens
        self.shard_sizes = [len(acts_TD[i:i + shard_tokens]) for i in range(0, max(T, 1), shard_tokens)]
        self.manifest = {**tensor_manifest(T, D, name), "n_tokens": T}

    def read_shard(self, i: int, keys=("acts",)) -> dict[str, torch.Tensor]:
        a = self.acts[i * self.shard_tokens:(i + 1) * self.shard_tokens]
        return {k: a if k == "acts" else torch.zeros(len(a), dtype=torch.int32) for k in keys}


class ActivationCache(Activations):
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

    def shard_files(self) -> list[Path]:
        return [self.folder / s["file"] for s in self.manifest["shards"]]

    def read_shard(self, i: int, keys=("acts",)) -> dict[str, torch.Tensor]:
        with safe_open(self.shard_files()[i], "pt") as f:
            return {k: f.get_tensor(k) for k in keys}


class ShuffledCacheLoader:
    """Shuffled batches from an ActivationCache (or `TensorActivations`) without loading it all into RAM.

    Each epoch permutes the shards, groups them `shards_in_memory` at a time, and permutes the
    rows within each group; batches run across group boundaries. The order depends only on
    (seed, epoch), so a resumed run can jump to any batch, and data-parallel rank r takes rows
    [r*B/W, (r+1)*B/W) of each global batch B.
    """

    def __init__(self, cache: Activations, batch_size: int, seed: int = 0, shards_in_memory: int = 4,
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


DATA_RECORD = ("corpus", "corpus_hash", "split", "context", "exclude_first", "outlier_factor")
"""What an SAE records of its training activations (from the cache's manifest): the evaluations score it on
the same split's held-out documents and splice it at the positions it was trained on."""


def data_record(manifest: dict, provenance: dict | None = None) -> dict | None:
    """The DATA_RECORD fields of a cache manifest (or of a stream's provenance); None when none is known."""
    source = {**manifest, **(provenance or {})}
    record = {k: source[k] for k in DATA_RECORD if k in source}  # unknown fields are left out, not guessed
    return record or None

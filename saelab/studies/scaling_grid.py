"""Scaling grids (Gao et al. 2024, section 3): TopK SAEs over n and k on one activation cache.

Every grid point is the main job's recipe (same batch and epochs for every point; after the warmup a constant
learning rate, as the released code's `training_loop_` keeps one (it has no warmup), unless `schedule='decay'`
asks for the main job's decay) with
the learning rate lr(n) = lr_ref * min(1, (n_ref / n)^lr_exponent): the main job's measured best (3e-3 at
n = 4096) for n up to 4096, falling as 1/sqrt(n) above it (the paper fits its learning rate falling with
n; 1/sqrt(n) is the scaling EleutherAI's sparsify uses). It never rises above the measured value because
a higher one (4e-3 at n = 4096) killed latents on this data, and small n have more tokens per latent.

Each point trains with the main job's `Trainer` into `grid-<id>/n<N>-k<K>/`, logs its held-out
normalized MSE every `eval_every` steps (the L(C) curves), and adds one row to `points.csv`
(rewritten atomically after each point). Killed mid-grid, the same command skips finished
points and a grid extended by another n or k keeps them; any other setting gets another grid id
(`grid.json` records what each grid was asked). A point
that fails is written as a row with status 'failed' and its error, and retried on the next run.

Estimated training FLOPs follow the usual 6 x parameters x tokens with parameters = 2 d n (encoder
and decoder); saelab's sparse backward does less, so this is a dense-equivalent compute axis.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from saelab.acts.cache import ActivationCache
from saelab.evals.reconstruction import reconstruction_metrics
from saelab.files import atomic_write_text
from saelab.flags import check_choices
from saelab.studies.frontier import train_point
from saelab.training.identity import RESUMABLE_CHANGES, run_key
from saelab.training.trainer import TrainConfig, read_log

COLUMNS = ["n", "k", "lr", "tokens", "steps", "flops", "nmse", "l0", "dead_train_frac", "dead_eval_frac",
           "seconds", "status", "error"]


@dataclass
class ScaleConfig:
    """The grid: TopK SAEs at every (n, k) with k < n, on the main job's recipe."""

    ns: str = "512,1024,2048,4096,8192"
    """Comma-separated numbers of latents n (powers of two)."""
    ks: str = "16,32,64"
    """Comma-separated active latents k."""
    epochs: float = 4.0
    """Passes over the training cache for every point (the same tokens for every n)."""
    lr_ref: float = 3e-3
    """Learning rate at n = lr_ref_n (the main job's)."""
    lr_ref_n: int = 4096
    """The n at which lr_ref applies."""
    lr_exponent: float = 0.5
    """lr(n) = lr_ref * min(1, (lr_ref_n / n) ** lr_exponent)."""
    eval_every: int = 25
    """Held-out evaluation every this many steps (points of the L(C) curves)."""
    k_aux: int | None = None
    """AuxK dead latents (None: the default; 0: AuxK off, for the dead-latent ablation)."""
    tied_init: bool = True
    """Encoder initialised as the decoder's transpose (False: independent, for the dead-latent ablation)."""
    schedule: Literal["constant", "decay"] = "constant"
    """Learning rate after the warmup: 'constant' (as the released code's loop, so every evaluation along a run is
    one of a run at full learning rate and the L(C) envelope reads like curves) or 'decay' (the main job's linear
    decay over its last `decay_frac`: end-of-run points gain from the decay, mid-run points do not)."""


def grid_values(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise ValueError(f"expected comma-separated positive integers, got {text!r}")
    return values


def learning_rate(cfg: ScaleConfig, n: int) -> float:
    return cfg.lr_ref * min(1.0, (cfg.lr_ref_n / n) ** cfg.lr_exponent)


def point_config(cfg: ScaleConfig, base: TrainConfig, n: int, k: int) -> TrainConfig:
    """The main job's recipe at (n, k), with lr(n), the grid's epochs and no checkpoints (a point is redone
    whole if killed)."""
    return replace(base, n_latents=n, k=k, lr=learning_rate(cfg, n), epochs=cfg.epochs, eval_every=cfg.eval_every,
                   checkpoint_every=0, keep_checkpoints=0, k_aux=cfg.k_aux if cfg.k_aux is not None else base.k_aux,
                   tied_init=cfg.tied_init, decay_frac=0.0 if cfg.schedule == "constant" else base.decay_frac)


def training_flops(d: int, n: int, tokens: int) -> float:
    """6 x parameters x tokens, parameters = 2 d n (a dense-equivalent count)."""
    return 6.0 * 2 * d * n * tokens


def grid_settings(cfg: ScaleConfig, base: TrainConfig, train_cache: ActivationCache,
                  eval_cache: ActivationCache) -> dict:
    """Everything that decides a point's numbers besides its (n, k): the recipe and the two caches. The lists
    of n and k are left out, so a grid extended by another n or k keeps its finished points."""
    ident = ("model", "model_hash", "site", "layer", "corpus", "corpus_hash", "n_tokens")
    set_per_point = {*RESUMABLE_CHANGES, "n_latents", "k", "lr", "tied_init"}  # `point_config` sets them
    scale = {k: v for k, v in asdict(cfg).items() if k not in ("ns", "ks")}
    if scale["schedule"] == "decay":  # grids from before the option were all 'decay': they keep their id
        del scale["schedule"]
    # options added since 0.2 count only when on: 0.2's grid ids stay
    train = {k: v for k, v in run_key(base, "0.2").items() if k not in set_per_point}
    return {"scale": scale,
            "train": train,
            "train_cache": {k: train_cache.manifest.get(k) for k in ident},
            "eval_cache": {k: eval_cache.manifest.get(k) for k in ident}}


def grid_folder(out: str | Path, settings: dict) -> Path:
    """out/grid-<id>, id a hash of the settings; records them in grid.json the first time."""
    tag = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
    folder = Path(out) / f"grid-{tag}"
    if not (folder / "grid.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "grid.json", json.dumps(settings, indent=1, default=str))
    return folder


def read_points(folder: Path):
    """The grid's points.csv as a DataFrame (empty with the grid's columns when there is none)."""
    import pandas as pd

    path = folder / "points.csv"
    return pd.read_csv(path, keep_default_na=False, na_values=[""]) if path.exists() else pd.DataFrame(columns=COLUMNS)


def run_grid(cfg: ScaleConfig, base: TrainConfig, train_cache: ActivationCache, eval_cache: ActivationCache,
             out: str | Path, progress: bool = True, log=print, device: str = "cpu"):
    """Train and score every (n, k) point not yet finished; returns (DataFrame of all rows, grid folder)."""
    import pandas as pd
    from tqdm.auto import tqdm

    check_choices(cfg)
    settings = grid_settings(cfg, base, train_cache, eval_cache)
    folder = grid_folder(out, settings)
    others = [p.name for p in Path(out).glob("grid-*") if p != folder]
    if others:
        log(f"saelab scale: these settings are grid {folder.name}; {len(others)} other grid(s) in {out} are kept")
    points = [(n, k) for k in grid_values(cfg.ks) for n in grid_values(cfg.ns) if k < n]
    table = read_points(folder)
    done = {(int(r.n), int(r.k)) for r in table.itertuples() if r.status == "ok"}
    todo = [p for p in points if p not in done]
    log(f"saelab scale: {len(points)} points, {len(done & set(points))} already done, {len(todo)} to train "
        f"({folder})")
    d = train_cache.d_model
    for n, k in tqdm(todo, desc="scale grid", unit="point", disable=not progress):
        tcfg = point_config(cfg, base, n, k)
        t0 = time.time()
        row = {"n": n, "k": k, "lr": tcfg.lr}
        try:
            sae = train_point(tcfg, train_cache, folder / f"n{n}-k{k}", progress, eval_cache=eval_cache,
                              device=device)
            r = reconstruction_metrics(sae, eval_cache)
            tokens = int(sae.tokens_seen)
            last = _last_log_record(folder / f"n{n}-k{k}")
            row.update(tokens=tokens, steps=tokens // tcfg.batch_size, flops=training_flops(d, n, tokens),
                       nmse=r["nmse"], l0=r["l0"], dead_train_frac=last.get("dead_frac"),
                       dead_eval_frac=r["dead_eval_frac"], status="ok", error="")
        except Exception as e:  # noqa: BLE001 - a failed point is recorded and reported, the grid goes on
            row.update(status="failed", error=f"{type(e).__name__}: {e}"[:300])
            log(f"saelab scale: point n={n} k={k} failed: {row['error']}")
        row["seconds"] = round(time.time() - t0, 1)
        table = table[~((table.n.astype(int) == n) & (table.k.astype(int) == k))]
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)[COLUMNS]
        table = table.sort_values(["k", "n"]).reset_index(drop=True)
        atomic_write_text(folder / "points.csv", table.to_csv(index=False))
    table = read_points(folder)  # as written: the same types whether points were trained now or before
    wanted = set(points)
    asked = [(int(n), int(k)) in wanted for n, k in zip(table.n, table.k)]
    return table[asked].reset_index(drop=True), folder


def _last_log_record(point_folder: Path) -> dict:
    log = point_folder / "log.jsonl"
    recs = [r for r in read_log(log) if "dead_frac" in r] if log.exists() else []
    return recs[-1] if recs else {}


def loss_curves(folder: Path, d: int):
    """Held-out normalized MSE against tokens and estimated FLOPs for every finished point (the L(C) data)."""
    import pandas as pd

    rows = []
    for r in read_points(folder).itertuples():
        if r.status != "ok":
            continue
        for rec in read_log(folder / f"n{int(r.n)}-k{int(r.k)}" / "log.jsonl"):
            if "eval_nmse" in rec:
                rows.append({"n": int(r.n), "k": int(r.k), "tokens": rec["tokens"],
                             "flops": training_flops(d, int(r.n), rec["tokens"]), "nmse": rec["eval_nmse"]})
    return pd.DataFrame(rows, columns=["n", "k", "tokens", "flops", "nmse"])


ABLATION_VARIANTS = {"AuxK + tied init": {"k_aux": None, "tied_init": True},
                     "no AuxK": {"k_aux": 0, "tied_init": True},
                     "no tied init": {"k_aux": None, "tied_init": False},
                     "neither": {"k_aux": 0, "tied_init": False}}


def dead_latent_ablation(cfg: ScaleConfig, base: TrainConfig, train_cache: ActivationCache,
                         eval_cache: ActivationCache, out: str | Path, progress: bool = True, log=print,
                         device: str = "cpu"):
    """The paper's ablation (section 2.4): the grid of `cfg` once per variant (AuxK and the transpose
    initialisation on or off); returns one row per (variant, n, k) with the dead fractions."""
    import pandas as pd

    frames = []
    for variant, change in ABLATION_VARIANTS.items():
        table, _ = run_grid(replace(cfg, **change), base, train_cache, eval_cache, out, progress, log, device)
        frames.append(table.assign(variant=variant))
    return pd.concat(frames, ignore_index=True)


def scale_defaults(fast: bool, ablation: bool = False) -> ScaleConfig:
    """The documented grids: full (about 30 min on a 2-core CPU) and fast (CI, under 2 min); the ablation
    puts many latents on few tokens, where dead latents appear."""
    if ablation:
        return ScaleConfig(ns="256,1024", ks="8", epochs=2.0) if fast else \
            ScaleConfig(ns="4096,16384", ks="8", epochs=1.0)
    return ScaleConfig(ns="64,128,256,512", ks="8,16", epochs=4.0, eval_every=7) if fast else ScaleConfig()

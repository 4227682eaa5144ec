"""How an SAE does on text it was not trained on: normalized MSE and Δ CE per corpus, side by side.

An SAE trained on one register (encyclopedia summaries, say) can reconstruct other English text much worse;
the paper trains on broad web text for this reason. `domain_table` scores SAEs on several embedded corpora:
on the test documents of a corpus that shares documents with the one the SAE's data record names (the same
corpus, a part of its mixture, the mixture of one of its parts), on all of the documents of any other corpus
(the SAE never saw them). `saelab domains` runs it.

Each SAE is scored with its own harvest's positions rule (`recorded_positions`); a corpus's activations are
harvested once per rule into the cache, as any harvest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from saelab.acts.corpus import build_contexts, load_corpus
from saelab.acts.harvest import HarvestConfig, harvest
from saelab.acts.texts import MIXTURE_PARTS, OUT_OF_MIXTURE
from saelab.evals.downstream import downstream_loss
from saelab.evals.reconstruction import reconstruction_metrics
from saelab.evals.splice import SpliceSite, heldout_context, recorded_positions

DOMAIN_CORPORA = ("english-mix", *MIXTURE_PARTS, *OUT_OF_MIXTURE)


@dataclass
class DomainConfig:
    """Which corpora and how much of each."""

    corpora: str = ",".join(DOMAIN_CORPORA)
    """Comma-separated embedded corpora to score on."""
    tokens: int = 16_000
    """Activations per corpus for the normalized MSE."""
    delta_ce_contexts: int = 128
    """Contexts of 64 tokens per corpus for Δ CE (0: skip the splice)."""


def shares_documents(sae, corpus: str) -> bool:
    """True when `corpus` holds documents of the corpus the SAE's data record names: the same corpus, a part of
    its mixture, or the mixture of which it trained on a part. Those corpora are scored on their test split."""
    record = (sae.data_record or {}).get("corpus")
    if record is None:
        return False
    family = {"english-mix", *MIXTURE_PARTS}
    if record not in family:  # e.g. wiki-multi: its documents may be in any corpus but the out-of-mixture ones
        return corpus not in OUT_OF_MIXTURE
    pair = {record, corpus}
    return record == corpus or (pair <= family and "english-mix" in pair)


def domain_table(saes: dict, lm, cfg: DomainConfig | None = None, progress: bool = False):
    """A DataFrame, one row per (SAE, corpus): split, tokens, nmse, l0 and (with contexts) delta_ce, kl,
    loss_recovered, plus nmse_ratio: nmse over the same SAE's nmse on its own training corpus's test split."""
    import pandas as pd

    cfg = cfg or DomainConfig()
    corpora = [c for c in cfg.corpora.split(",") if c]
    rows = []
    for name, sae in saes.items():
        for corpus in corpora:
            split = "test" if shares_documents(sae, corpus) else "all"
            context = heldout_context([sae])  # the SAE's recorded held-out fraction and seed
            hcfg = replace(HarvestConfig(), model=sae.cfg.model or "smollm2-135m", site=sae.cfg.site or "resid_post",
                           layer=sae.cfg.layer, corpus=corpus, split=split, context=context, max_tokens=cfg.tokens,
                           device=str(sae.W_enc.device), **recorded_positions(sae))
            r = reconstruction_metrics(sae, harvest(hcfg, lm=lm, progress=progress))
            row = {"sae": name, "corpus": corpus, "split": split, "tokens": r["tokens"], "nmse": r["nmse"],
                   "l0": r["l0"]}
            if cfg.delta_ce_contexts:
                toks = build_contexts(load_corpus(corpus), lm.tokenizer, context, split,
                                      cfg.delta_ce_contexts).tokens_NT
                d = downstream_loss(lm, sae, torch.from_numpy(toks).long(), SpliceSite.of(sae, lm), progress=progress)
                row.update(delta_ce=d["delta_loss"], kl=d["kl"], loss_recovered=d["loss_recovered"])
            rows.append(row)
    df = pd.DataFrame(rows)
    home = {name: (sae.data_record or {}).get("corpus") for name, sae in saes.items()}
    base = {n: df[(df.sae == n) & (df.corpus == c)].nmse.mean() for n, c in home.items()}
    df["nmse_ratio"] = [float("nan") if math.isnan(base[r.sae]) else r.nmse / base[r.sae] for r in df.itertuples()]
    return df

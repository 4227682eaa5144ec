"""Text corpora and their tokenisation into fixed-length contexts.

Embedded corpora (offline, from pinned PyPI wheels; `saelab.acts.texts` lists and credits them):
``english-mix`` (the default: Wikipedia summaries, news and House of Commons speeches), its parts ``wiki-en``
(with 12 ``topic`` labels), ``news`` and ``parliament-en``; ``tweets-en`` and ``python-docs`` (other registers,
for out-of-domain evaluation); ``wiki-es``, ``wiki-fr``, ``wiki-multi``; ``synthetic`` (seeded random words).

Any other name is taken as a Hugging Face hub dataset id and streamed (needs a network).

Context policy (``ContextConfig``), the same for harvesting, evaluation and the explorer:

- ``pack`` (default, as in the paper's 64-token contexts): documents are tokenised without special
  tokens, each followed by ``<|endoftext|>`` (or the tokenizer's EOS when it has none), concatenated, and cut
  into windows of ``ctx_len`` tokens; a window may span a document boundary, as in LM pre-training.
  The last partial window is dropped. Position 0 of each window sees no context (attention-sink
  token); harvesting excludes it by default.
- ``document``: each document is cut into its own windows (no cross-document attention); documents
  shorter than ``ctx_len`` are dropped.

Train / held-out split: a document is held out when a hash of (seed, its title or index) falls
below ``heldout_fraction``: deterministic, independent of order, and never splits a document. The held-out
documents are halved by the same hash into ``validation`` (what settings are tuned and calibrated on, and
the curves a run logs) and ``test`` (what reports state); ``heldout`` is both halves.

Document order: shuffled with ``seed`` (``ContextConfig.shuffle``), so that any prefix of a split
(the first 400k harvested tokens, the first contexts an evaluation reads) is a sample of the whole
corpus. The embedded Wikipedia file is sorted by topic: in file order the first 400k training
tokens cover 5 of its 12 topics while the held-out documents cover all 12. Streamed hub datasets
have no random access and keep their own order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from saelab.acts.texts import READERS

EMBEDDED_CORPORA = tuple(READERS)
DEFAULT_CORPUS = "english-mix"
Split = Literal["train", "heldout", "validation", "test", "all"]
SPLITS = ("train", "heldout", "validation", "test", "all")


def load_corpus(name: str = DEFAULT_CORPUS, streaming: bool = True, config: str | None = None, split: str = "train"):
    """A corpus as a `datasets.Dataset` (embedded names) or a streamed hub dataset (any other id, with its
    `config` and `split`, e.g. load_corpus("wikitext", config="wikitext-103-raw-v1"))."""
    import datasets

    if name in READERS:
        return datasets.Dataset.from_list(READERS[name]())
    from saelab.lm.hub import check_hub_name

    check_hub_name(name, "dataset", EMBEDDED_CORPORA)
    try:
        return datasets.load_dataset(name, config, split=split, streaming=streaming)
    except Exception as e:  # noqa: BLE001 - the hub raises many types; all mean the same to a user
        raise RuntimeError(
            f"could not load corpus {name!r}: not an embedded corpus ({', '.join(EMBEDDED_CORPORA)}) and "
            f"the hub is unreachable or the id is wrong ({e.__class__.__name__}: {e})"
        ) from e


@dataclass
class ContextConfig:
    """How text becomes fixed-length token contexts (see the module docstring)."""

    ctx_len: int = 64
    """Tokens per context (the paper: 64)."""
    policy: Literal["pack", "document"] = "pack"
    """'pack': EOS-separated documents cut into windows; 'document': windows within each document."""
    heldout_fraction: float = 0.05
    """Fraction of documents held out for evaluation (chosen by hash, deterministic)."""
    seed: int = 0
    """Seed of the held-out hash and of the document order."""
    shuffle: bool = True
    """Visit documents in a seeded random order, so that a prefix of a split samples the whole corpus
    (the embedded Wikipedia file is sorted by topic); streamed hub datasets keep their order."""
    max_docs: int | None = None
    """Use only the first N documents of the corpus (None: all)."""
    text_column: str = "text"
    """Column holding the text (hub datasets may differ)."""


def _unit_hash(key: str, seed: int) -> float:
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def is_heldout(key: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic document-level split: hash (seed, key) to [0, 1) and compare with `fraction`."""
    return _unit_hash(key, seed) < fraction


def split_of(key: str, fraction: float, seed: int = 0) -> str:
    """'train', or for a held-out document 'validation' (the lower half of the held-out hashes: tuning,
    calibration, curves during training) or 'test' (the upper half: the numbers a report states)."""
    u = _unit_hash(key, seed)
    return "train" if u >= fraction else "validation" if u < fraction / 2 else "test"


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)} ('heldout' is validation + test)")


def document_order(rows, cfg: ContextConfig) -> list[int] | None:
    """Corpus indices in visiting order (seeded shuffle), or None to stream in the corpus's own order."""
    if not (hasattr(rows, "__len__") and hasattr(rows, "__getitem__")):
        return None  # a streamed dataset: no random access
    n = len(rows) if cfg.max_docs is None else min(len(rows), cfg.max_docs)
    if not cfg.shuffle:
        return list(range(n))
    return np.random.default_rng(cfg.seed).permutation(n).tolist()


def select_split(rows: Iterable[dict], cfg: ContextConfig, split: Split):
    """Yield (doc_index, row) of the documents in `split`, keyed on title when there is one.

    doc_index is always the document's index in the corpus, whatever the visiting order."""
    check_split(split)
    order = document_order(rows, cfg)
    if order is None:
        items = enumerate(rows)
    elif hasattr(rows, "select"):  # a datasets.Dataset: one indexed view instead of n lookups
        items = zip(order, rows.select(order))
    else:
        items = ((i, rows[i]) for i in order)
    for j, (i, row) in enumerate(items):
        if order is None and cfg.max_docs is not None and j >= cfg.max_docs:
            return
        if split != "all":
            part = split_of(str(row.get("title") or i), cfg.heldout_fraction, cfg.seed)
            if part != split and not (split == "heldout" and part != "train"):
                continue
        yield i, row


@dataclass
class Contexts:
    """Token contexts: ids and the corpus index of the document each token comes from."""

    tokens_NT: np.ndarray  # int32 [n_contexts, ctx_len]
    doc_NT: np.ndarray  # int32 [n_contexts, ctx_len]; -1 for separators

    def __len__(self) -> int:
        return len(self.tokens_NT)


def separator_id(tokenizer) -> int:
    """The document separator: ``<|endoftext|>`` when the vocabulary has it (pre-training style), else EOS."""
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return vocab["<|endoftext|>"]
    sep = tokenizer.eos_token_id
    if sep is None:
        raise ValueError("the tokenizer has no EOS token to separate documents; set tokenizer.eos_token")
    return sep


def iter_contexts(docs: Iterable[tuple[int, str]], tokenizer, cfg: ContextConfig,
                  batch_docs: int = 256) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (tokens_T, doc_T) windows from (doc_index, text) pairs, following ``cfg.policy``."""
    sep = separator_id(tokenizer)
    T = cfg.ctx_len
    buf_tok: list[int] = []
    buf_doc: list[int] = []
    batch: list[tuple[int, str]] = []

    def flush(batch):
        enc = tokenizer([t for _, t in batch], add_special_tokens=False)["input_ids"]
        for (doc, _), ids in zip(batch, enc):
            if cfg.policy == "document":
                for s in range(0, len(ids) - T + 1, T):
                    yield np.asarray(ids[s:s + T], np.int32), np.full(T, doc, np.int32)
                continue
            buf_tok.extend(ids)
            buf_tok.append(sep)
            buf_doc.extend([doc] * len(ids))
            buf_doc.append(-1)
            while len(buf_tok) >= T:
                yield np.asarray(buf_tok[:T], np.int32), np.asarray(buf_doc[:T], np.int32)
                del buf_tok[:T], buf_doc[:T]

    if cfg.policy not in ("pack", "document"):
        raise ValueError(f"unknown context policy {cfg.policy!r}; use 'pack' or 'document'")
    for item in docs:
        batch.append(item)
        if len(batch) == batch_docs:
            yield from flush(batch)
            batch = []
    if batch:
        yield from flush(batch)


def build_contexts(corpus, tokenizer, cfg: ContextConfig | None = None,
                   split: Split = "train",
                   max_contexts: int | None = None) -> Contexts:
    """Tokenise a corpus split into a `Contexts` array (in corpus order)."""
    cfg = cfg or ContextConfig()
    docs = ((i, row[cfg.text_column]) for i, row in select_split(corpus, cfg, split))
    toks, dids = [], []
    for t, d in iter_contexts(docs, tokenizer, cfg):
        toks.append(t)
        dids.append(d)
        if max_contexts is not None and len(toks) >= max_contexts:
            break
    T = cfg.ctx_len
    if not toks:
        return Contexts(np.zeros((0, T), np.int32), np.zeros((0, T), np.int32))
    return Contexts(np.stack(toks), np.stack(dids))


def corpus_fingerprint(corpus_name: str, cfg: ContextConfig) -> str:
    """A short hash naming the corpus and context policy, recorded in caches to refuse mismatches."""
    key = json.dumps({"corpus": corpus_name, **cfg.__dict__}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]

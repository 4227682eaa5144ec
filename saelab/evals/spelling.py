"""SAEBench's first-letter spelling task: in-context prompts, the residual at the word, a linear probe per letter.

The data of the absorption metric (`saelab.evals.absorption`), as SAEBench 0.6.0's `evals/absorption` builds it:
- words: every token whose text, after at most one leading space, is non-empty ASCII letters (`alphabetic_tokens`);
  split 80/20 by word;
- prompts: 10 in-context examples `"{word} has the first letter: X"` joined by newlines, then the query
  `"{word} has the first letter:"` with no answer; the examples come from the same split and never hold the query;
- the residual at the query word's token (the last token before the template's 5, SAEBench's position -6);
- the ground-truth probe: one `Linear(d, 26)` trained as 26 one-vs-rest logistic probes (BCE with
  pos_weight = negatives / positives), Adam lr 1e-2 decaying exponentially to 1e-5 over 50 epochs, weight decay
  1e-4, batch 64, no input normalisation; a word is predicted positive for a letter when the logit is > 0.

Where saelab differs, and why:
- `max_words` (default 4,000) words are sampled (seeded) instead of all of them: SmolLM2's vocabulary has 47,078
  such tokens, 86 tokens per prompt: about 45 minutes on this project's 2-core CPU (4,000 took 3.9).
- prompts are built from token ids (the word's own token, then the template's tokens), not by re-tokenising text,
  so the query word is exactly one token at a known position (a SentencePiece tokenizer may still add a marker token
  to the template tokenised alone); no BOS token is prepended
  (SAEBench's TransformerLens prepends one) because saelab's harvest, which the SAEs trained on, prepends none.
- SAEBench leaves its seed unused; here the split, the sample and the examples follow `seed`. An example word is
  kept out of its own prompt by token id (SAEBench: by text).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from saelab.lm.models import LM
from saelab.lm.sites import run_to_site

LETTERS = "abcdefghijklmnopqrstuvwxyz"
TEMPLATE = " has the first letter:"
"""What follows the word in every prompt (SAEBench's "{word} has the first letter:")."""


def alphabetic_tokens(tokenizer) -> list[tuple[int, str]]:
    """(token id, text) of every token whose text, less at most one leading space, is non-empty ASCII letters."""
    ids = sorted(set(tokenizer.get_vocab().values()))
    words = []
    for i in ids:
        text = tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(i)])
        core = text[1:] if text.startswith(" ") else text
        if core and core.isascii() and core.isalpha():
            words.append((i, text))
    return words


def first_letter(word: str) -> int:
    """Index in LETTERS of the word's first letter."""
    return LETTERS.index(next(c for c in word if c.isalpha()).lower())


@dataclass
class SpellingConfig:
    """The spelling prompts and the ground-truth probe."""

    max_words: int = 4000
    """Words sampled from the alphabetic tokens (SAEBench: all; see the module docstring)."""
    icl_examples: int = 10
    """In-context examples before the query word."""
    test_frac: float = 0.2
    """Share of the words held out: the probes' F1 and the absorption scores are read on them."""
    batch_size: int = 32
    """Prompts per forward pass."""
    probe_epochs: int = 50
    """Epochs of the ground-truth probe."""
    probe_batch_size: int = 64
    """Its batch size."""
    probe_lr: float = 1e-2
    """Its first learning rate (Adam), decaying exponentially to `probe_end_lr`."""
    probe_end_lr: float = 1e-5
    """Its last learning rate."""
    probe_weight_decay: float = 1e-4
    """Its weight decay."""
    seed: int = 0
    """Seed of the word sample, the split, the examples and the probes' init and batches."""


@dataclass
class SpellingData:
    """The residual at the query word of one prompt per word."""

    x_WD: torch.Tensor
    letter_W: torch.Tensor
    """First letter (0-25)."""
    test_W: torch.Tensor
    """True for the test split."""
    words: list[str]


def prompt_ids(tokenizer, word_id: int, examples: list[tuple[int, str]]) -> tuple[list[int], int]:
    """(token ids, index of the query word) of one in-context spelling prompt."""
    tmpl = tokenizer(TEMPLATE, add_special_tokens=False)["input_ids"]
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    for ex_id, ex_text in examples:
        answer = tokenizer(" " + LETTERS[first_letter(ex_text)].upper(), add_special_tokens=False)["input_ids"]
        ids += [ex_id, *tmpl, *answer, *newline]
    ids += [word_id, *tmpl]
    return ids, len(ids) - 1 - len(tmpl)


def _prompts(tokenizer, words: list[tuple[int, str]], pool: list[tuple[int, str]], n_examples: int,
             g: torch.Generator) -> tuple[torch.Tensor, int]:
    rows, pos = [], None
    for wid, _text in words:
        pick = torch.randperm(len(pool), generator=g)[: n_examples + 1].tolist()
        examples = [pool[j] for j in pick if pool[j][0] != wid][:n_examples]
        ids, p = prompt_ids(tokenizer, wid, examples)
        if pos is not None and (p != pos or len(ids) != len(rows[0])):
            raise ValueError("spelling prompts differ in length: the letters' answer tokens are not all the same "
                             "length in this tokenizer")
        rows.append(ids)
        pos = p
    return torch.tensor(rows, dtype=torch.long), pos


@torch.no_grad()
def collect_spelling(lm: LM, site: str, layer: int, cfg: SpellingConfig | None = None,
                     progress: bool = False) -> SpellingData:
    """Sample words, split them, build one prompt per word and read the residual at (site, layer) at the word."""
    cfg = cfg or SpellingConfig()
    g = torch.Generator().manual_seed(cfg.seed)
    vocab = alphabetic_tokens(lm.tokenizer)
    if len(vocab) < 2 * (cfg.icl_examples + 1):
        raise ValueError(f"{lm.name}'s tokenizer has {len(vocab)} alphabetic tokens: too few for spelling prompts")
    chosen = [vocab[i] for i in torch.randperm(len(vocab), generator=g)[: cfg.max_words].tolist()]
    n_test = max(1, round(cfg.test_frac * len(chosen)))
    train, test = chosen[:-n_test], chosen[-n_test:]
    if min(len(train), len(test)) <= cfg.icl_examples:
        raise ValueError(f"{len(chosen)} words split {len(train)}/{len(test)}: each split needs more than "
                         f"icl_examples={cfg.icl_examples} words for its prompts; raise max_words")
    xs = []
    for part in (train, test):
        toks, pos = _prompts(lm.tokenizer, part, part, cfg.icl_examples, g)
        limit = getattr(lm.model.config, "max_position_embeddings", None) or getattr(lm.model.config, "n_positions",
                                                                                     None)
        if limit and toks.shape[1] > limit:
            raise ValueError(f"spelling prompts of {cfg.icl_examples} examples are {toks.shape[1]} tokens, more than "
                             f"{lm.name}'s {limit} positions: lower SpellingConfig.icl_examples")
        steps = range(0, len(toks), cfg.batch_size)
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc="spelling prompts", leave=False)
        for s in steps:
            xs.append(run_to_site(lm, toks[s:s + cfg.batch_size], site, layer)[:, pos].float().cpu())
    words = train + test
    return SpellingData(x_WD=torch.cat(xs), letter_W=torch.tensor([first_letter(t) for _, t in words]),
                        test_W=torch.arange(len(words)) >= len(train), words=[t for _, t in words])


def train_multi_probe(x_MF: torch.Tensor, y_M: torch.Tensor, epochs: int, batch_size: int, lr: float, end_lr: float,
                      weight_decay: float, l1: float = 0.0, seed: int = 0) -> torch.nn.Linear:
    """26 one-vs-rest logistic probes in one Linear(F, 26): BCE with pos_weight = negatives / positives per letter,
    Adam with the learning rate decaying exponentially from lr to end_lr over the epochs; `l1` adds
    l1 * (mean over letters of the L1 norm of a letter's weights) to every batch's loss (SAEBench's k-sparse probe)."""
    y = torch.nn.functional.one_hot(y_M, len(LETTERS)).float()
    pos = y.sum(0)
    with torch.random.fork_rng(devices=[]):  # a seeded init that leaves the caller's RNG alone
        torch.manual_seed(seed)
        probe = torch.nn.Linear(x_MF.shape[1], len(LETTERS))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=(len(y) - pos) / pos.clamp_min(1))
    opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=math.exp(math.log(end_lr / lr) / epochs))
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(batch_size):
            loss = loss_fn(probe(x_MF[idx]), y[idx])
            if l1:
                loss = loss + l1 * probe.weight.abs().sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return probe


def letter_probe(data: SpellingData, cfg: SpellingConfig | None = None) -> torch.nn.Linear:
    """The ground-truth probe, trained on the train split's residuals."""
    cfg = cfg or SpellingConfig()
    tr = ~data.test_W
    return train_multi_probe(data.x_WD[tr], data.letter_W[tr], cfg.probe_epochs, cfg.probe_batch_size, cfg.probe_lr,
                             cfg.probe_end_lr, cfg.probe_weight_decay, seed=cfg.seed)


def f1_scores(pred_WL: torch.Tensor, letter_W: torch.Tensor) -> torch.Tensor:
    """[26] F1 of each letter's one-vs-rest predictions (bool [W, 26]); 0 where a letter has no true positive."""
    y = torch.nn.functional.one_hot(letter_W, len(LETTERS)).bool()
    tp = (pred_WL & y).sum(0).float()
    return 2 * tp / ((pred_WL.sum(0) + y.sum(0)).float().clamp_min(1))


def binary_f1(pred_W: torch.Tensor, true_W: torch.Tensor) -> float:
    """F1 of bool predictions against bool labels (0 when there is no positive in either)."""
    tp = float((pred_W & true_W).sum())
    return 2 * tp / max(1.0, float(pred_W.sum() + true_W.sum()))

# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Training a TopK sparse autoencoder
#
# **Prerequisites**: notebooks 00 (an SAE on toy data) and 01 (the activation cache this one trains on);
# Adam and a training loop in PyTorch.
#
# **What you will learn**
# 1. the TopK SAE of Gao et al. (2024), piece by piece: the TopK activation, the paper's normalized MSE, the AuxK loss that revives dead latents (exercises with checks that explain mistakes; solutions a click away);
# 1b. to build your own TopK SAE and its training loop from those pieces (transpose initialisation, unit-norm decoder, AuxK, Multi-TopK), checked against saelab's `Trainer` (exercises 2.4-2.6, one of them hard), then to train it on notebook 01's cache and save it for notebook 03;
# 2. how saelab trains the real thing (sparse kernels, Adam as in the paper, unit-norm decoder), and how to read its loss and dead-latent curves;
# 3. the sparsity-reconstruction trade-off: TopK against the classic ReLU + L1 SAE at a matched L0;
# 4. what AuxK and the transpose initialisation do to dead latents.
#
# **Learner time**: about 105 minutes (30 reading at ~130 words a minute, 75 for the essential exercises), beside the compute time below.
#
# **Time** (measured on a 2-core CPU, 2026-12-02; `scripts/run_series.py` from an empty cache): about 3 minutes in fast mode (`SAELAB_FAST=1`) and 7.7 minutes at full size after notebook 01 (no harvest: it opens 01's cache), of which about 1 minute trains your own loop on the real cache, 1.4 minutes the course's TopK SAE (the first time only; the whole notebook took 6.3 minutes on a second run) and 5.1 minutes the nine comparison runs of parts 3 and 4.
# GPU: not measured yet (no GPU was lent while these were measured); `DEVICE = "auto"` uses one when present.
#
# **Paper**: Gao et al. (2024), section 2.1 (setup, normalized MSE, input normalisation), 2.2 (the ReLU + L1
# baseline), 2.3 (TopK, and its frontier against ReLU, Figure 2a), 2.4 (dead latents: AuxK, initialisation),
# appendix A.1 (initialisation) and A.2 (AuxK details). Section numbers follow arXiv 2406.04093v1 as quoted in
# third-party copies of its text (the PDF itself was not reachable when this was checked). Checked against a
# verbatim excerpt: sections 2.2 (equation 1), 2.3 (equation 2, Figure 2a) and 2.4 (up to 90% dead latents with no
# mitigation, its Figure 15; 7% in its 16M-latent SAE; AuxK detailed in A.2). Not checked against the paper's text:
# what section 2.1 says about normalized MSE and input normalisation, appendix A.1, Adam's settings, $\alpha = 1/32$
# and Multi-TopK's $L(k) + L(4k)/8$ in section 5.3 (Adam's settings match the released training loop's; the others
# match third-party summaries). Every other number is saelab's own measurement and says which run it comes from.

# %% tags=["parameters"]
# Parameters
import os

FAST = os.environ.get("SAELAB_FAST", "") not in ("", "0", "false")
MODEL = "smollm2-135m"
CORPUS = "english-mix"                         # the main job's mixture (each figure below names its data)
MAX_TOKENS = 8_000 if FAST else 400_000      # the cache notebook 01 harvested (the main job's): no new harvest
EVAL_TOKENS = 4_000 if FAST else 16_000      # its validation tokens
BUILD_STEPS = 150 if FAST else 300           # steps of your own SAE's loop on the toy data (part 1b)
MY_STEPS = 40 if FAST else 300               # steps of your loop on the real cache (part 2)
MY_TOKENS = 8_000 if FAST else 120_000       # a random sample of the cache for it (in memory, fp32)
MY_N_LATENTS = 512 if FAST else 4096
K = 32
LR = 3e-3                                    # your loop's; see "The learning rate" in part 2
COMPARE_EPOCHS = 1.0                         # for the comparison runs of parts 3 and 4
DEVICE = "auto"                              # "auto": CUDA when present, else CPU
L1_COEFS = (0.1, 0.15, 0.2)                  # ReLU + L1 baselines to match TopK's L0

# %% [markdown]
# ## Part 1 · The pieces (exercises)
#
# A TopK SAE encodes an activation $x$ as $z = \mathrm{ReLU}(\mathrm{TopK}(W_{enc}(x - b_{pre}) + b_{enc}))$ and decodes $\hat x = \sum_i z_i\, d_i + b_{pre}$, a sum of decoder rows $d_i$ (saelab stores $W_{dec}$ as `[n, d]`, one row per latent, so in code `x_hat = z @ W_dec + b_pre`). The paper's section 2.3 (its equation 2) writes the encoder as $\mathrm{TopK}(W_{enc}(x - b_{pre}))$, without $b_{enc}$ or the ReLU; its released code and saelab keep both.
# TopK keeps the $k$ largest pre-activations of each token and zeroes the rest; the ReLU after it also zeroes any of those $k$ that are negative, so the L0 (active latents per token) is **at most** $k$ (in practice it is $k$ almost always).
# Sparsity comes from the activation, not from an L1 penalty, so nothing in the loss pulls the kept activations towards zero, and TopK shows much less *shrinkage* than a ReLU + L1 SAE: refined on their own support, TopK's activations grow 2% on the course's SAE, the ReLU + L1 SAE's 88% (notebook 04).
#
# ### Exercise 2.1 — TopK activation (easy, essential, 5 min)
# Replace the `todo` line of `topk_activation` with your own code (`torch.topk` helps), then run the cell: the check tells you what is wrong.

# %%
import torch
from saelab.teach.exercises import check_auxk_loss, check_normalized_mse, check_topk_activation, todo


def topk_activation(pre_BN: torch.Tensor, k: int) -> torch.Tensor:
    """Dense [batch, n] output: the k largest pre-activations per row, ReLU'd; zeros elsewhere."""
    # YOUR CODE HERE (2 lines), then delete the next line
    todo("2.1")


check_topk_activation(topk_activation)


# %% [markdown]
# <details><summary>Hint</summary>
#
# Two steps. First find, for every row, *which* k entries are largest and what they are: which dimension holds a
# row's n latents, and what shapes come back (values and positions, both `[B, k]`)? Then build the dense output:
# everything zero except those positions, where the kept values go, after the ReLU. Look in the PyTorch docs for a
# tensor method that writes values at given positions along one dimension. The check also tries k = 1, k = n, a batch
# of one row and ties, and backpropagates through your output.
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# top = pre_BN.topk(k, dim=-1)
# return torch.zeros_like(pre_BN).scatter(-1, top.indices, top.values.relu())
# ```
# </details>
#
# ### Exercise 2.2 — normalized MSE (easy, essential, 5 min)
# The paper reports **normalized MSE**: the MSE divided by the MSE of a baseline that always predicts the mean activation. Predicting the mean scores 1, a perfect reconstruction 0.
# Return it as a 0-dim **tensor** that keeps its gradient (no `.item()` or `float()`): it is the training loss of
# exercise 2.6.
# (Beware: openai/sparse_autoencoder's `loss.py` computes something else: each token's squared error divided by that
# token's own uncentred $\|x\|^2$, averaged over tokens; their issue #8 asks about the difference from the
# paper's definition. saelab follows the paper.)

# %%
def normalized_mse(recon_BD: torch.Tensor, x_BD: torch.Tensor) -> torch.Tensor:
    """A 0-dim tensor, not a Python number: the gradient must flow back to recon_BD (2.3 and 2.6 train through it).
    The baseline predicts the mean of x_BD (the second argument); both MSEs are means over the batch (divide by B)."""
    # YOUR CODE HERE (2 lines), then delete the next line
    todo("2.2")


check_normalized_mse(normalized_mse)


# %% [markdown]
# <details><summary>Hint</summary>
#
# The baseline is a predictor too: it answers every row with the same vector. Which vector, and over which
# dimension do you take it? Then compare the two predictors' errors, summed over d and averaged over the batch.
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# mse = (recon_BD - x_BD).pow(2).sum(-1).mean()
# return mse / (x_BD - x_BD.mean(0)).pow(2).sum(-1).mean()
# ```
# </details>
#
# The whole SAE, with the AuxK branch you are about to write below it (the same drawing as notebook 00's, from
# `saelab.teach.diagrams`):

# %%
from saelab.teach.diagrams import sae_diagram

sae_diagram(auxk=True)

# %% [markdown]
# ### Exercise 2.3 — the AuxK loss (medium, essential, 15 min)
# A latent that has not fired for a long time is **dead**: it gets no gradient from the reconstruction, so nothing
# pulls it back (it returns only if the other latents' changes happen to let its pre-activation into the top k). AuxK (paper, appendix A.2) gives dead latents a job: reconstruct the *residual* $e = x - \hat x$ with the top-$k_{aux}$ dead latents, and add $\alpha \cdot$ that normalized MSE to the loss ($\alpha = 1/32$).
# The residual has no bias, so the dead latents' reconstruction is `z_aux @ W_dec` **without** $b_{pre}$ (adding it is a real bug: EleutherAI sparsify #132). Detach $e$: AuxK must not change the main reconstruction.
# `auxk_loss` returns the normalized MSE alone, **without** $\alpha$: the training loop (exercise 2.6) multiplies it
# by its `aux_coef`. Like 2.2 it returns a 0-dim tensor whose gradient reaches the dead latents' pre-activations and
# decoder rows. Each token keeps at most `k_aux` dead latents (fewer when fewer are dead; `k_aux` may exceed their
# number, or even n). You may assume at least one latent is dead: 2.6 calls `auxk_loss` only then.

# %%
def auxk_loss(x_BD, recon_BD, pre_BN, dead_N, W_dec_ND, k_aux):
    """W_dec_ND: decoder rows [n, d]; dead_N: bool [n] mask of dead latents (at least one True).
    Returns a 0-dim tensor: the normalized MSE of the residual's reconstruction, not multiplied by alpha."""
    # YOUR CODE HERE (about 5 lines; use your normalized_mse), then delete the next line
    todo("2.3")


check_auxk_loss(auxk_loss)

# %% [markdown]
# <details><summary>Hint</summary>
#
# Four steps: the residual (detached); the pre-activations with every live latent set to `-inf`, so only dead
# ones can win; the top `k_aux` of those (never more than the number of dead latents), ReLU'd, as a dense code;
# that code decoded by `W_dec_ND` with no bias, scored with your `normalized_mse` against the residual.
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# resid = (x_BD - recon_BD).detach()
# masked = pre_BN.masked_fill(~dead_N, float("-inf"))
# top = masked.topk(min(k_aux, int(dead_N.sum())), dim=-1)
# z = torch.zeros_like(pre_BN).scatter(-1, top.indices, top.values.relu())
# return normalized_mse(z @ W_dec_ND, resid)
# ```
# </details>
#
# ## Part 1b · Build your own TopK SAE (exercises 2.4-2.6)
#
# You now have the three pieces. Assemble them into an SAE of your own and a training loop, then compare it with
# saelab's `Trainer` on the same data and seed: the check passes when your held-out normalized MSE is within 10% of
# `Trainer`'s, and says what is missing when it is not. Everything here runs on the toy data of notebook 00, in
# seconds.
#
# ### Exercise 2.4 — the model (medium, essential, 15 min)
# Write `MyTopKSAE(d, n, k, seed)`: four `nn.Parameter`s `W_enc`, `W_dec` (both `[n, d]`, one row per latent),
# `b_enc` (`[n]`) and `b_pre` (`[d]`), initialised as the paper does (section 2.4 and appendix A.1: random unit-norm decoder rows, the
# encoder as the decoder's transpose, biases at zero). The random rows: standard normal entries (`torch.randn`)
# drawn from `torch.Generator().manual_seed(seed)`, each row then scaled to unit norm, so each row points in a
# uniformly random direction; the same seed must give the same weights, another seed other weights. Store `k` as
# `self.k`. `forward(x, k=None)` returns the tuple `(recon, x_n, pre, z)`: the input normalised as in section 2.1,
# the pre-activations `[B, n]`, the codes of your `topk_activation` (with the `k` argument when given, else
# `self.k`), and the reconstruction of `x_n`. `normalize_tokens(x_BD)` returns one tensor, `[B, d]` like its
# input: each token centred over d and scaled to unit norm (an all-zero token stays zero, with no NaN).

# %%
from torch import nn

from saelab.teach.exercises import check_my_sae, normalize_tokens


class MyTopKSAE(nn.Module):
    def __init__(self, d: int, n: int, k: int, seed: int = 0):
        super().__init__()
        self.k = k
        # YOUR CODE HERE (about 6 lines), then delete the next line
        todo("2.4")

    def forward(self, x_BD, k=None):
        # YOUR CODE HERE (about 4 lines: normalize_tokens(x_BD) does the paper's normalisation), then delete the next line
        todo("2.4")


check_my_sae(MyTopKSAE)

# %% [markdown]
# <details><summary>Hint</summary>
#
# Draw one random `[n, d]` matrix from the generator and give each row unit norm; both weights start from it, but
# they must be two separate tensors that train apart. In saelab's layout "encoder = decoder transpose" means the same
# `[n, d]` matrix. In `forward`: normalise with `normalize_tokens`, then mind where `b_pre` is subtracted and where it
# comes back.
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# g = torch.Generator().manual_seed(seed)
# W = torch.randn(n, d, generator=g)
# W = W / W.norm(dim=1, keepdim=True)
# self.W_dec, self.W_enc = nn.Parameter(W.clone()), nn.Parameter(W.clone())
# self.b_enc, self.b_pre = nn.Parameter(torch.zeros(n)), nn.Parameter(torch.zeros(d))
# # forward:
# x_n = normalize_tokens(x_BD)
# pre = (x_n - self.b_pre) @ self.W_enc.T + self.b_enc
# z = topk_activation(pre, k or self.k)
# return z @ self.W_dec + self.b_pre, x_n, pre, z
# ```
# </details>
#
# ### Exercise 2.5 — a unit-norm decoder (medium, essential, 10 min)
# The paper keeps every decoder row at unit norm, so a latent's activation is its size and the decoder cannot cheat
# the sparsity by shrinking rows. Two steps around each optimiser step: **before** it, remove from each row's
# gradient its component along the row (`constrain_decoder_grad_`); **after** it, scale each row back to norm 1
# (`renormalize_decoder_`). Both change the tensors in place. `W_dec` is the `nn.Parameter` of shape `[n, d]`, one
# row per latent: "unit norm" means each of the n rows has norm 1 over its d entries (the norm along the last
# axis, not down a column). The first function changes only `W_dec.grad`; the second only the weights, whatever
# their norms were (0.01 or 100) and keeping each row's direction.

# %%
from saelab.teach.exercises import check_decoder_constraint


@torch.no_grad()
def constrain_decoder_grad_(W_dec):
    # YOUR CODE HERE (about 2 lines), then delete the next line
    todo("2.5")


@torch.no_grad()
def renormalize_decoder_(W_dec):
    # YOUR CODE HERE (1 line), then delete the next line
    todo("2.5")


check_decoder_constraint(constrain_decoder_grad_, renormalize_decoder_)

# %% [markdown]
# <details><summary>Hint</summary>
#
# Picture one unit row $w$ and its gradient $g$: which part of $g$ would change the row's length, and how do you
# split a vector into a part along $w$ and a part perpendicular to it? Then do all rows at once: `W_dec` and
# `W_dec.grad` are `[n, d]`; a per-row number is `[n, 1]` (`keepdim=True`) and broadcasts back over d. Both functions
# must change the tensors in place (`-=`, `/=`), since the optimiser holds them.
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# W_dec.grad -= (W_dec.grad * W_dec).sum(-1, keepdim=True) * W_dec
# # and
# W_dec /= W_dec.norm(dim=-1, keepdim=True)
# ```
# </details>
#
# ### Exercise 2.6 — the training loop (hard, essential, 25 min)
# Write `train_my_sae(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef=1/32, multi_topk=False, seed=0)`,
# returning a list of `steps` floats: each step's training normalized MSE of the reconstruction at the SAE's own k,
# `normalized_mse(recon, x_n)`, **without** the AuxK or Multi-TopK terms (the same with or without `multi_topk`).
# Set `b_pre` to the mean of the normalised data first (`normalize_tokens` of the first 8192 rows of `x_TD`;
# saelab uses the geometric median; the mean keeps the loop short). Then, each step: a batch of `batch` rows drawn
# at random from `x_TD` (with replacement is fine); every random draw comes from one
# `torch.Generator().manual_seed(seed)`, never from torch's global random state, so the same seed repeats a run and
# another seed changes it. Then the forward pass, your `normalized_mse` against `x_n`, plus with `multi_topk` the
# paper's $L(k) + L(4k)/8$ (section 5.3); count, per latent, the steps since it last fired (a positive code on some
# row of that step's batch, at the SAE's k), and add `aux_coef` times your `auxk_loss` on the latents whose count is
# **greater than** `dead_steps` (strictly; skip the term in a step where none is dead; `k_aux=0` switches AuxK
# off); Adam as the paper (betas (0.9, 0.999), eps 6.25e-10); exercise 2.5's two steps around `opt.step()`. The check
# first runs your loop on a toy case where most latents start dead and only AuxK can bring them back, then trains
# your loop and `Trainer` with the same settings (constant learning rate, `b_pre` the mean) and compares them on
# held-out samples.

# %%
from saelab.teach.toy import ToyConfig, make_toy
from saelab.teach.exercises import check_training


def train_my_sae(sae, x_TD, steps, batch, lr, k_aux, dead_steps, aux_coef=1 / 32, multi_topk=False, seed=0):
    # YOUR CODE HERE (about 25 lines), then delete the next line
    todo("2.6")


toy = make_toy(ToyConfig(n_samples=32768))
# The check prints both held-out figures and returns what it graded (yours; the reference under SAELAB_SOLUTIONS=1).
train_loop, SAEClass = check_training(train_my_sae, MyTopKSAE, toy.x_BD, steps=BUILD_STEPS, multi_topk_steps=BUILD_STEPS)

# %% [markdown]
# <details><summary>Hint</summary>
#
# Keep a counter `since_fired = torch.zeros(n, dtype=torch.long)`; after each forward pass add 1 and reset the
# latents with `(z > 0).any(0)`. The order of a step: loss → `opt.zero_grad()` → `loss.backward()` →
# `constrain_decoder_grad_(sae.W_dec)` → `opt.step()` → `renormalize_decoder_(sae.W_dec)`. AuxK only when some latent
# is dead.
# </details>
#
# <details><summary>Solution</summary>
#
# ```python
# g = torch.Generator().manual_seed(seed)
# with torch.no_grad():
#     sae.b_pre.copy_(normalize_tokens(x_TD[:8192]).mean(0))
# opt = torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999), eps=6.25e-10)
# since_fired = torch.zeros(sae.W_dec.shape[0], dtype=torch.long)
# history = []
# for _ in range(steps):
#     x = x_TD[torch.randint(len(x_TD), (batch,), generator=g)]
#     recon, x_n, pre, z = sae(x)
#     loss = normalized_mse(recon, x_n)
#     if multi_topk:
#         loss = loss + normalized_mse(sae(x, k=4 * sae.k)[0], x_n) / 8
#     since_fired += 1
#     since_fired[(z > 0).any(0)] = 0
#     dead = since_fired > dead_steps
#     if k_aux and dead.any():
#         loss = loss + aux_coef * auxk_loss(x_n, recon, pre, dead, sae.W_dec, k_aux)
#     opt.zero_grad()
#     loss.backward()
#     constrain_decoder_grad_(sae.W_dec)
#     opt.step()
#     renormalize_decoder_(sae.W_dec)
#     history.append(float(normalized_mse(recon.detach(), x_n)))
# return history
# ```
# </details>
#
# **Reading it.** The check watched your optimiser and your SAE's forward pass: at every `opt.step()` the decoder
# gradient had to be free of components along its rows and the rows at unit norm, with the paper's Adam settings and
# your `lr`; on its dead-latent case (96 of 128 latents start with their encoder rows scaled down 20x, so they never
# reach the top k), only latents that had not fired for about `dead_steps` steps could get a gradient without firing,
# they had to get one (AuxK), and at least 20% had to fire again by the end (saelab's `Trainer` brings back 94% with
# AuxK and none without, in our runs: `tests/test_exercises.py`); with `multi_topk=True` your SAE had to reconstruct at
# $4k$ as well as `Trainer`'s Multi-TopK SAE (within 15%). Your loop and `Trainer` end within a few percent of each other: the maths is the same, and what
# `Trainer` adds is speed (sparse kernels that touch only the $k$ selected latents per token), the geometric-median
# $b_{pre}$, a warmup and a decay, checkpoints and data parallelism. Break your loop on purpose to see what each part
# does: skip `renormalize_decoder_` and the check reports the drifted norms; initialise `W_enc` independently at
# random and, in our run (300 steps), 7% of the latents never fired and the normalized MSE tripled (0.31 against 0.10).
#
# ## Part 2 · Training the real thing
#
# `saelab.SAE` (in `saelab/sae/model.py`) implements the same maths with sparse kernels: the forward pass needs one dense product for the pre-activations, and the backward pass touches only the $k$ (+ $k_{aux}$) selected latents per token. The initialisation follows the paper: unit-norm random decoder rows, **encoder = decoder transpose**, $b_{pre}$ = geometric median of a data sample; decoder rows stay unit norm (the gradient's parallel component is removed before each step).
#
# **Input normalisation.** Before encoding, the paper (section 2.1) subtracts each token's mean over $d_{model}$ and scales the token to unit norm; the reconstruction error, and so the normalized MSE, is measured in that normalised space. saelab does the same by default (`normalize="per_token_unit_norm"`): it makes every token count alike in the loss, however large its activation norm. The released GPT-2 SAEs use a layer norm (`"layernorm"`: the same direction, at norm $\sqrt{d-1}$); `"dataset_unit_norm"` scales all tokens by one dataset-wide factor instead. On saelab 0.2's main job (the Wikipedia summaries alone, 396k tokens, 2,509 steps; our measurement, README "Input normalisation") the two measured alike: held-out normalized MSE 0.1559 (per token) vs 0.1556 (one scale), and the per-token SAE cost the LM 4% less (Δ CE 0.237 vs 0.247 nats). Today's main job trains on the English mixture with the per-token normalisation and reports held-out normalized MSE 0.1671 on the test half (README). `heldout_metrics` also reports `nmse_activation_space`, the same ratio on the raw activations.

# %%
from saelab import SAE, SAEConfig

x = torch.randn(5, 16) * torch.tensor([[1.0], [3.0], [10.0], [0.1], [50.0]]) + 2.0  # tokens of very different norms
sae_demo = SAE(SAEConfig(d_in=16, n_latents=64, k=4, normalize="per_token_unit_norm"))
x_n, undo = sae_demo.preprocess(x)
print("norms before:", x.norm(dim=-1).round(decimals=1).tolist())
print("norms after: ", x_n.norm(dim=-1).round(decimals=3).tolist(), " means after:", x_n.mean(-1).abs().max().item() < 1e-6)

# %%
from dataclasses import replace

from saelab import HarvestConfig, harvest, resolve_device

device = resolve_device(DEVICE)
hcfg = HarvestConfig(model=MODEL, corpus=CORPUS, max_tokens=MAX_TOKENS, device=device)
train_cache = harvest(hcfg)  # notebook 01's cache: found on disk when the settings match, harvested otherwise
eval_cache = harvest(replace(hcfg, split="validation", max_tokens=EVAL_TOKENS))
print(f"train: {train_cache.n_tokens} tokens; validation: {eval_cache.n_tokens} tokens (documents never seen in "
      f"training)\n{train_cache.folder}")

# %% [markdown]
# ### Your SAE on the real cache
#
# Your `MyTopKSAE` and `train_my_sae` from part 1b, now on SmolLM2's activations: a random sample of the cache in
# memory, your loop as you wrote it (dense products on the CPU, so it is slower per step than `Trainer`'s sparse
# kernels), then saved as a saelab SAE folder (`save_my_sae`) where notebook 03 finds it and evaluates it beside
# the course's SAEs. The cell prints its time (about a minute at full size).

# %%
import time

from saelab import reconstruction_metrics
from saelab.course import course_folder
from saelab.teach.exercises import save_my_sae

x_TD = train_cache.sample(MY_TOKENS, seed=0)
mine = SAEClass(train_cache.d_model, MY_N_LATENTS, K, seed=0)
t0 = time.perf_counter()
history = train_loop(mine, x_TD, steps=MY_STEPS, batch=1024, lr=LR, k_aux=256,
                      dead_steps=max(2, MY_STEPS // 16))
my_sae = save_my_sae(mine, course_folder("my-topk"), train_cache)
my_metrics = reconstruction_metrics(my_sae, eval_cache)
print(f"{MY_STEPS} steps of 1024 tokens in {time.perf_counter() - t0:.0f} s; training normalized MSE "
      f"{history[0]:.3f} -> {history[-1]:.3f}; validation normalized MSE {my_metrics['nmse']:.4f}, "
      f"L0 {my_metrics['l0']:.1f}, never fired {my_metrics['dead_eval_frac']:.1%}\nsaved to {course_folder('my-topk')}")

# %% [markdown]
# **Reading it.** In our full-size run (2026-12-02) your loop took 59 s for its 300 steps of 1024 tokens; training
# normalized MSE fell from 0.75 to 0.22, and on the validation tokens it reached 0.245 with L0 32.0 and 2.9% of the
# latents never firing. `Trainer` below, with 5.2 times the tokens (776 steps of 2048) and a decaying learning rate,
# reaches 0.182: the gap is the budget, not the maths (on the toy data the two loops agreed within 1%).

# %% [markdown]
# ### `Trainer`: the main job's recipe at the course's budget
#
# **The learning rate.** saelab's default (`lr=None`) scales Adam's learning rate as $2 \cdot 10^{-4} / \sqrt{n / 2^{14}}$
# (4e-4 at n = 4096; the constants are EleutherAI sparsify's, the $1/\sqrt{n}$ scaling is usually credited to the paper,
# which we could not check), a rate meant for runs of billions of tokens. Our runs are a few hundred to a
# few thousand steps, where a larger step does much better: at n = 4096 on 120k SmolLM2 tokens (saelab 0.2's
# Wikipedia data; our runs), 232 steps reached
# held-out normalized MSE 0.31 with lr 4e-4 and 0.22 with 2e-3 (`saelab/presets.py` records the runs). So the main
# job uses 3e-3 with batch 2048; a much larger step kills latents (4e-3 at batch 2048 left 3.4% dead).
#
# The course trains the main job's recipe (n = 4096, k = 32, batch 2048, lr 3e-3, AuxK, decay over the last half)
# for 4 epochs instead of its 13 (`saelab.course.course_sae`: the zoo at the course's budget), once, into
# `$SAELAB_HOME/saes`; notebooks 03-07 load this SAE. The first run trains it (1.4 minutes on a 2-core CPU, with
# a progress bar), later runs load it.

# %%
import tempfile
from pathlib import Path

from saelab.course import course_overrides, course_sae
from saelab.presets import train_defaults
from saelab.training.report import training_curves
from saelab import Trainer

topk_sae, topk_dir = course_sae("topk", device=device)
topk_metrics = reconstruction_metrics(topk_sae, eval_cache)
print(f"Trainer: {topk_dir.name}; validation normalized MSE {topk_metrics['nmse']:.4f}, L0 {topk_metrics['l0']:.1f}, "
      f"never fired {topk_metrics['dead_eval_frac']:.1%}; yours: {my_metrics['nmse']:.4f} (its own {MY_STEPS} steps)")
training_curves(topk_dir / "log.jsonl").show()

# %% [markdown]
# **Reading the curves.** The normalized MSE falls fast, then slowly; the held-out points sit a little above the training curve (the gap is overfitting: this run sees each token several times). L0 sits at $k$ (at most $k$: the ReLU after TopK can zero a selected latent). The dead-latent curve counts latents that have not fired for `dead_tokens` tokens; at this scale it stays near zero whatever the settings, so it cannot tell you yet whether AuxK helps (part 4 says why).
#
# ## Part 3 · TopK against ReLU + L1 at a matched L0
#
# The classic SAE uses a ReLU and an L1 penalty to get sparsity. The L1 penalty also *shrinks* the activations that survive, which costs reconstruction. We sweep the L1 coefficient, pick the run whose L0 is closest to TopK's, and compare normalized MSE: a miniature of the paper's sparsity-reconstruction frontier (Figure 2a).

# %%
import plotly.graph_objects as go

runs = Path(tempfile.mkdtemp(prefix="saelab-nb02-"))
tcfg = replace(train_defaults(), **course_overrides("topk"), k=K, checkpoint_every=0)
short = replace(tcfg, epochs=COMPARE_EPOCHS, eval_every=10**9, progress=False)
print(f"each comparison run: {COMPARE_EPOCHS:g} epoch of {train_cache.n_tokens} tokens, batch {short.batch_size}")
points = []
for k in (K // 2, K):
    t = Trainer(replace(short, k=k), train_cache, runs / f"topk{k}", eval_cache=eval_cache, device=device)
    t.train()
    points.append(("TopK", f"k={k}", t.heldout_metrics()))
    print(f"TopK     k={k:<7d} L0 {points[-1][2]['l0']:7.1f}   normalized MSE {points[-1][2]['nmse']:.4f}", flush=True)
for l1 in L1_COEFS:
    relu_cfg = replace(short, activation="relu", l1_coef=l1, l1_warmup_frac=0.25, k_aux=0)  # L1 ramped up: see below
    t = Trainer(relu_cfg, train_cache, runs / f"relu{l1}", eval_cache=eval_cache, device=device)
    t.train()
    points.append(("ReLU+L1", f"l1={l1}", t.heldout_metrics()))
    print(f"ReLU+L1  l1={l1:<6g} L0 {points[-1][2]['l0']:7.1f}   normalized MSE {points[-1][2]['nmse']:.4f}", flush=True)
fig = go.Figure()
for kind in ("TopK", "ReLU+L1"):
    pts = [p for p in points if p[0] == kind]
    fig.add_scatter(x=[p[2]["l0"] for p in pts], y=[p[2]["nmse"] for p in pts], mode="lines+markers+text",
                    text=[p[1] for p in pts], textposition="top center", name=kind)
fig.update_layout(xaxis_title="L0 (active latents per token)", yaxis_title="held-out normalized MSE",
                  xaxis_type="log", height=380, title="Sparsity vs reconstruction")
fig.show()
relu = min((p for p in points if p[0] == "ReLU+L1"), key=lambda p: abs(p[2]["l0"] - K))
topk = next(p for p in points if p[1] == f"k={K}")
print(f"At L0 ~ {K}: TopK {topk[2]['nmse']:.4f} vs ReLU+L1 ({relu[1]}, L0 {relu[2]['l0']:.1f}) {relu[2]['nmse']:.4f}")

# %% [markdown]
# **Reading it.** In our full-size run (1 epoch each, 2026-12-02) TopK at k = 32 reached 0.234; the ReLU + L1 runs
# gave L0 61.5, 28.7 and 16.8 at l1 = 0.1, 0.15 and 0.2, and the one nearest L0 32 (l1 = 0.15, L0 28.7) 0.558, more
# than twice TopK's error at a slightly lower L0 (and worse than TopK at k = 16, 0.277).
# If the closest ReLU run is far from L0 = k, add L1 coefficients to `L1_COEFS`: the L0 of a ReLU SAE is only controlled indirectly, which is one of the paper's arguments for TopK. The ReLU runs ramp the L1 coefficient up over their first quarter (`l1_warmup_frac=0.25`, as the zoo's ReLU SAE and Anthropic's 2024 recipe do): at this notebook's learning rate a full-strength L1 from step 0 silences most latents before they find data (a run without the ramp at l1 = 0.2 ended with L0 0). These short runs also favour TopK: the fairer comparison is notebook 03's, between SAEs trained with their own tuned recipes for the course's 4 epochs (0.182 against 0.424 at matched L0 in our run; ReLU + L1 converges more slowly, and at 13 epochs and L0 35 it reached 0.279, `saelab/presets.py`).
#
# ## Part 4 · Dead latents: AuxK and the transpose initialisation
#
# The paper reports that without AuxK and without initialising the encoder as the decoder's transpose, SAEs end with many dead latents: up to 90% in its ablations with neither fix (Figure 15), against 7% for its 16M-latent SAE with both (section 2.4). Train the four combinations and count latents that never fired on held-out text and that the training tracker calls dead.

# %%
rows = []
for aux in (True, False):
    for tied in (True, False):
        c = replace(short, k_aux=None if aux else 0, tied_init=tied)
        t = Trainer(c, train_cache, runs / f"aux{aux}-tied{tied}", eval_cache=eval_cache, device=device)
        t.train()
        m = t.heldout_metrics()
        rows.append((aux, tied, m))
        print(f"AuxK {'on ' if aux else 'off'}  transpose init {'on ' if tied else 'off'}  "
              f"dead (train) {m['dead_train_frac']:6.1%}  never fired on held-out {m['dead_eval_frac']:6.1%}  "
              f"nmse {m['nmse']:.4f}")

# %% [markdown]
# **Reading the table.** Our full-size run (4,096 latents, 1 epoch of 398k tokens, 2026-12-02; one seed, so no
# interval: over three seeds of the main job the share of latents that never fired moved between 1.8% and 2.5%) gave: with the transpose initialisation few latents died (0.2% dead in training with AuxK, 2.4% without; 1.2% and 3.4% never fired on held-out text); without it about half died (48.9% with AuxK, 55.0% without), and the normalized MSE was worse (0.261 against 0.234). So the initialisation matters most at this scale, and AuxK's effect is small but visible; the paper's "up to 90% dead latents when no mitigations are applied" (section 2.4, its Figure 15) is not reproduced at this scale. In fast mode (1024 latents, a few steps) the rows are too short to tell, so do not read a winner into them. `saelab scale --ablation` trains many latents on few tokens, where AuxK's effect shows, with and without both fixes (the README's scaling-laws section has its table).
#
# ## Recap
# - A TopK SAE sets sparsity with its activation: L0 ≤ k, no L1 penalty and so much less shrinkage; its normalized MSE is measured against always predicting the mean activation, in the normalised input space.
# - The paper normalises each token (centre over $d_{model}$, unit norm) before the SAE; saelab does too.
# - AuxK gives dead latents a gradient by modelling the detached residual with the top-$k_{aux}$ dead latents, no bias added.
# - Short runs need a larger learning rate than the paper's; the full job is one command: `saelab train` (see the README).
#
# ## Check your understanding
# 1. Why does TopK give L0 ≤ k rather than exactly k?
#    <details><summary>Answer</summary>The ReLU after TopK zeroes any selected pre-activation that is negative;
#    a token whose k-th largest pre-activation is negative gets fewer than k active latents.</details>
# 2. What does a normalized MSE of 1.0 mean, and why is it a better yardstick than the plain MSE?
#    <details><summary>Answer</summary>As bad as always predicting the mean activation. The plain MSE depends on
#    the activations' scale (model, layer, normalisation); the ratio is comparable across them.</details>
# 3. In the AuxK loss, what goes wrong if the residual is not detached? If live latents are not masked out?
#    <details><summary>Answer</summary>Not detached: the auxiliary loss also moves the main reconstruction
#    (towards making the residual easy for dead latents), which is not its job. Not masked: live latents, with
#    larger pre-activations, win the top-k and the dead ones still get no gradient.</details>
# 4. Why does the L1 penalty cost reconstruction even at the same L0?
#    <details><summary>Answer</summary>It pulls every surviving activation towards zero (shrinkage), so the
#    decoder receives systematically too-small coefficients; TopK has no such term.</details>
# 5. Why do this notebook's runs use lr 3e-3 when saelab's default rule gives 4e-4 at n = 4096?
#    <details><summary>Answer</summary>That rule is meant for billions of tokens; a run of a few hundred
#    steps ends before a small step has converged (0.31 vs 0.22 held-out normalized MSE at 232 steps).</details>

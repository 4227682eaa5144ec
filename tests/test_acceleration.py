"""Mixed precision and torch.compile of the training step (`saelab.training.acceleration`), as far as a CPU can
check them: the options and their refusals, the autocast wiring (bf16 on CPU, allowed for the test only, stands in
for CUDA's: the numbers of CUDA's bf16 are not checked here), and a compiled run that matches an eager one."""

import pytest
import torch

from saelab.cli import build_parser, main
from saelab.sae.families import FAMILIES
from saelab.training import acceleration
from saelab.training.trainer import TrainConfig, Trainer


def _data(rows: int = 2048, d: int = 16) -> torch.Tensor:
    return torch.randn(rows, d, generator=torch.Generator().manual_seed(0))


def _cfg(**changes) -> TrainConfig:
    return TrainConfig(**{"n_latents": 64, "k": 4, "batch_size": 256, "epochs": 1, "progress": False,
                          "eval_every": 10**9, "log_every": 1, **changes})


@pytest.fixture
def cpu_autocast(monkeypatch):
    """Let bf16 autocast run on CPU (refused there for users: it is for CUDA)."""
    monkeypatch.setattr(acceleration, "AUTOCAST_DEVICES", ("cuda", "cpu"))


def test_the_options_are_in_the_config_and_the_command_line(capsys):
    assert (TrainConfig().autocast, TrainConfig().compile) == ("none", False)
    with pytest.raises(ValueError, match="autocast must be one of none, bf16"):
        TrainConfig(autocast="fp16")
    args = build_parser().parse_args(["train", "--train.autocast", "bf16", "--train.compile", "true"])
    assert (getattr(args, "train.autocast"), getattr(args, "train.compile")) == ("bf16", True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--train.autocast", "fp16"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--train.autocast {none,bf16}" in text and "--train.compile" in text and "CUDA only" in text


def test_bf16_autocast_is_refused_on_cpu_with_the_reason_and_the_fix(tmp_path, capsys):
    message = "autocast bf16 is for CUDA: this run is on cpu; drop --train.autocast or pass --device cuda"
    with pytest.raises(ValueError, match=message):
        Trainer(_cfg(autocast="bf16"), _data())
    with pytest.raises(ValueError, match="keeps the parameters in fp32"):
        acceleration.check_autocast("bf16", torch.device("cuda"), "bfloat16")
    # the command refuses it before it harvests anything or makes its run folder
    assert main(["train", "--train.autocast", "bf16", "--device", "cpu", "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_under_autocast_the_encoder_product_is_bf16_and_the_rest_fp32(cpu_autocast, monkeypatch):
    from saelab.sae import kernels
    from saelab.sae.model import SAE

    seen = {}
    select = SAE.select

    def spy_select(self, centred, k, sorted_):
        vals, idx, pre = select(self, centred, k, sorted_)
        seen["select"] = (vals.dtype, pre.dtype, torch.is_autocast_enabled("cpu"))
        return vals, idx, pre

    decode = kernels.SparseDecode.forward

    def spy_decode(ctx, idx, acts, W, pattern=None):
        seen["decode"] = (acts.dtype, W.dtype, torch.is_autocast_enabled("cpu"))
        return decode(ctx, idx, acts, W, pattern)

    monkeypatch.setattr(SAE, "select", spy_select)
    monkeypatch.setattr(kernels.SparseDecode, "forward", staticmethod(spy_decode))
    t = Trainer(_cfg(autocast="bf16"), _data())
    t.train()
    assert seen["select"] == (torch.bfloat16, torch.bfloat16, True)  # the dense product and its top-k
    assert seen["decode"] == (torch.float32, torch.float32, False)  # the sparse kernels: fp32, autocast off
    assert all(p.dtype == torch.float32 and p.grad is None for p in t.sae.parameters())
    assert {s.dtype for st in t.opt.state.values() for s in st.values() if s.is_floating_point()} == {torch.float32}
    assert all(t.history[i]["total"] == t.history[i]["total"] for i in range(len(t.history)))  # no NaN
    eager = Trainer(_cfg(), _data())
    eager.train()
    assert abs(t.history[-1]["nmse"] - eager.history[-1]["nmse"]) < 0.05  # bf16 rounding, the same training


@pytest.mark.filterwarnings("ignore:JumpReLU without rescale_encoder_init")
@pytest.mark.parametrize("example", [e for fam in FAMILIES.values() for e in fam.examples().items()],
                         ids=lambda e: e[0])
def test_every_familys_step_runs_under_autocast(cpu_autocast, example):
    name, changes = example
    t = Trainer(_cfg(n_latents=128, epochs=0.5, k_aux=8, dead_tokens=1, **changes), _data())
    out = t._step(t.data.batch(0))  # every latent that did not fire is dead at once: AuxK runs too
    assert out.losses["total"].dtype == torch.float32 and torch.isfinite(out.losses["total"]), name
    assert "aux" in out.losses or not t.sae.dead_mask(1).any(), name
    assert all(p.dtype == torch.float32 for p in t.sae.parameters()), name


def test_a_compiled_run_trains_as_the_eager_one():
    """torch.compile on CPU (inductor, with the machine's C compiler): the same losses as the eager run."""
    eager, compiled = Trainer(_cfg(epochs=0.75), _data()), Trainer(_cfg(epochs=0.75, compile=True), _data())
    eager.train()
    compiled.train()
    assert compiled.forward is not compiled.sae and eager.forward is eager.sae
    a = [h["total"] for h in eager.history]
    b = [h["total"] for h in compiled.history]
    assert len(a) == len(b) == 6 and max(abs(x - y) for x, y in zip(a, b)) < 1e-4
    assert torch.allclose(eager.sae.W_dec, compiled.sae.W_dec, atol=1e-4)
    assert list(compiled.sae.state_dict()) == list(eager.sae.state_dict())  # saved under the module's own names

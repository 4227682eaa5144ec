"""The SAE families' registry (`saelab.sae.families`): every family's sparse backward equals plain autograd, no list
of family names outside the registry, every SAEConfig field is a command-line flag (flat spellings kept)."""

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

from saelab.sae.config import SAEConfig
from saelab.sae.families import FAMILIES, activations, family_of
from saelab.sae.model import SAE

PACKAGE = Path(__file__).resolve().parents[1] / "saelab"
EXAMPLES = {name: (fam, changes) for fam in FAMILIES.values() for name, changes in fam.examples().items()}
VARIANTS = {"aux-dense-subset": (16, 1 << 30), "aux-sparse-rows": (0, 1 << 30), "chunked-preacts": (16, 256 * 4 * 10)}


def _sae(kernel: str, changes: dict) -> SAE:
    sae = SAE(SAEConfig(**{"d_in": 32, "n_latents": 256, "k": 4, "normalize": "per_token_unit_norm", "kernel": kernel,
                           "k_aux": 16, **changes}), seed=0)
    base = {"W_enc", "W_dec", "b_enc", "b_pre"}
    with torch.no_grad():
        sae.b_pre.copy_(0.1 * torch.randn(32, generator=torch.Generator().manual_seed(1)))
        sae.b_enc.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
        for name, p in sae.named_parameters():  # a family's own parameters (JumpReLU's thresholds): spread out
            if name not in base:
                p.mul_(1 + 0.5 * torch.rand(p.shape, generator=torch.Generator().manual_seed(3)))
    return sae


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("example", EXAMPLES)
def test_every_familys_sparse_backward_equals_dense_autograd(example, variant, monkeypatch):
    """Each registered family's examples (saelab's kernels: AuxK over the dead subset or over the selected rows;
    pre-activations in one buffer or in chunks of 10 rows) against plain autograd (kernel 'dense')."""
    aux_ratio, workspace = VARIANTS[variant]
    monkeypatch.setattr("saelab.sae.auxk.AUX_DENSE_RATIO", aux_ratio)
    monkeypatch.setattr("saelab.sae.kernels.WORKSPACE_BYTES", workspace)
    fam, changes = EXAMPLES[example]
    if workspace < 64 * 256 * 4 and not fam.chunks:
        with pytest.raises(ValueError, match="pre-activations at once"):
            _sae("sparse", changes)(torch.randn(64, 32))
        return
    width = fam.data_width(_sae("dense", changes).cfg)  # a transcoder's rows hold its input and its target
    x = torch.randn(64, width, generator=torch.Generator().manual_seed(0)) * 3 + 1
    dead = torch.zeros(256, dtype=torch.bool)
    dead[::3] = True
    grads, outs = {}, {}
    for kernel in ("sparse", "dense"):
        sae = _sae(kernel, changes)
        assert family_of(sae.cfg) is fam
        out = outs[kernel] = sae(x, dead_mask_N=dead)
        out.losses["total"].backward()
        grads[kernel] = {name: p.grad.clone() for name, p in sae.named_parameters()}
        assert all(p.grad.layout == torch.strided for p in sae.parameters())  # AuxK's sparse rows were added in
        assert out.recon_BD.requires_grad  # the reconstruction keeps its graph for a user's own loss
    assert set(outs["sparse"].losses) == set(outs["dense"].losses)
    for key, v in outs["dense"].losses.items():
        torch.testing.assert_close(outs["sparse"].losses[key], v, atol=1e-5, rtol=1e-5, msg=key)
    for name, g in grads["dense"].items():
        assert float(g.abs().max()) > 0, name
        torch.testing.assert_close(grads["sparse"][name], g, atol=1e-5, rtol=1e-4, msg=name)


def test_every_family_is_described_and_its_options_are_sae_config_fields():
    names = [f.name for f in dataclasses.fields(SAEConfig)]
    assert len(names) == len(set(names)), "two families' options share a field name"
    for name, fam in FAMILIES.items():
        assert fam.name == name and fam.display and fam.registry is FAMILIES
        for f in dataclasses.fields(fam.options) if fam.options else ():
            assert f.name in names and f.default is not dataclasses.MISSING, (name, f.name)
        for changes in fam.examples().values():
            assert family_of(SAEConfig(d_in=8, n_latents=256, k=4, **changes)) is fam
        if fam.penalty:
            assert fam.penalty.coef in names and not fam.has_k
    assert set(activations()) <= set(FAMILIES)


# ---- no list of family names outside the registry ----------------------------------------------
ALLOWED = {  # (file, the assigned name or a piece of the line): why it is not a list of families
    ("saelab/sae/activation_fns.py", "ACTIVATIONS"): "test-time activation functions, which any SAE can be encoded "
                                                    "with: they share names with families, they are not families",
    ("saelab/zoo.py", "ZOO"): "the zoo's trained SAEs by kind ('multi_topk' is one): a list of SAEs, not of "
                                  "families",
    ("saelab/sae/formats/saelens.py", "SAE Lens activation_fn"): "SAE Lens < 6's own activation_fn names, in the "
                                                                 "error that says which it reads",
}


def _docstrings(tree) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            for a, b in zip([None, *body], body):
                if isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str) \
                        and (a is None or isinstance(a, ast.AnnAssign | ast.Assign)):
                    ids.add(id(b.value))
    return ids


def family_lists(source: str) -> list[tuple[int, str, list[str]]]:
    """(line, the assigned name or '', the family names) of every literal in `source` that names two or more
    families: a tuple, list, set or dict (keys) of strings, or one string that lists them ('topk,relu')."""
    names = set(FAMILIES)
    tree = ast.parse(source)
    docs = _docstrings(tree)
    targets = {id(n.value): t.id for n in ast.walk(tree) if isinstance(n, ast.Assign | ast.AnnAssign)
               for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)
               and n.value is not None}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            items = [ast.Constant(w) for w in node.value.replace(",", " ").replace("'", " ").split()]
        else:
            continue
        listed = sorted({i.value for i in items if isinstance(i, ast.Constant) and i.value in names})
        if len(listed) >= 2:
            found.append((node.lineno, targets.get(id(node), ""), listed))
    return found


def test_the_grep_finds_what_it_is_for():
    assert family_lists('FAMILIES = {"topk": {}, "relu": {}}\n') == [(1, "FAMILIES", ["relu", "topk"])]
    assert family_lists('x = "topk,batchtopk,matryoshka"\n')[0][2] == ["batchtopk", "matryoshka", "topk"]
    assert family_lists('if a in ("topk", "batchtopk"):\n    pass\n')
    assert not family_lists('def f():\n    """topk, relu: a docstring"""\n') and not family_lists('x = "topk"\n')


def test_no_list_of_family_names_outside_the_registry():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE.parent))
        if rel.startswith("saelab/sae/families/"):
            continue
        source = path.read_text()
        for line, target, listed in family_lists(source):
            text = "\n".join(source.splitlines()[line - 3:line + 1])
            if (rel, target) not in ALLOWED and not any(f == rel and piece in text for f, piece in ALLOWED):
                found.append(f"{rel}:{line} {target or ''} lists {listed}")
    assert not found, "family names listed outside saelab.sae.families (iterate the registry): " + "; ".join(found)


# ---- every SAEConfig field on the command line ---------------------------------------------------
FROM_THE_DATA = {"d_in", "model", "site", "layer", "hook", "source"}
"""SAEConfig fields the Trainer sets from the data (its width and provenance): no flag."""


def _train_parser():
    from saelab.cli import build_parser

    return build_parser()._subparsers._group_actions[0].choices["train"]


def test_every_sae_config_field_has_a_flag_and_a_flat_alias():
    options = {o: a for a in _train_parser()._actions for o in a.option_strings}
    no_flag = {f.name for f in dataclasses.fields(SAEConfig) if not f.metadata.get("flag", True)}
    assert no_flag == FROM_THE_DATA
    for f in dataclasses.fields(SAEConfig):
        if f.name in FROM_THE_DATA:
            continue
        nested, flat = f"--train.sae.{f.name}", f"--train.{f.name}"
        assert nested in options and options[flat] is options[nested], f.name
        assert options[nested].dest == f"train.sae.{f.name}" and options[nested].help, f.name


@pytest.mark.parametrize("argv,expected", [
    ("--train.n_latents 16384 --train.multi_topk true --harvest.layer 18",  # the README's example
     {"n_latents": 16384, "multi_topk": True}),
    ("--train.activation batchtopk --train.matryoshka_widths doubling:5",
     {"activation": "batchtopk", "matryoshka_widths": [128, 384, 896, 1920, 4096]}),
    ("--train.activation jumprelu --train.l0_coef 0.002 --train.rescale_encoder_init true",
     {"activation": "jumprelu", "l0_coef": 0.002}),
    ("--train.sae.jumprelu_bandwidth 0.01 --train.jumprelu-init-threshold 0.02 --train.sae.multi_topk_coef 1/4 "
     "--train.multi_topk_factor 2 --train.sae.dtype float32",
     {"jumprelu_bandwidth": 0.01, "jumprelu_init_threshold": 0.02, "multi_topk_coef": 0.25, "multi_topk_factor": 2,
      }),
])
def test_todays_flags_and_the_nested_ones_build_the_same_config(argv, expected):
    from saelab.cli import build_parser
    from saelab.flags import build_dataclass, normalize_flag_spellings
    from saelab.presets import train_defaults
    from saelab.training.config import TrainConfig

    parser = build_parser()
    args = parser.parse_args(normalize_flag_spellings(parser, ["train", *argv.split()]))
    cfg = build_dataclass(TrainConfig, args, "train.", base=train_defaults(fast=False))
    for key, value in expected.items():
        assert getattr(cfg.sae, key) == value and getattr(cfg, key) == value, key
    assert cfg.lr == train_defaults(fast=False).lr  # the rest of the main job's recipe is kept


def test_train_config_holds_the_sae_config_and_reads_its_fields_flat():
    from dataclasses import asdict, replace

    from saelab.training.config import TrainConfig

    cfg = TrainConfig(n_latents=256, k=8, batch_size=512)
    assert cfg.sae.n_latents == 256 and cfg.k == 8 and cfg.sae.normalize == "per_token_unit_norm"
    moved = replace(cfg, k=4, lr=1e-3)
    assert (moved.sae.k, moved.lr, cfg.k) == (4, 1e-3, 8)
    assert "k" not in asdict(cfg) and asdict(cfg)["sae"]["k"] == 8  # one tree: no copies
    with pytest.raises(ValueError, match="activation must be one of"):
        TrainConfig(activation="gated")
    with pytest.raises(AttributeError):
        cfg.nonexistent  # noqa: B018

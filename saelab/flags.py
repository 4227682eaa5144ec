"""Dataclass configs <-> command-line flags: every field becomes a flag whose help is its docstring.

Fields typed `Literal[...]` (or with `metadata={"choices": ...}`) are choices: checked when the flag is parsed
(argparse lists the allowed values) and, through `check_choices`, when a config is built in Python. A nested
dataclass field gives `--outer.inner` flags; with `metadata={"flat_aliases": True}` each of them is also spelled
without the field's name (`--train.k` for `--train.sae.k`). Fields with `metadata={"flag": False}` get none (they
are set from the data).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import cache


@cache
def field_docs(cls) -> dict[str, str]:
    """Attribute docstrings (the string literal right after a field) of a dataclass and its dataclass bases."""
    docs: dict[str, str] = {}
    for klass in reversed([c for c in cls.__mro__ if dataclasses.is_dataclass(c)]):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for a, b in zip(body, body[1:]):
            if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                    and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def _base_type(tp):
    """(python type, optional?) for annotations like `int | None`, `Literal[...]` or `list[int] | str | None` (read
    as a string: the config parses it)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if str in args:
            return str, type(None) in typing.get_args(tp)
        return _base_type(args[0])[0], type(None) in typing.get_args(tp)
    if origin is typing.Literal:
        return type(typing.get_args(tp)[0]), False
    return tp, False


def _choices(tp, f: dataclasses.Field | None = None) -> tuple | None:
    """The allowed values of a field: its metadata's "choices" (a tuple, or a function giving one), else those of a
    `Literal[...]` (or `Literal[...] | None`) annotation, else None."""
    if f is not None and "choices" in f.metadata:
        choices = f.metadata["choices"]
        return tuple(choices() if callable(choices) else choices)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _choices(inner[0]) if len(inner) == 1 else None
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None


def check_choices(obj) -> None:
    """Raise a ValueError naming the field and its allowed values when a `Literal` field holds another value."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        allowed = _choices(hints[f.name], f)
        value = getattr(obj, f.name)
        if allowed and value not in allowed and value is not None:
            raise ValueError(f"{type(obj).__name__}.{f.name} must be one of {', '.join(map(str, allowed))}; "
                             f"got {value!r}")


def _spelling_key(flag: str) -> str:
    return flag.replace("-", "_")


def normalize_flag_spellings(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Rewrite `--a.b-c` as `--a.b_c` (and `--eval_tokens` as `--eval-tokens`): both spellings of every flag
    of `parser` and its subcommands are accepted, and shown once in --help. Each flag is spelled as the command it
    follows spells it (`train --delta-ce-contexts`, `frontier --delta_ce_contexts`): the spellings are looked up in
    the top-level parser, then in each subcommand's parser as its name is reached in `argv`."""
    known: dict[str, str] = {}
    current = parser

    def learn(p: argparse.ArgumentParser) -> None:
        for action in p._actions:
            for opt in action.option_strings:
                if opt.startswith("--"):
                    known[_spelling_key(opt)] = opt  # the command's own spelling wins over an outer one

    learn(parser)
    out = []
    for arg in argv:
        if arg == "--":
            out.extend(argv[len(out):])
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            arg = known.get(_spelling_key(name), name) + eq + value
        else:
            sub = _subcommands(current).get(arg)
            if sub is not None:
                current = sub
                learn(sub)
        out.append(arg)
    return out


def _subcommands(p: argparse.ArgumentParser) -> dict:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _parser_for(tp, optional: bool):
    def parse(text: str):
        if optional and text.lower() in ("none", "null"):
            return None
        if tp is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
        if tp is float and "/" in text:
            num, den = text.split("/")
            return float(num) / float(den)
        return tp(text)
    parse.__name__ = getattr(tp, "__name__", "value")
    return parse


def add_dataclass_args(parser: argparse.ArgumentParser, cls, prefix: str = "", defaults=None,
                       exclude: tuple[str, ...] = (), alias_prefix: str | None = None) -> None:
    """Add one --flag per field of `cls` (nested dataclasses as --outer.inner), except `exclude`d names and fields
    marked `flag: False`. `alias_prefix`: also spell each flag with it instead of `prefix`."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(f"{cls.__name__} ({prefix.rstrip('.') or 'top level'})")
    for f in dataclasses.fields(cls):
        if f"{prefix}{f.name}" in exclude or not f.metadata.get("flag", True):
            continue
        tp = hints[f.name]
        default = getattr(defaults, f.name) if defaults is not None else (
            f.default if f.default is not dataclasses.MISSING else
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if dataclasses.is_dataclass(tp):
            add_dataclass_args(parser, tp, f"{prefix}{f.name}.", default, exclude,
                               alias_prefix=prefix if f.metadata.get("flat_aliases") else None)
            continue
        base, optional = _base_type(tp)
        if base not in (int, float, str, bool):
            continue
        choices = _choices(tp, f)
        names = [f"--{prefix}{f.name}"] + ([f"--{alias_prefix}{f.name}"] if alias_prefix is not None else [])
        group.add_argument(*names, dest=f"{prefix}{f.name}",
                           type=_parser_for(base, optional), default=argparse.SUPPRESS,
                           choices=[*choices, *([None] if optional else [])] if choices else None,
                           metavar="{" + ",".join(map(str, choices)) + "}" if choices else base.__name__.upper(),
                           help=f"{docs.get(f.name, '')} (default: {default})".replace("%", "%%"))


def build_dataclass(cls, ns: argparse.Namespace, prefix: str = "", base=None):
    """Make `cls` from defaults (or `base`) overridden by the flags set in `ns`."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        current = getattr(base, f.name) if base is not None else None
        if dataclasses.is_dataclass(hints[f.name]):
            values[f.name] = build_dataclass(hints[f.name], ns, f"{prefix}{f.name}.", current)
        elif hasattr(ns, f"{prefix}{f.name}"):
            values[f.name] = getattr(ns, f"{prefix}{f.name}")
        elif base is not None:
            values[f.name] = current
    return cls(**values)

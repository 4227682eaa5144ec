"""Dataclass configs <-> command line: every field becomes a flag whose help is its docstring."""

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
    """Attribute docstrings (the string literal right after a field) of a dataclass."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    docs, body = {}, tree.body[0].body
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
            docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def _base_type(tp):
    """(python type, optional?) for annotations like `int | None` or `Literal[...]`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])[0], True
    if origin is typing.Literal:
        return type(typing.get_args(tp)[0]), False
    return tp, False


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


def add_dataclass_args(parser: argparse.ArgumentParser, cls, prefix: str = "", defaults=None) -> None:
    """Add one --flag per field of `cls` (nested dataclasses as --outer.inner)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(f"{cls.__name__} ({prefix.rstrip('.') or 'top level'})")
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = getattr(defaults, f.name) if defaults is not None else (
            f.default if f.default is not dataclasses.MISSING else
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if dataclasses.is_dataclass(tp):
            add_dataclass_args(parser, tp, f"{prefix}{f.name}.", default)
            continue
        base, optional = _base_type(tp)
        if base not in (int, float, str, bool):
            continue
        group.add_argument(f"--{prefix}{f.name}", dest=f"{prefix}{f.name}", type=_parser_for(base, optional),
                           default=argparse.SUPPRESS, metavar=base.__name__.upper(),
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

"""Loading a command's frozen settings dataclass from a JSON file and ``key=value`` overrides.

Unknown keys are rejected with the list of valid ones; nested dataclasses (such as the
augmentation) come from nested JSON objects; the resolved settings go into every run folder.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def load_settings(cls: type[T], *, file: str | Path | None = None, overrides: dict[str, Any] | None = None,
                  base: dict[str, Any] | None = None) -> T:
    """Build ``cls`` from its defaults, then ``base`` (a named recipe), then ``file`` (JSON), then
    ``overrides`` (later wins)."""
    values: dict[str, Any] = dict(base or {})
    if file:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such settings file")
        try:
            values = _deep_merge(values, json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
    return from_dict(cls, _deep_merge(values, overrides or {}))


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _deep_merge(merged[key], value)
        merged[key] = value
    return merged


def from_dict(cls: type[T], values: dict[str, Any], *, where: str = "") -> T:
    """``cls(**values)`` with unknown keys refused and nested dataclasses and tuples rebuilt."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(where + k for k in unknown)}; "
                         f"valid: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            default = getattr(cls(), name) if _has_defaults(cls) else None
            merged = {**(dataclasses.asdict(default) if default is not None else {}), **value}
            value = from_dict(hint, merged, where=f"{where}{name}.")
        elif isinstance(value, str) and typing.get_args(hint) == (str, ...):
            value = tuple(part.strip() for part in value.split(",") if part.strip())  # --set stages=head,tail
        else:
            value = typed(value, hint, f"{where}{name}")
        kwargs[name] = value
    return cls(**kwargs)


_TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
_PLURAL = {bool: "true/false values", int: "whole numbers", float: "numbers", str: "strings"}


def typed(value: Any, hint: Any, name: str) -> Any:
    """``value`` as the setting's type ``hint`` (a whole number for a float, a list for a tuple), or a
    ``ValueError`` naming the setting, the value and the type expected."""
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple) or (args[-1] is not Ellipsis and len(value) != len(args)):
            count = "a list of" if args[-1] is Ellipsis else f"a list of {len(args)}"
            raise ValueError(f"setting {name}={value!r}: expected {count} {_PLURAL.get(args[0], args[0])}, "
                             f"e.g. {name}=[{', '.join(_example(a) for a in args if a is not Ellipsis)}]")
        items = args[:-1] * len(value) if args[-1] is Ellipsis else args
        return tuple(typed(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, items)))
    if hint not in _TYPE_WORDS:
        return value  # a type this check does not know stays as given
    accepted = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}[hint]
    if not isinstance(value, accepted) or (hint is not bool and isinstance(value, bool)):
        raise ValueError(f"setting {name}={value!r}: expected {_TYPE_WORDS[hint]}, e.g. {name}={_example(hint)}")
    return float(value) if hint is float else value


def _example(hint: Any) -> str:
    return {bool: "true", int: "10", float: "0.5", str: "text"}.get(hint, "...")


def _has_defaults(cls) -> bool:
    return all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in dataclasses.fields(cls))


def to_dict(settings) -> dict[str, Any]:
    """Settings as plain JSON-ready values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(settings)))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "b.c=true", "d=[1,2]"]`` as a nested dict; values are read as JSON when they parse."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set {pair!r}: write KEY=VALUE, e.g. --set tail.epochs=5")
        key, raw = pair.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = overrides
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return overrides

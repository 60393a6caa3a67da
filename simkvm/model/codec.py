"""Plan dicts <-> plan dataclasses: the one generic converter, and dotted paths into a plan.

The naming rule is the whole format: a field's YAML key is its name without the
unit suffix (``memory_bytes`` -> ``memory``) and the suffix says how its value is
parsed (``_bytes`` sizes, ``_Bps`` rates, ``_s`` durations, ``_frac`` shares).
Adding a knob is adding a field. Dotted keys (``link.bandwidth``,
``vm.disks.0.size``) name one field anywhere in the tree; :func:`resolve` walks
them once and :func:`set_in` copies the frozen tree along that path only.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, Callable, Mapping, Sequence

from .errors import PlanError
from .limits import MAX_TIME_S, MAX_UINT64
from .units import parse_duration, parse_fraction, parse_rate, parse_size

SUFFIX_PARSERS: dict[str, Callable[..., float]] = {
    "_bytes": parse_size,
    "_Bps": parse_rate,
    "_s": parse_duration,
    "_frac": parse_fraction,
}
_UNIONS = (typing.Union, types.UnionType)
#: Every size and rate fits QEMU's uint64s; no duration is longer than a simulated migration may be
#: (simkvm.model.limits); tighter bounds per field are the section checks'.
CEILING = {"_bytes": MAX_UINT64, "_Bps": MAX_UINT64, "_s": MAX_TIME_S, "_frac": 1.0}
CEILING_WHY = {"_bytes": "a uint64 of bytes", "_Bps": "a uint64 of bytes/s", "_s": "a week",
               "_frac": "a share"}
#: Fields that also take a word, which a plan's loader resolves (simkvm.load: it knows the profile),
#: never the model: field name -> (word, what it means).
WORDS = {"zero_fraction": ("auto", "half of RAM, at most what the working set and the guest OS leave")}


def key_of(field_name: str) -> str:
    """The YAML key of a field: the field name without its unit suffix."""
    for suffix in SUFFIX_PARSERS:
        if field_name.endswith(suffix):
            return field_name[: -len(suffix)]
    return field_name


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """A dataclass's resolved field types (typing.get_type_hints is slow: once per class)."""
    return typing.get_type_hints(cls)


@functools.cache
def fields_by_key(cls: type) -> dict[str, dataclasses.Field]:
    return {key_of(f.name): f for f in dataclasses.fields(cls)}


def parse_leaf(field_name: str, hint: Any, value: Any, where: str) -> Any:
    """One value by its field's unit suffix or type: "8GiB" -> 8589934592.0, 3.0 -> 3 for an int."""
    for suffix, parser in SUFFIX_PARSERS.items():
        if field_name.endswith(suffix):
            if value is None and "None" in str(hint):
                return None
            number = parser(value, where)
            if number > CEILING[suffix]:
                raise PlanError(f"{where} must be at most {CEILING[suffix]:g} ({CEILING_WHY[suffix]}), got {value!r}")
            return number
    if "fraction" in field_name:
        if field_name in WORDS and isinstance(value, str):
            _word(field_name, value, where)
        return parse_fraction(value, where)
    if hint in (int, "int"):
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or float(value) != int(value)):
            raise PlanError(f"{where} must be a whole number, got {value!r}")
        return int(value)
    if hint in (float, "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise PlanError(f"{where} must be a number, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise PlanError(f"{where} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise PlanError(f"{where} must be a finite number, got {value!r}")
        return number
    if hint in (bool, "bool"):
        if not isinstance(value, bool):
            raise PlanError(f"{where} must be true or false, got {value!r}")
        return value
    if hint in (str, "str"):
        if not isinstance(value, str):
            raise PlanError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _word(field_name: str, value: str, where: str) -> None:
    """A field's word is the loader's to resolve; any other text that is no number names it."""
    word, meaning = WORDS[field_name]
    if value.strip() == word:
        raise PlanError(f"{where}: {word!r} ({meaning}) is resolved where a plan is loaded (simkvm.load_plan, "
                        f"a plan file, the CLI); give a number here, e.g. 0.3")
    text = value.strip().removesuffix("%")
    try:
        float(text)
    except ValueError:
        raise PlanError(f"{where} must be a fraction like 0.3 or '30%', or {word} ({meaning}), "
                        f"got {value!r}") from None


def build(cls: type, data: Any, where: str = "") -> Any:
    """A dataclass from its YAML mapping (keys without unit suffixes, human units allowed)."""
    if not isinstance(data, Mapping):
        raise PlanError(f"{where or 'plan'} must be a mapping, got {data!r}")
    fields = fields_by_key(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise PlanError(
            f"unknown key {join(where, str(unknown[0]))!r}; known keys here: {', '.join(sorted(fields))}"
        )
    types_ = hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        f = fields[key]
        kwargs[f.name] = convert(f.name, types_[f.name], value, join(where, key))
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - field mismatch is a bug
        raise PlanError(f"{where}: {exc}") from None


def convert(name: str, hint: Any, value: Any, path: str) -> Any:
    """``value`` as field ``name`` of type ``hint`` holds it (SI numbers, tuples, dataclasses)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):  # type: ignore[arg-type]
            return value
        return build(hint, value or {}, path)  # type: ignore[arg-type]
    if origin is tuple and args and args[-1] is Ellipsis:
        item = args[0]
        if value is None:
            return ()
        if isinstance(value, Mapping) and not dataclasses.is_dataclass(item):
            return tuple(sorted(value.items()))  # free-form options (policy params), validated by their owner
        if not isinstance(value, (list, tuple)):
            raise PlanError(f"{path} must be a list, got {value!r}")
        if dataclasses.is_dataclass(item):
            return tuple(v if isinstance(v, item) else build(item, v, f"{path}[{i}]")  # type: ignore[arg-type]
                         for i, v in enumerate(value))
        if typing.get_origin(item) is tuple:  # (interval_s, bytes) pairs
            out = []
            for i, pair in enumerate(value):
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise PlanError(f"{path}[{i}] must be a pair [interval, bytes], got {pair!r}")
                out.append((parse_duration(pair[0], f"{path}[{i}][0]"), parse_size(pair[1], f"{path}[{i}][1]")))
            return tuple(out)
        return tuple(value)
    if origin in _UNIONS and type(None) in args:
        if value is None:
            return None
        inner = next(a for a in args if a is not type(None))
        return convert(name, inner, value, path)
    if origin in _UNIONS:  # a name or a list
        if isinstance(value, (list, tuple)):
            try:
                return tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise PlanError(f"{path} must be a name or a list of numbers, got {value!r}") from None
        if not isinstance(value, str):
            raise PlanError(f"{path} must be a name or a list of numbers, got {value!r}")
        return value
    return parse_leaf(name, hint, value, path)


def unbuild(obj: Any) -> Any:
    """A dataclass tree back to YAML keys and SI numbers (``build`` reads it back unchanged)."""
    as_data = getattr(obj, "as_data", None)
    if as_data is not None:
        return as_data()
    if dataclasses.is_dataclass(obj):
        return {key_of(f.name): unbuild(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [unbuild(v) for v in obj]
    return obj


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# ------------------------------------------------------------------ dotted paths
Path = tuple[str | int, ...]


def resolve(root: Any, key: str) -> tuple[Path, str, Any]:
    """A dotted YAML key in ``root`` (a dataclass instance): (field path, leaf field name, leaf type).

    List sections take an index (``vm.disks.0.size``), checked against ``root``'s own list.
    """
    if not any(p.isdigit() for p in key.split(".")):
        return _resolve_type(type(root), key)  # type: ignore[arg-type]
    node_type: Any = type(root)
    node: Any = root
    steps: list[str | int] = []
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, tuple):  # a list section such as vm.disks: the part is an index
            if not part.isdigit() or int(part) >= len(node):
                raise PlanError(f"unknown key {key!r}: {'.'.join(parts[:i])} has {len(node)} item(s), "
                                f"index {part!r} is not one of them")
            steps.append(int(part))
            node, node_type = node[int(part)], typing.get_args(node_type)[0]
            if last:
                return tuple(steps), parts[i - 1], node_type
            continue
        name, node_type = _step(node_type, key, parts, i)
        steps.append(name)
        node = getattr(node, name)
        if last:
            return tuple(steps), name, node_type
    raise PlanError(f"unknown key {key!r}")  # pragma: no cover - empty key


@functools.cache
def _resolve_type(cls: type, key: str) -> tuple[Path, str, Any]:
    """Index-free keys resolve on the types alone: once per key."""
    node_type: Any = cls
    steps: list[str | int] = []
    parts = key.split(".")
    for i, _part in enumerate(parts):
        name, node_type = _step(node_type, key, parts, i)
        steps.append(name)
    return tuple(steps), str(steps[-1]), node_type


def _step(node_type: Any, key: str, parts: list[str], i: int) -> tuple[str, Any]:
    if not dataclasses.is_dataclass(node_type):
        raise PlanError(f"unknown key {key!r}: {'.'.join(parts[:i])} is a value, not a section")
    fields = fields_by_key(node_type)  # type: ignore[arg-type]
    if parts[i] not in fields:
        raise PlanError(f"unknown key {key!r}: no key {parts[i]!r} here; known keys: {', '.join(sorted(fields))}")
    name = fields[parts[i]].name
    return name, hints(node_type)[name]  # type: ignore[arg-type]


class Changes(dict):
    """Changes to apply to one section: field name (or list index) -> a value or a nested Changes."""


def put(tree: Changes, path: Sequence[str | int], value: Any) -> None:
    """Record ``value`` at ``path`` in ``tree`` (sections on the path become nested Changes)."""
    node = tree
    for step in path[:-1]:
        sub = node.get(step)
        if not isinstance(sub, Changes):
            if step in node:
                raise PlanError(f"{'.'.join(map(str, path))}: a section is set twice (whole and in part)")
            sub = node[step] = Changes()
        node = sub
    if isinstance(node.get(path[-1]), Changes):
        raise PlanError(f"{'.'.join(map(str, path))}: a section is set twice (whole and in part)")
    node[path[-1]] = value


def apply(node: Any, changes: Changes) -> Any:
    """A copy of frozen ``node`` with ``changes``: one copy per section touched, nothing else copied."""
    if isinstance(node, tuple):
        items = list(node)
        for i, v in changes.items():
            items[i] = apply(items[i], v) if isinstance(v, Changes) else v
        return tuple(items)
    return dataclasses.replace(node, **{k: apply(getattr(node, k), v) if isinstance(v, Changes) else v
                                        for k, v in changes.items()})


def set_in(node: Any, path: Sequence[str | int], value: Any) -> Any:
    """A copy of frozen ``node`` with the field at ``path`` set; only the sections on the path are copied."""
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(node)
        items[head] = set_in(items[head], rest, value) if rest else value
        return tuple(items)
    new = set_in(getattr(node, head), rest, value) if rest else value
    return dataclasses.replace(node, **{head: new})

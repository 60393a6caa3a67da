"""The plan's JSON Schema (``simkvm schema``), derived from the plan's dataclasses.

Editors (VS Code's YAML extension, JetBrains, ``check-jsonschema``) use it to
complete keys and flag typos in plan files before simkvm reads them. It is
built by the same naming rule the plan reader uses (a field ``memory_bytes``
is the key ``memory``, a size), so a new knob appears here without an edit.
The schema is the editor's help; ``Plan.from_dict`` stays the judge (it also
checks ranges and cross-field rules a schema cannot say).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from . import __version__
from .model.codec import WORDS, key_of
from .model.plan import Plan

_NUMBER = r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?"
_PATTERNS = {
    # The units rule of simkvm.units (README "Units"): case-sensitive, B byte, b bit.
    "_bytes": rf"^\s*{_NUMBER}\s*([kKMGTP]i?(B|byte|bytes)?|B|byte|bytes)?\s*$",
    "_Bps": rf"^\s*{_NUMBER}\s*(([kKMGTP]i?)?(B|b|bit|bits|byte|bytes)?/s|[kKMGTP]?(bps|Bps))?\s*$",
    "_s": rf"^\s*{_NUMBER}\s*(ns|us|µs|ms|s|sec|secs|second|seconds|min|m|minute|minutes|h|hour|hours)?\s*$",
    "_frac": rf"^\s*{_NUMBER}\s*%?\s*$",
}
_EXAMPLES = {"_bytes": "16GiB", "_Bps": "10Gbit/s", "_s": "300ms", "_frac": "30%"}


def _quantity(suffix: str) -> dict[str, Any]:
    number: dict[str, Any] = {"type": "number", "minimum": 0}
    if suffix == "_frac":
        number["maximum"] = 1
    return {"anyOf": [number, {"type": "string", "pattern": _PATTERNS[suffix]}],
            "description": f"a number in SI units or a string like {_EXAMPLES[suffix]!r}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _field(name: str, hint: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return _nullable(_field(name, inner[0] if len(inner) == 1 else typing.Union[tuple(inner)]))
    suffix = next((s for s in _PATTERNS if name.endswith(s)), None)
    if suffix:
        return _quantity(suffix)
    if "fraction" in name:
        frac = _quantity("_frac")
        if name in WORDS:  # a word the plan's loader resolves (vm.zero_fraction: auto)
            word, meaning = WORDS[name]
            frac = {"anyOf": [*frac["anyOf"], {"const": word}], "description": f"{frac['description']}, or "
                    f"{word!r}: {meaning}"}
        return frac
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _object(hint)
    if origin in (typing.Union, types.UnionType):  # a name or a list of shares (layouts)
        return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "number", "minimum": 0}}]}
    if origin is tuple and args and args[-1] is Ellipsis:
        item = args[0]
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            return {"type": "array", "items": _object(item)}
        if typing.get_origin(item) is tuple:  # (interval, bytes) pairs of a measured curve
            return {"type": "array", "items": {"type": "array", "prefixItems": [_quantity("_s"), _quantity("_bytes")],
                                               "minItems": 2, "maxItems": 2}}
        return {"type": "array"}
    return {int: {"type": "integer"}, float: {"type": "number"}, bool: {"type": "boolean"},
            str: {"type": "string"}}.get(hint, {})


def _object(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {"type": "object", "additionalProperties": False,
                           "properties": {key_of(f.name): _field(f.name, hints[f.name])
                                          for f in dataclasses.fields(cls)}}
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    if doc and not doc.startswith(cls.__name__ + "("):  # not the dataclass's generated signature
        out["description"] = " ".join(doc.split())
    return out


def plan_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of a plan file."""
    schema = _object(Plan)
    schema["properties"]["policy"] = {
        "description": "orchestration policy: a name (qemu, nova, ovirt-..., kubevirt, proxmox) or a mapping with "
                       "name and that policy's options",
        "anyOf": [{"type": "string"}, {"type": "object", "properties": {"name": {"type": "string"}},
                                       "required": ["name"]}]}
    schema["properties"]["profile"] = {
        "description": "host profile from `simkvm calibrate`: a file path or the profile's mapping",
        "anyOf": [{"type": "string"}, {"type": "object"}]}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"simkvm-plan-{__version__}", "title": "simkvm migration plan", **schema}

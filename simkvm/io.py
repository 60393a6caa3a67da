"""Files and nested dicts: YAML read with one-line errors, atomic writes, dotted keys set in a dict."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .model.errors import PlanError, UserError


def read_yaml(path: str | Path, what: str = "plan file") -> Any:
    """A YAML file's content, or one UserError line saying it is missing or where it is broken."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} {str(p)!r} does not exist")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise PlanError(f"{p}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts (creating sections); ``vm.disks.0.size`` indexes lists."""
    parts = dotted.split(".")
    node: Any = data
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value

"""Files and nested dicts: YAML read with one-line errors, atomic writes, dotted keys set in a dict."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .model.errors import PlanError, UserError
from .model.text import MAX_YAML_ALIASES, MAX_YAML_DEPTH, MAX_YAML_NODES, read_text


def _bounded_loader(text: str) -> Any:
    """PyYAML's SafeLoader, refusing deep nesting and alias bombs while it composes the document."""
    import yaml

    class Loader(yaml.SafeLoader):
        depth = 0
        aliases = 0
        nodes = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_YAML_ALIASES:
                    raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases (*name)")
            self.nodes += 1
            if self.nodes > MAX_YAML_NODES:
                raise yaml.YAMLError(f"more than {MAX_YAML_NODES:,} values (a plan or spec has a few hundred)")
            self.depth += 1
            try:
                if self.depth > MAX_YAML_DEPTH:
                    raise yaml.YAMLError(f"nested more than {MAX_YAML_DEPTH} levels deep")
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return Loader(text)


def read_yaml(path: str | Path, what: str = "plan file") -> Any:
    """A YAML file's content, or one UserError line saying it is missing, too large or where it is broken."""
    import yaml

    p = Path(path)
    text = read_text(p, what)
    loader = None
    try:
        loader = _bounded_loader(text)
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PlanError(f"{p}: not valid YAML{at}: {problem}") from None
    except ValueError as exc:  # a number PyYAML cannot convert (over 4300 digits)
        raise PlanError(f"{p}: not valid YAML: {str(exc).split(';')[0]}") from None
    finally:
        if loader is not None:
            loader.dispose()


#: What matplotlib writes (a --plot FILE must end in one of these).
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp")


def check_output(path: str | Path, what: str, suffixes: tuple[str, ...] = (), *, parent_exists: bool = True) -> Path:
    """An output path that can be written, checked before the work that fills it (one UserError line)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} {str(p)!r} is a directory; give a file name")
    if parent_exists and not p.parent.is_dir():
        raise UserError(f"{what} {str(p)!r}: directory {str(p.parent)!r} does not exist")
    if suffixes and p.suffix.lower() not in suffixes:
        raise UserError(f"{what} {str(p)!r} must end in one of {', '.join(suffixes)}")
    return p


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

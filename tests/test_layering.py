"""The layers of simkvm, checked on its source: no import loop, no import up a floor, no private name
used outside its module.

The floors (README, "Architecture"): ``model/`` (plan, codec, result, units, errors) imports nothing
of simkvm outside itself; the executor, meant for production hosts, never imports the testbed. An
import inside a function counts like one at the top: hiding an import in a function hides a loop,
it does not break it.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "simkvm"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _absolute(mod: str, is_package: bool, level: int, target: str | None) -> str:
    base = mod.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports(mod: str, path: Path, known: dict[str, Path]) -> list[tuple[str, str | None, int]]:
    """(imported simkvm module, name taken from it or None, line) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "simkvm"]
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            target = _absolute(mod, is_package, node.level, node.module) if node.level else (node.module or "")
            if target.split(".")[0] != "simkvm":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in known:  # from simkvm.x import module
                    out.append((sub, None, node.lineno))
                else:
                    out.append((target, a.name, node.lineno))
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    g: dict[str, set[str]] = {}
    for mod, path in known.items():
        deps = set()
        for target, _name, _line in imports(mod, path, known):
            # importing simkvm.a.b runs simkvm/__init__ and simkvm/a/__init__ first: those are not
            # edges a module chooses, so only the module itself counts
            if target in known and target != mod:
                deps.add(target)
        g[mod] = deps
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_loop():
    loops = cycles({m: {d for d in deps if not _is_package_init(d)} for m, deps in graph().items()})
    assert not loops, f"import loops: {loops}"


def _is_package_init(mod: str) -> bool:
    return (PACKAGE.parent / mod.replace(".", "/") / "__init__.py").exists()


#: Known exceptions, being moved. Only ever shrinks: a new one fails the test.
KNOWN_UP: set[tuple[str, str]] = set()
KNOWN_PRIVATE: set[tuple[str, str]] = set()


def test_no_import_up_a_floor():
    bad = {}
    known = modules()
    for mod, path in known.items():
        for target, _name, line in imports(mod, path, known):
            if mod.startswith("simkvm.model") and not target.startswith("simkvm.model"):
                bad[(mod, target)] = f"{path.relative_to(ROOT)}:{line}: the model imports {target}"
            if mod.startswith("simkvm.executor") and target.startswith("simkvm.testbed"):
                bad[(mod, target)] = f"{path.relative_to(ROOT)}:{line}: the executor imports the testbed ({target})"
    new = [text for key, text in bad.items() if key not in KNOWN_UP]
    assert not new, "\n".join(new)


def test_no_private_name_used_outside_its_module():
    bad = {}
    known = modules()
    for mod, path in known.items():
        for target, name, line in imports(mod, path, known):
            if name and name.startswith("_") and not name.startswith("__") and target != mod:
                bad[(mod, f"{target}.{name}")] = f"{path.relative_to(ROOT)}:{line}: imports {target}.{name}"
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):  # modules bound to a name: import simkvm.x as m, from . import x
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("simkvm") and a.asname:
                        aliases[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
                target = _absolute(mod, path.name == "__init__.py", node.level, node.module) if node.level \
                    else (node.module or "")
                for a in node.names:
                    if f"{target}.{a.name}" in known:
                        aliases[a.asname or a.name] = f"{target}.{a.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")):
                used = f"{aliases[node.value.id]}.{node.attr}"
                bad[(mod, used)] = f"{path.relative_to(ROOT)}:{node.lineno}: uses {used}"
    new = [text for key, text in bad.items() if key not in KNOWN_PRIVATE]
    assert not new, "\n".join(new)


def test_the_checks_see_a_loop_and_a_private_import(tmp_path):
    """The oracle of the oracles: a made-up package with one loop and one private import is caught."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    src = tmp_path / "m.py"
    src.write_text("from simkvm.model.plan import _policy_data\nimport simkvm.model.codec as c\n")
    found = imports("simkvm.x", src, modules())
    assert ("simkvm.model.plan", "_policy_data", 1) in found and ("simkvm.model.codec", None, 2) in found

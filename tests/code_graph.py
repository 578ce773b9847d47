"""The import graph of this repository's Python code, read with ``ast`` (nothing is imported).

A module's imports are every ``import``/``from ... import`` in it, at module level or inside a function
(a lazy import runs when the function does). ``from a import b`` imports ``a`` and, where ``a.b`` is a
module, ``a.b``. Used by the layering test and by the check of dvc.yaml's code deps.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("spotdiff", "flows")


def module_file(name: str) -> Path | None:
    """The source file of module ``name`` under the repo, or None when it is no module (a class, say)."""
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules(package: str) -> list[str]:
    return sorted(module_name(p) for p in (ROOT / package).rglob("*.py"))


@cache
def imports(name: str, top: tuple[str, ...] = PACKAGES) -> frozenset[str]:
    """Modules of ``top`` packages that module ``name`` imports (resolved to modules of this repo), plus
    every other top-level package it imports (``prefect``, ``argparse``, ...), by their top name."""
    path = module_file(name)
    assert path is not None, name
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            dotted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}:{node.lineno}: relative import; this code imports absolutely"
            subs = [f"{node.module}.{alias.name}" for alias in node.names]
            # `from pkg import submodule` depends on the submodule; `pkg` only runs first, as any parent does
            names = [s for s in subs if module_file(s) is None]
            dotted = [s for s in subs if module_file(s) is not None] + ([node.module] if names else [])
        else:
            continue
        for d in dotted:
            if d.split(".")[0] not in top:
                found.add(d.split(".")[0])
            elif module_file(d) is not None:
                found.add(d)
    return frozenset(found)


def code_closure(entry: str) -> set[str]:
    """Repo-relative paths of every source file that running module ``entry`` can import (importing
    ``a.b.c`` runs ``a`` and ``a.b`` first). The library computes this closure itself
    (``spotdiff.common.fingerprint.closure``, whose digest keys train's checkpoint and generate's resume
    store), so dvc.yaml's code deps and those keys come from one computation."""
    from spotdiff.common.fingerprint import closure

    return {p.relative_to(ROOT).as_posix() for p in closure(entry)}


def cycles(modules: list[str]) -> list[list[str]]:
    """Every strongly connected group of more than one module (an import circle), by Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in imports(v):
            if module_file(w) is None:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in modules:
        if m not in index:
            visit(m)
    return found


def compress(paths: set[str]) -> list[str]:
    """``paths`` with every folder whose ``*.py`` files are all in ``paths`` listed as the folder."""
    out = set(paths)
    folders = sorted({str(Path(p).parent) for p in paths}, key=lambda f: f.count("/"))
    for folder in folders:
        files = {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob("*.py")}
        if folder not in PACKAGES and files <= paths:
            out = {p for p in out if not p.startswith(folder + "/")} | {folder}
    # a folder listed inside a listed folder is covered already
    return sorted(p for p in out if not any(p.startswith(q + "/") for q in out if q != p))


# What every stage's cmd runs: a launcher that finds the installed CLI from any shell, venv activated or not
# (DVC runs cmd with the caller's PATH). It is not a dep: it picks the program, it does not change outputs.
LAUNCHER = "bin/spotdiff"


def dvc_stages_yaml() -> str:
    """The ``stages:`` part of dvc.yaml as ``spotdiff.stages`` and the code graph give it."""
    from spotdiff.stages import PIPELINE

    def flag(role: str) -> str:
        return "--" + role.replace("_", "-")

    lines = ["stages:"]
    for name, st in PIPELINE.items():
        code = code_closure(st.entry)
        deps = list(st.inputs.values()) + [f"${{{key}}}" for key in st.param_paths]
        cmd = f"{LAUNCHER} {name} " + " ".join(f"{flag(r)} {p}" for r, p in {**st.inputs, **st.outputs}.items())
        lines += [f"  {name}:", f"    cmd: {cmd}", "    deps:"]
        lines += [f"      - {d}" for d in deps + compress(code)]
        lines += ["    params:"] + [f"      - {p}" for p in st.params]
        lines += ["    outs:"]
        for role, path in st.outputs.items():
            if role not in st.metrics:
                lines.append(f"      - {path}" + (":\n          persist: true" if role in st.persist else ""))
        if st.metrics:
            lines += ["    metrics:"] + [f"      - {st.outputs[r]}:\n          cache: false" for r in st.metrics]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    # Rewrite dvc.yaml's stages from the registry and the code graph (its header and plots stay).
    import sys

    sys.path.insert(0, str(ROOT))
    path = ROOT / "dvc.yaml"
    text = path.read_text()
    head, rest = text.split("stages:\n", 1)
    tail = rest[rest.index("\n# `dvc plots show`") + 1:]
    path.write_text(head + dvc_stages_yaml() + tail)
    print(f"wrote {path}")

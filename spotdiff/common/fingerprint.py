"""What a resumable piece of work belongs to: the code that made it, so that work saved by other code is
never picked up (train's checkpoint, generate's finished chunks).

"The code" is the static import closure of the stage's entry module within this package: every module
it imports, at module level or inside a function, followed transitively, read with ``ast`` (nothing is
imported). That is exactly the set of files dvc.yaml lists as the stage's code deps (tests/code_graph.py
computes the same closure, and tests/test_stages.py checks both agree), so a fresh clone that DVC calls up
to date writes a checkpoint with the same bytes, and an edit elsewhere in the library changes nothing.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
"""The ``spotdiff`` package folder."""


def _file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != PACKAGE.name:
        return None
    path = PACKAGE.joinpath(*parts[1:])
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@cache
def _imports(name: str) -> tuple[str, ...]:
    path = _file(name)
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            found += [s for s in subs if _file(s) is not None] + [node.module]
    return tuple(m for m in found if _file(m) is not None)


def closure(entry: str) -> list[Path]:
    """Every source file of this package that running module ``entry`` can import, sorted (importing
    ``a.b.c`` runs ``a`` and ``a.b`` first)."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in seen or _file(name) is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += list(_imports(name))
    return sorted(_file(m) for m in seen)


def code_digest(entry: str) -> str:
    """blake2b of the code of module ``entry`` (``closure``): each file's package-relative path and bytes."""
    h = hashlib.blake2b(digest_size=12)
    for path in closure(entry):
        h.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()

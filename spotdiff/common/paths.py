"""Paths as artifacts record them: relative to the declared input root, never the build machine's.

A stage reads its inputs by paths relative to the working directory (the repository root under ``dvc
repro`` and the ``pipeline`` deployment) or to a folder that a param names (``generate.folder``). What it
writes about them -- a photo's path in a group's record, the real-photo folder in the evaluation metrics,
a path param in the release's ``params.yaml`` and card -- must not say where this machine keeps them:
the same inputs built in another checkout, or by another entry point, must give the same bytes.

``portable(path, root)``: a relative path stays as written (POSIX separators); an absolute path inside
``root`` (default: the working directory) becomes relative to it; any other absolute path keeps only its
last component, marked ``<external>/name`` (real weights in ``/models/...``: the name says which, the
folder says only where this machine keeps them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

EXTERNAL = "<external>"
"""Stands for the folder of an absolute path outside the input root."""


def portable(path: str | Path, root: str | Path | None = None) -> str:
    """``path`` as an artifact records it (see the module docstring)."""
    text = str(path)
    if text.startswith("~"):
        text = os.path.expanduser(text)
    if not os.path.isabs(text):
        return Path(text).as_posix()
    p = Path(os.path.normpath(text))
    base = Path(os.path.normpath(os.path.abspath(root if root is not None else os.getcwd())))
    for candidate, anchor in ((p, base), (p.resolve(), base.resolve())):
        if candidate == anchor:
            return "."
        if candidate.is_relative_to(anchor):
            return candidate.relative_to(anchor).as_posix()
    return f"{EXTERNAL}/{p.name}"


def is_path_like(value: str) -> bool:
    """An absolute or home-relative path (what ``portable_tree`` rewrites)."""
    return value.startswith("~") or os.path.isabs(value)


def portable_tree(tree: Any, root: str | Path | None = None) -> Any:
    """``tree`` (plain JSON-like data, e.g. a params dump) with every absolute path string made ``portable``."""
    if isinstance(tree, dict):
        return {k: portable_tree(v, root) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [portable_tree(v, root) for v in tree]
    if isinstance(tree, str) and is_path_like(tree):
        return portable(tree, root)
    return tree

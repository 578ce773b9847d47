"""What a resumable piece of work belongs to: the library's code, so that work saved by an older version
of it is never picked up (train's checkpoint, generate's finished chunks)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def code_digest(root: str | Path | None = None) -> str:
    """blake2b of the library's source: every ``*.py`` under ``root`` (default: the ``spotdiff`` package),
    by relative path and bytes.

    ``dvc repro`` reruns a stage when its code changes, and what a previous run of it saved (a persisted
    checkpoint, finished chunks) must not then be resumed: it would hand back the old code's output.
    Hashing the whole library rather than one stage's imports costs ~1 ms and cannot miss a module; an
    interrupted run whose library was edited meanwhile starts afresh."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]
    h = hashlib.blake2b(digest_size=12)
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()

"""Stable seeds derived from names, so every random choice is reproducible on its own.

A group's randomness never depends on which worker ran it or in what order chunks
finished: each draw uses ``derive_seed(root_seed, "what", index...)``.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts (same parts -> same seed, on every platform)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def rng(*parts: object) -> np.random.Generator:
    """``numpy.random.default_rng(derive_seed(*parts))``."""
    return np.random.default_rng(derive_seed(*parts))


def unit_hash(*parts: object) -> float:
    """A number in [0, 1) fixed by the parts: used for stable hash splits."""
    return derive_seed(*parts) / float(1 << 63)

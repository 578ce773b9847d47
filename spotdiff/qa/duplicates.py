"""Cross-sample checks: exact and near duplicates, after every sample has been prepared.

Duplicates are judged in generate order: the first occurrence passes, every later copy
fails (so a duplicated pair loses one sample, not both). Views of one sample count as
"earlier" for each other in view order for exact copies (a ``bg`` view identical to its
anchor fails); they are never near duplicates of each other, since they are meant to
look alike (the variation checks judge them).

Near duplicates compare 256-bit perceptual hashes, searched only as far as the decision
needs: every pair closer than the threshold (``min_hash_distance``, 18 bits by default:
distances up to ``radius`` = 17 bits fail) is found, exactly, and a view with no earlier view
that close scores NaN (passes). The search is multi-index hashing: the bits are cut into
``radius + 1`` bands; two hashes at most ``radius`` bits apart agree exactly on at least one
band (pigeonhole), so only pairs sharing a band value are compared. With 14-15-bit bands the
compared pairs are ~1% of all pairs on generated views (13,900 of 1.6 M at 1,800 views), so the
time grows about linearly up to tens of thousands of views, where all pairs grew with the square.
A threshold so wide that bands would be under ``MIN_BAND_BITS`` falls back to all pairs (one
float32 matrix product per ``BLOCK`` rows), the same values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spotdiff.common.record import VIEWS

BLOCK = 512
"""All-pairs fallback: rows of the distance matrix computed at once (BLOCK x views float32)."""
MIN_BAND_BITS = 8
"""Narrowest band worth indexing: narrower bands have so few values that nearly every pair
shares one, and the all-pairs matrix product is then faster."""
_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], np.uint8)


@dataclass
class HashEntry:
    """What the duplicate search needs of one sample (None fields: the sample did not decode)."""

    subject_id: str
    phash: np.ndarray | None
    """(3, bits) uint8 0/1, one row per view in VIEWS order."""
    digests: list[bytes] | None


def exact_counts(entries: list[HashEntry]) -> list[dict[str, float]]:
    """Per sample, per view: how many earlier views (this sample's or earlier samples') have
    identical pixels."""
    seen: dict[bytes, int] = {}
    out = []
    for e in entries:
        values = {}
        if e.digests is not None:
            for v, d in zip(VIEWS, e.digests):
                values[v] = float(seen.get(d, 0))
                seen[d] = seen.get(d, 0) + 1
        out.append(values)
    return out


def failing_radius(min_distance: float, nbits: int) -> int:
    """The largest distance in bits that fails ``min_distance`` (a fraction of ``nbits``: a
    score ``d / nbits`` passes when it is at least ``min_distance``); -1 when none fails."""
    return max((d for d in range(nbits + 1) if d / nbits < min_distance), default=-1)


def _pairs_sharing(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (a, b), a < b, of row numbers whose ``keys`` are equal."""
    order = np.argsort(keys, kind="stable")  # within a key, rows stay ascending
    k = keys[order]
    start = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])  # first position of each run
    run_start = np.repeat(start, np.diff(np.r_[start, len(k)]))
    before = np.arange(len(k)) - run_start  # earlier rows in the run, per position
    total = int(before.sum())
    if total == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    later = np.repeat(np.arange(len(k)), before)
    offset = np.arange(total) - np.repeat(np.cumsum(before) - before, before)
    return order[run_start[later] + offset], order[later]


def _close_pairs(bits: np.ndarray, sample: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(earlier row, later row, distance in bits) of every pair of rows of different samples
    at most ``radius`` bits apart, by multi-index hashing (a pair may come more than once: it
    shares several bands). One band's candidates in memory at a time."""
    nbits = bits.shape[1]
    packed = np.packbits(bits, axis=1)
    edges = np.linspace(0, nbits, radius + 2).round().astype(int)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        keys = bits[:, lo:hi].astype(np.int64) @ (np.int64(1) << np.arange(hi - lo, dtype=np.int64))
        a, b = _pairs_sharing(keys)
        keep = sample[a] != sample[b]
        a, b = a[keep], b[keep]
        d = _POPCOUNT[packed[a] ^ packed[b]].sum(axis=1, dtype=np.int64)
        close = d <= radius
        found.append((a[close], b[close], d[close]))
    return tuple(np.concatenate(x) for x in zip(*found))  # type: ignore[return-value]


def _all_pairs(bits: np.ndarray, sample: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_close_pairs`` by comparing every pair: a matrix product per ``BLOCK`` rows."""
    f = bits.astype(np.float32)
    ones = f.sum(axis=1)
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for r0 in range(0, len(f), BLOCK):
        r1 = min(r0 + BLOCK, len(f))
        c1 = int(np.searchsorted(sample, sample[r1 - 1], side="left"))  # columns of earlier samples
        if c1 == 0:
            continue
        dist = np.rint(ones[r0:r1, None] + ones[None, :c1] - 2 * f[r0:r1] @ f[:c1].T).astype(np.int64)
        rows, cols = np.nonzero((dist <= radius) & (sample[None, :c1] < sample[r0:r1, None]))
        out.append((cols, rows + r0, dist[rows, cols]))
    if not out:
        return np.empty(0, np.intp), np.empty(0, np.intp), np.empty(0, np.int64)
    return tuple(np.concatenate(x) for x in zip(*out))  # type: ignore[return-value]


def nearest_earlier(entries: list[HashEntry], min_distance: float,
                    ) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Per sample, per view: least hash distance (fraction of bits) to any view of an earlier
    sample of the same subject, and of another subject, where it is below ``min_distance``;
    NaN where no earlier view is that close (or there is none)."""
    rows = [(i, j) for i, e in enumerate(entries) if e.phash is not None for j in range(len(VIEWS))]
    same: list[dict[str, float]] = [{} for _ in entries]
    other: list[dict[str, float]] = [{} for _ in entries]
    if not rows:
        return same, other
    bits = np.concatenate([entries[i].phash for i in dict.fromkeys(i for i, _ in rows)]).astype(np.uint8)
    nbits = bits.shape[1]
    sample = np.array([i for i, _ in rows])
    subjects = {s: k for k, s in enumerate(dict.fromkeys(entries[i].subject_id for i, _ in rows))}
    subject = np.array([subjects[entries[i].subject_id] for i, _ in rows])
    best_same = np.full(len(rows), np.inf)
    best_other = np.full(len(rows), np.inf)
    radius = failing_radius(min_distance, nbits)
    if radius >= 0:
        search = _close_pairs if nbits / (radius + 1) >= MIN_BAND_BITS else _all_pairs
        a, b, d = search(bits, sample, radius)  # a: the earlier row of each pair
        is_same = subject[a] == subject[b]
        np.minimum.at(best_same, b[is_same], d[is_same])
        np.minimum.at(best_other, b[~is_same], d[~is_same])
    for k, (i, j) in enumerate(rows):
        same[i][VIEWS[j]] = float(best_same[k] / nbits) if np.isfinite(best_same[k]) else float("nan")
        other[i][VIEWS[j]] = float(best_other[k] / nbits) if np.isfinite(best_other[k]) else float("nan")
    return same, other


def duplicate_values(entries: list[HashEntry], min_distance: float) -> dict[str, list[dict[str, float]]]:
    """Values of every cross-sample check, per sample in ``entries`` order; ``min_distance`` is
    ``qa.duplicates.min_hash_distance``, the nearest distance that passes."""
    same, other = nearest_earlier(entries, min_distance)
    return {"duplicate_exact": exact_counts(entries), "near_duplicate_subject": same, "near_duplicate_other": other}

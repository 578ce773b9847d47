"""Cross-sample checks: exact and near duplicates, after every sample has been prepared.

Duplicates are judged in generate order: the first occurrence passes, every later copy
fails (so a duplicated pair loses one sample, not both). Views of one sample count as
"earlier" for each other in view order for exact copies (a ``bg`` view identical to its
anchor fails); they are never near duplicates of each other, since they are meant to
look alike (the variation checks judge them).

Near duplicates compare 256-bit perceptual hashes with an exact all-pairs search:
Hamming distances come from one float32 matrix product per block of rows
(|a| + |b| - 2 a.b), only against earlier samples' columns. 12k views (4k groups) take
1.5 s on 2 cores; it grows with the square, so ~9 s for SpotDiff10k's 30k views, and
~200 MB of buffers there (``BLOCK`` rows at a time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spotdiff.common.record import VIEWS

BLOCK = 512
"""Rows of the distance matrix computed at once (BLOCK x views float32 buffers)."""


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


def nearest_earlier(entries: list[HashEntry]) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Per sample, per view: least hash distance (fraction of bits) to any view of an earlier
    sample of the same subject, and of another subject (NaN where there is none)."""
    rows = [(i, j) for i, e in enumerate(entries) if e.phash is not None for j in range(len(VIEWS))]
    same: list[dict[str, float]] = [{} for _ in entries]
    other: list[dict[str, float]] = [{} for _ in entries]
    if not rows:
        return same, other
    bits = np.concatenate([entries[i].phash for i in dict.fromkeys(i for i, _ in rows)]).astype(np.float32)
    nbits = bits.shape[1]
    sample = np.array([i for i, _ in rows])
    subjects = {s: k for k, s in enumerate(dict.fromkeys(entries[i].subject_id for i, _ in rows))}
    subject = np.array([subjects[entries[i].subject_id] for i, _ in rows])
    ones = bits.sum(axis=1)
    best_same = np.full(len(rows), np.nan)
    best_other = np.full(len(rows), np.nan)
    for r0 in range(0, len(rows), BLOCK):
        r1 = min(r0 + BLOCK, len(rows))
        # Columns of samples before this block's last sample; rows sorted by sample.
        c1 = int(np.searchsorted(sample, sample[r1 - 1], side="left"))
        if c1 == 0:
            continue
        dist = (ones[r0:r1, None] + ones[None, :c1] - 2 * bits[r0:r1] @ bits[:c1].T) / nbits
        earlier = sample[None, :c1] < sample[r0:r1, None]
        same_subject = subject[None, :c1] == subject[r0:r1, None]
        for mask, best in ((earlier & same_subject, best_same), (earlier & ~same_subject, best_other)):
            d = np.where(mask, dist, np.inf).min(axis=1)
            best[r0:r1] = np.where(np.isfinite(d), d, np.nan)
    for k, (i, j) in enumerate(rows):
        same[i][VIEWS[j]] = float(best_same[k])
        other[i][VIEWS[j]] = float(best_other[k])
    return same, other


def duplicate_values(entries: list[HashEntry]) -> dict[str, list[dict[str, float]]]:
    """Values of every cross-sample check, per sample in ``entries`` order."""
    same, other = nearest_earlier(entries)
    return {"duplicate_exact": exact_counts(entries), "near_duplicate_subject": same, "near_duplicate_other": other}

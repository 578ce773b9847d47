"""Orthogonality, invariance and retrieval metrics on feature arrays.

Features are rows of a 2-D array (one row per image); every similarity is the cosine, so
feature scale never matters. In the subject-group arrays row ``i`` of ``anchor``, ``bg`` and
``pose`` is the same subject ``i`` (views of one SpotDiff group). Results are plain dicts of
floats, ints and ``{"value", "low", "high"}`` intervals (see ``bootstrap.bootstrap_ci``),
ready for ``json.dump``.

Scale: everything is vectorised for ~10k subjects. Retrieval is one matrix product, done in
row blocks so 10k x 10k similarities never sit in memory at once; ROC AUC comes from sorted
ranks (Mann-Whitney), not pair loops; invariance uses every different-subject pair up to
``max_neg_pairs`` and a seeded sample of pairs beyond that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from spotdiff.common import seeding
from spotdiff.evaluate.bootstrap import bootstrap_ci

_BLOCK_CELLS = 1 << 23
"""Similarity cells computed per block (8M float32 = 32 MB)."""

MAX_NEG_PAIRS = 200_000
"""Different-subject pairs per change type in ``invariance`` (all pairs up to ~450 subjects)."""


def unit_rows(x: np.ndarray, name: str = "features") -> np.ndarray:
    """Rows scaled to unit length (float64). Raises on a non-2-D array, a non-finite value or a
    zero row (its cosine is undefined), naming ``name`` and the first bad row."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D array (rows x dims), got shape {x.shape}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise ValueError(f"{name}: {int(bad.sum())} rows hold NaN/inf (first: row {int(np.argmax(bad))})")
    norms = np.linalg.norm(x, axis=1)
    if (norms == 0).any():
        zero = norms == 0
        raise ValueError(f"{name}: {int(zero.sum())} all-zero rows have no direction "
                         f"(first: row {int(np.argmax(zero))}); cosine is undefined")
    return x / norms[:, None]


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: row-paired arrays must have the same shape, got {a.shape} and {b.shape}")


def abs_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|cosine| between row ``i`` of ``a`` and row ``i`` of ``b``, shape (rows,)."""
    ua, ub = unit_rows(a, "a"), unit_rows(b, "b")
    _same_shape(ua, ub, "abs_cos")
    return np.abs(np.einsum("ij,ij->i", ua, ub))


def mean_abs_cos(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |cosine| between row-paired vectors (e.g. the subject and pose features of the same
    images): 0 = orthogonal, 1 = parallel."""
    return float(abs_cos(a, b).mean())


def orthogonality(a: np.ndarray, b: np.ndarray, subjects: np.ndarray | None = None, *,
                  n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """``mean_abs_cos(a, b)`` with a bootstrap interval over subjects; ``subjects`` labels each row
    (None: every row is its own subject)."""
    return bootstrap_ci(abs_cos(a, b), subjects=subjects, n_boot=n_boot, seed=seed, level=level)


class _WeightedAuc:
    """ROC AUC of positive vs negative scores (ties count one half) under sample weights.

    Negatives are sorted once; each call is then a cumulative sum, so a bootstrap replicate
    costs O(positives + negatives) instead of a re-sort.
    """

    def __init__(self, pos: np.ndarray, neg: np.ndarray):
        order = np.argsort(neg, kind="stable")
        # Callers that pass sorted negatives save a gather per replicate.
        self.order = None if np.array_equal(order, np.arange(neg.size)) else order
        neg_sorted = neg if self.order is None else neg[order]
        self.lo = np.searchsorted(neg_sorted, pos, side="left")
        self.hi = np.searchsorted(neg_sorted, pos, side="right")

    def __call__(self, w_pos: np.ndarray, w_neg: np.ndarray) -> float:
        cum = np.concatenate([[0.0], np.cumsum(w_neg if self.order is None else w_neg[self.order])])
        below = cum[self.lo]
        ties = cum[self.hi] - below
        den = w_pos.sum() * cum[-1]
        return float(w_pos @ (below + 0.5 * ties) / den) if den > 0 else float("nan")


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC: probability that a positive score exceeds a negative one (ties count 1/2),
    computed from ranks in O((P + N) log N)."""
    pos = np.asarray(pos, dtype=np.float64).ravel()
    neg = np.asarray(neg, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"roc_auc needs positives and negatives, got {pos.size} and {neg.size}")
    return _WeightedAuc(pos, neg)(np.ones(pos.size), np.ones(neg.size))


def different_subject_pairs(n: int, max_pairs: int = MAX_NEG_PAIRS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i != j``: all ``n * (n - 1)`` ordered pairs if that is at most
    ``max_pairs``, else ``max(1, max_pairs // n)`` partners per ``i`` drawn uniformly (with
    replacement) from the other subjects, seeded by ``seed``."""
    if n < 2:
        raise ValueError(f"different-subject pairs need at least 2 subjects, got {n}")
    if n * (n - 1) <= max_pairs:
        i, j = np.nonzero(~np.eye(n, dtype=bool))
        return i, j
    per = max(1, max_pairs // n)
    i = np.repeat(np.arange(n), per)
    j = (i + seeding.rng(seed, "different-subject-pairs", n).integers(1, n, size=i.size)) % n
    return i, j


def _pair_cos(ua: np.ndarray, ub: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """cos(ua[i[k]], ub[j[k]]) for every k (unit rows in), gathered in blocks."""
    out = np.empty(i.size)
    step = max(1, _BLOCK_CELLS // (4 * ua.shape[1]))
    for s in range(0, i.size, step):
        out[s:s + step] = np.einsum("ij,ij->i", ua[i[s:s + step]], ub[j[s:s + step]])
    return out


def invariance(anchor: np.ndarray, changed: Mapping[str, np.ndarray], *, n_boot: int = 1000, seed: int = 0,
               level: float = 0.95, max_neg_pairs: int = MAX_NEG_PAIRS) -> dict:
    """Does a feature keep identity across a pose or background change?

    ``anchor`` (N, D) and each ``changed[name]`` (N, D) (e.g. ``{"pose": ..., "bg": ...}``) hold
    the views of N subjects, row ``i`` = subject ``i``. For each change type:

    - ``same``: mean cos(anchor_i, view_i), one pair per subject;
    - ``different``: mean cos(anchor_i, view_j), i != j (the same comparison with the subject
      swapped; see ``different_subject_pairs`` for which pairs);
    - ``margin``: same - different;
    - ``auc``: ROC AUC of same pairs (positive) against different pairs (negative); 1 = every
      same-subject pair is more similar than every different-subject pair, 0.5 = chance.

    Each is ``{"value", "low", "high"}`` with a subject bootstrap (a different-subject pair counts
    ``w_i * w_j`` times in a replicate). The same negative pairs serve every change type.
    """
    ua = unit_rows(anchor, "anchor")
    n = ua.shape[0]
    if n < 2:
        raise ValueError(f"invariance needs at least 2 subjects, got {n}")
    i, j = different_subject_pairs(n, max_neg_pairs, seed)
    out: dict = {"n_subjects": n, "n_different_pairs": int(i.size)}
    for name, view in changed.items():
        uv = unit_rows(view, name)
        _same_shape(ua, uv, f"invariance: anchor vs {name}")
        same = np.einsum("ij,ij->i", ua, uv)
        diff = _pair_cos(ua, uv, i, j)
        order = np.argsort(diff, kind="stable")  # sorted once, so replicates skip a gather
        vi, vj, diff = i[order], j[order], diff[order]
        auc = _WeightedAuc(same, diff)

        def stats(w: np.ndarray, same: np.ndarray = same, diff: np.ndarray = diff, vi: np.ndarray = vi,
                  vj: np.ndarray = vj, auc: _WeightedAuc = auc) -> dict:
            w_pair = w[vi] * w[vj]
            mean_same = w @ same / w.sum()
            mean_diff = w_pair @ diff / w_pair.sum() if w_pair.sum() > 0 else float("nan")
            return {"same": mean_same, "different": mean_diff, "margin": mean_same - mean_diff,
                    "auc": auc(w, w_pair)}

        out[name] = bootstrap_ci(stats, n, n_boot=n_boot, seed=seed, level=level)
    return out


def _ks(k: int | Sequence[int]) -> np.ndarray:
    ks = np.atleast_1d(np.asarray(k))
    if ks.ndim != 1 or ks.size == 0 or not np.issubdtype(ks.dtype, np.integer) or (ks < 1).any():
        raise ValueError(f"k must be positive integers, got {k!r}")
    return ks


def _hits(n_better: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """(queries, len(ks)) hit flags: a query hits at k when fewer than k wrong gallery items score
    at least as high as its best right one (ties count against the query, so a constant
    feature scores 0, not 1)."""
    return (n_better[:, None] < ks[None, :]).astype(np.float64)


def retrieval_hits(gallery: np.ndarray, query: np.ndarray, k: int | Sequence[int] = (1, 5)) -> np.ndarray:
    """(N, len(k)) hit flags: query row ``i`` ranks all N gallery rows by cosine and hits at ``k`` when
    gallery row ``i`` (the same subject) is among its ``k`` most similar (ties count against it)."""
    ks = _ks(k)
    ug = unit_rows(gallery, "gallery")
    uq = unit_rows(query, "query")
    _same_shape(ug, uq, "retrieval: gallery vs query")
    n = ug.shape[0]
    g, uq = ug.T.astype(np.float32), uq.astype(np.float32)
    step = max(1, _BLOCK_CELLS // n)
    n_better = np.empty(n, dtype=np.int64)
    for s in range(0, n, step):
        sim = uq[s:s + step] @ g
        rows = np.arange(sim.shape[0])
        right = sim[rows, s + rows]
        n_better[s:s + step] = (sim >= right[:, None]).sum(axis=1) - 1  # minus the right item itself
    return _hits(n_better, ks)


def retrieval_topk(anchor: np.ndarray, queries: Mapping[str, np.ndarray] | np.ndarray,
                   k: int | Sequence[int] = (1, 5), *, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> dict:
    """Re-identify subjects: each query view ranks all N ``anchor`` rows (the gallery) by cosine.

    ``queries`` maps view name -> (N, D) array (row ``i`` is subject ``i``'s view; a bare array
    is named ``"query"``). Query ``i`` hits at ``k`` when anchor ``i`` is among its ``k`` most
    similar anchors (ties count against it). Returns per view ``{"top1": interval, "top5": interval,
    ...}`` (hit rate; bootstrap over subjects with the gallery fixed: top-k depends on gallery size, so
    the interval is for this N), plus ``n_gallery``. Chance top-k is k / N. There is no average over
    views: a view that shares a factor with the gallery (a pose view shares the anchor's background)
    can be won by that factor alone, and an average would hide which view was won how.
    """
    if not isinstance(queries, Mapping):
        queries = {"query": queries}
    if not queries:
        raise ValueError("retrieval_topk: no query views given")
    ks = _ks(k)
    out: dict = {"n_gallery": int(np.asarray(anchor).shape[0])}
    boot = dict(n_boot=n_boot, seed=seed, level=level)
    for name, view in queries.items():
        hits = retrieval_hits(anchor, view, ks)
        out[name] = {f"top{kk}": bootstrap_ci(hits[:, m], **boot) for m, kk in enumerate(ks)}
    return out


def retrieval_loo_hits(features: np.ndarray, labels: Sequence | np.ndarray,
                       k: int | Sequence[int] = (1, 5)) -> np.ndarray:
    """(photos, len(k)) hit flags of leave-one-out retrieval (``retrieval_loo``): each photo queries all
    *other* photos by cosine and hits at ``k`` when a photo of its subject is among its ``k`` nearest (ties
    count against it)."""
    ks = _ks(k)
    ux = unit_rows(features, "features")
    labels = np.asarray(labels)
    n = ux.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"retrieval_loo: labels has shape {labels.shape}, expected ({n},)")
    names, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if names.size < 2:
        raise ValueError(f"retrieval_loo needs at least 2 subjects, got {names.size}")
    if (counts < 2).any():
        lonely = [str(x) for x in names[counts < 2][:5]]
        raise ValueError(f"retrieval_loo: subjects with a single photo have nothing to retrieve: {lonely}")
    gallery = ux.T.astype(np.float32)
    ux = ux.astype(np.float32)
    step = max(1, _BLOCK_CELLS // n)
    n_better = np.empty(n, dtype=np.int64)
    for s in range(0, n, step):
        sim = ux[s:s + step] @ gallery
        rows = np.arange(sim.shape[0])
        sim[rows, s + rows] = -np.inf  # the query itself is not in its gallery
        same = inv[s:s + step, None] == inv[None, :]
        same[rows, s + rows] = False
        best = np.where(same, sim, -np.inf).max(axis=1)
        n_better[s:s + step] = ((sim >= best[:, None]) & ~same).sum(axis=1)
    return _hits(n_better, ks)


def retrieval_loo(features: np.ndarray, labels: Sequence | np.ndarray, k: int | Sequence[int] = (1, 5), *,
                  n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Leave-one-out retrieval on labelled photos (e.g. a folder of real photos, ~5 per subject).

    Each photo queries all *other* photos by cosine; it hits at ``k`` when a photo of the same
    subject is among its ``k`` nearest (ties count against it). Every subject needs at least 2
    photos. Returns ``{"n_photos", "n_subjects", "top1": interval, "top5": interval, ...}``; the
    interval resamples subjects (all photos of a drawn subject come along). Chance top-1 is about
    (photos per subject - 1) / (photos - 1).
    """
    ks = _ks(k)
    hits = retrieval_loo_hits(features, labels, ks)
    labels = np.asarray(labels)
    out: dict = {"n_photos": int(labels.size), "n_subjects": int(np.unique(labels).size)}
    for m, kk in enumerate(ks):
        out[f"top{kk}"] = bootstrap_ci(hits[:, m], subjects=labels, n_boot=n_boot, seed=seed, level=level)
    return out

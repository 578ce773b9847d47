"""Percentile bootstrap over subjects: the confidence interval every evaluation number carries.

Subjects are the unit of resampling, because views (and photos) of one subject are not
independent: a subject drawn twice brings all its views twice. One bootstrap replicate draws
``n`` subject indices with replacement; this module hands statistics the *multiplicity
weights* of that draw (``w[i]`` = how many times subject ``i`` was drawn, ``sum(w) == n``),
which is the same resample written so pair statistics stay cheap and exact: a different-subject
pair ``(i, j)`` counts ``w[i] * w[j]`` times, and two copies of one subject never form a
"different-subject" pair. A statistic that wants the indices themselves can rebuild them with
``np.repeat(np.arange(n), w)``.

Replicate ``b`` depends only on ``(seed, n, b)``: two calls with the same seed and subject count
resample the same subjects, so intervals of the raw and the subject feature (or of a
difference between them) come from paired resamples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

from spotdiff.common import seeding

_CHUNK_CELLS = 1 << 22
"""Weights drawn per block (replicates x subjects), so 10k subjects x 1000 replicates stays ~32 MB."""


def interval(value: float, low: float | None = None, high: float | None = None) -> dict:
    """The result shape of every bootstrapped number: ``{"value", "low", "high"}`` as plain floats
    (``None`` for a bound that was not computed or is undefined)."""
    return {"value": _num(value), "low": _num(low), "high": _num(high)}


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def resample_weights(n_subjects: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Multiplicity weights of ``n_boot`` subject resamples, in blocks of shape (replicates, n_subjects).

    Each replicate draws ``n_subjects`` indices uniformly with replacement and counts them.
    """
    if n_subjects < 1:
        raise ValueError(f"bootstrap needs at least one subject, got n_subjects={n_subjects}")
    rng = seeding.rng(seed, "bootstrap-subjects", n_subjects)
    per_block = max(1, _CHUNK_CELLS // n_subjects)
    done = 0
    while done < n_boot:
        b = min(per_block, n_boot - done)
        idx = rng.integers(0, n_subjects, size=(b, n_subjects))
        idx += np.arange(b)[:, None] * n_subjects  # one bincount for the whole block
        yield np.bincount(idx.ravel(), minlength=b * n_subjects).reshape(b, n_subjects).astype(np.float64)
        done += b


def _percentiles(reps: np.ndarray, level: float) -> tuple[float | None, float | None]:
    reps = reps[np.isfinite(reps)]  # a replicate can be undefined (e.g. AUC with one distinct subject)
    if reps.size == 0:
        return None, None
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(reps, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_ci(values_or_fn: np.ndarray | Callable[[np.ndarray], float | dict], n_subjects: int | None = None, *,
                 subjects: np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict:
    """Point estimate and percentile-bootstrap interval, resampling subjects with replacement.

    ``values_or_fn`` is one of:

    - a 1-D array of per-subject values: the statistic is their mean;
    - a 1-D array of per-sample values with ``subjects`` (the subject label of each sample, any
      hashable values): the statistic is the mean over samples, and a resample brings all samples
      of each drawn subject (a cluster bootstrap);
    - a function ``fn(w)`` of the subject multiplicity weights ``w`` (float array of length
      ``n_subjects``; the point estimate is ``fn(ones)``), with ``n_subjects`` given. It returns a
      float, or a dict of named floats to bootstrap several statistics on the same replicates
      (one evaluation per replicate) and get a dict of intervals back.

    Returns ``{"value", "low", "high"}`` (floats; ``low``/``high`` are None when ``n_boot == 0``;
    an undefined value or bound is None).
    ``level`` is the two-sided coverage (0.95: the 2.5th and 97.5th percentiles of the
    replicates). Replicates where the statistic is NaN are left out of the percentiles.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_ci: level must be in (0, 1), got {level}")
    if n_boot < 0:
        raise ValueError(f"bootstrap_ci: n_boot must be >= 0, got {n_boot}")
    if callable(values_or_fn):
        if n_subjects is None or subjects is not None:
            raise ValueError("bootstrap_ci: a statistic function needs n_subjects (and takes no subjects labels)")
        return _bootstrap_fn(values_or_fn, n_subjects, n_boot, seed, level)

    values = np.asarray(values_or_fn, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"bootstrap_ci: values must be a non-empty 1-D array, got shape {values.shape}")
    if subjects is None:
        sums, counts = values, np.ones_like(values)
    else:
        subjects = np.asarray(subjects)
        if subjects.shape != values.shape:
            raise ValueError(f"bootstrap_ci: subjects has shape {subjects.shape}, values {values.shape}")
        _, inverse = np.unique(subjects, return_inverse=True)
        sums = np.bincount(inverse, weights=values)
        counts = np.bincount(inverse).astype(np.float64)
    if n_subjects is not None and n_subjects != sums.size:
        raise ValueError(f"bootstrap_ci: n_subjects={n_subjects} but the values hold {sums.size} subjects")
    value = sums.sum() / counts.sum()
    if not n_boot:
        return interval(value)
    reps = np.concatenate([(w @ sums) / (w @ counts) for w in resample_weights(sums.size, n_boot, seed)])
    return interval(value, *_percentiles(reps, level))


def _bootstrap_fn(fn: Callable[[np.ndarray], float | dict], n_subjects: int, n_boot: int, seed: int,
                  level: float) -> dict:
    point = fn(np.ones(n_subjects))
    reps = [fn(w) for block in resample_weights(n_subjects, n_boot, seed) for w in block]
    if isinstance(point, dict):
        return {key: _interval_of(point[key], np.array([r[key] for r in reps], float), n_boot, level)
                for key in point}
    return _interval_of(point, np.array(reps, float), n_boot, level)


def _interval_of(value: float, reps: np.ndarray, n_boot: int, level: float) -> dict:
    return interval(value, *(_percentiles(reps, level) if n_boot else (None, None)))


def bootstrap_means(fn: Callable[..., float], columns: Mapping[str, np.ndarray], subjects: np.ndarray | None = None, *,
                    n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Interval of ``fn(**means)``, where ``means[name]`` is the mean of ``columns[name]`` over a subject resample.

    Every column holds one value per sample, the same samples in the same order (e.g. hit flags of two
    features on the same queries), and ``subjects`` labels each sample (None: every sample is its own
    subject); a resample brings all samples of each drawn subject, and every column is resampled with the
    same draw. So ``fn = lambda a, b: a - b`` gives the paired difference of two features' scores, whose
    interval is narrower than the gap between their separate intervals suggests."""
    names = list(columns)
    arrays = [np.asarray(columns[k], dtype=np.float64) for k in names]
    if not arrays or any(a.ndim != 1 or a.shape != arrays[0].shape or a.size == 0 for a in arrays):
        raise ValueError(f"bootstrap_means: columns must be non-empty 1-D arrays of one length, got "
                         f"{[a.shape for a in arrays]}")
    if subjects is None:
        inverse = np.arange(arrays[0].size)
    else:
        subjects = np.asarray(subjects)
        if subjects.shape != arrays[0].shape:
            raise ValueError(f"bootstrap_means: subjects has shape {subjects.shape}, columns {arrays[0].shape}")
        _, inverse = np.unique(subjects, return_inverse=True)
    sums = np.stack([np.bincount(inverse, weights=a) for a in arrays])
    counts = np.bincount(inverse).astype(np.float64)

    def stat(w: np.ndarray) -> float:
        return fn(**dict(zip(names, (sums @ w) / (counts @ w))))

    return bootstrap_ci(stat, counts.size, n_boot=n_boot, seed=seed, level=level)

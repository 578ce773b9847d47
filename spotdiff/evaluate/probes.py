"""Leakage probes: how much of a label can a linear model read off a feature?

A probe is fit on the features of *train* subjects and scored on *test* subjects (disjoint), so
it measures what the feature carries about the label in general, not memorised subjects. For a
subject feature, high probe accuracy on pose or background labels means leakage; the same probe
on the raw backbone feature is the reference.

Regularisation: features are standardised (mean 0, variance 1 per dimension, fit on train), then
LogisticRegression (lbfgs; multinomial when there are more than two classes) with ``C = 1.0`` or
Ridge with ``alpha = 1.0`` by default. One fixed strength keeps raw and subject features on equal
terms and each probe to a single fit (seconds at 10k x 768). Passing a sequence instead
(e.g. ``C=(0.01, 0.1, 1, 10)``) picks the value by ``cv_folds``-fold cross-validation on the train
set only, grouped by ``train_groups`` (train subject ids) when given, so no subject is in both a
CV train and CV validation fold.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from spotdiff.evaluate.bootstrap import bootstrap_ci

KINDS = ("classification", "regression")


def _check_xy(x: np.ndarray, y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"linear_probe: {name}_x must be a non-empty 2-D array, got shape {x.shape}")
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise ValueError(f"linear_probe: {name}_y has shape {y.shape}, expected ({x.shape[0]},) or ({x.shape[0]}, k)")
    if not np.isfinite(x).all():
        raise ValueError(f"linear_probe: {name}_x holds NaN/inf")
    return x, y


def _model(kind: str, strength: float, seed: int, max_iter: int):
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "classification":
        head = LogisticRegression(C=strength, max_iter=max_iter, random_state=seed)
    else:
        head = Ridge(alpha=strength)
    return Pipeline([("scale", StandardScaler()), ("head", head)])


def _choose(kind: str, grid: list[float], x: np.ndarray, y: np.ndarray, groups: np.ndarray | None,
            folds: int, seed: int, max_iter: int) -> float:
    """The grid value with the best mean CV score on the train set (first one on ties)."""
    from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, StratifiedKFold

    if groups is not None:
        cv = GroupKFold(n_splits=folds)
    elif kind == "classification":
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    else:
        cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
    search = GridSearchCV(_model(kind, grid[0], seed, max_iter), {"head__" + ("C" if kind == "classification"
                                                                              else "alpha"): grid},
                          cv=cv, scoring="accuracy" if kind == "classification" else "r2", refit=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-converged CV fits still rank fine
        search.fit(x, y, groups=groups)
    return float(grid[int(np.argmax(search.cv_results_["mean_test_score"]))])


def _r2_stat(y: np.ndarray, pred: np.ndarray, subjects: np.ndarray):
    """(R^2 of the whole test set, fn(w) giving R^2 of a subject resample). Multi-output R^2 is
    the plain mean over outputs (scikit-learn's ``uniform_average``)."""
    y = y.reshape(len(y), -1).astype(np.float64)
    pred = pred.reshape(len(y), -1)
    _, inv = np.unique(subjects, return_inverse=True)
    m = int(inv.max()) + 1

    def per_subject(v: np.ndarray) -> np.ndarray:
        return np.stack([np.bincount(inv, weights=v[:, c], minlength=m) for c in range(v.shape[1])], axis=1)

    cnt = np.bincount(inv, minlength=m).astype(np.float64)
    sy, syy, sse = per_subject(y), per_subject(y * y), per_subject((y - pred) ** 2)

    def fn(w: np.ndarray) -> float:
        total = w @ cnt
        sst = w @ syy - (w @ sy) ** 2 / total
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = 1.0 - (w @ sse) / sst
        return float(np.mean(r2)) if np.all(sst > 1e-12 * np.maximum(w @ syy, 1.0)) else float("nan")

    return fn, m


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 kind: str = "classification", *, seed: int = 0, C: float | Sequence[float] = 1.0,
                 alpha: float | Sequence[float] = 1.0, train_groups: np.ndarray | None = None,
                 test_subjects: np.ndarray | None = None, cv_folds: int = 3, max_iter: int = 2000,
                 n_boot: int = 1000, level: float = 0.95) -> dict:
    """Fit a linear probe on (train_x, train_y) and score it on (test_x, test_y).

    ``kind="classification"``: labels of any type; ``score`` is test accuracy and ``chance`` the
    majority-class frequency of the test set. ``kind="regression"``: targets (n,) or (n, k);
    ``score`` is test R^2 (mean over outputs) and ``chance`` is 0.

    ``test_subjects`` (subject id per test row) makes the interval a bootstrap over test subjects;
    None treats every test row as its own subject. Returns
    ``{"kind", "metric", "score": {"value", "low", "high"}, "chance", "strength", "converged",
    "n_train", "n_test", "n_test_subjects", "n_classes" (classification only), "per_sample"}``
    where ``per_sample`` lists, per test row, 1.0/0.0 for correct/wrong (classification) or the
    squared error summed over outputs (regression), for a caller's own bootstrap; ``strength`` is
    the C or alpha used.
    """
    if kind not in KINDS:
        raise ValueError(f"linear_probe: kind must be one of {KINDS}, got {kind!r}")
    train_x, train_y = _check_xy(train_x, train_y, "train")
    test_x, test_y = _check_xy(test_x, test_y, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"linear_probe: train has {train_x.shape[1]} dims, test {test_x.shape[1]}")
    if test_subjects is None:
        test_subjects = np.arange(len(test_x))
    test_subjects = np.asarray(test_subjects)
    if test_subjects.shape != (len(test_x),):
        raise ValueError(f"linear_probe: test_subjects has shape {test_subjects.shape}, expected ({len(test_x)},)")
    if train_groups is not None:
        train_groups = np.asarray(train_groups)
        if train_groups.shape != (len(train_x),):
            raise ValueError(f"linear_probe: train_groups has shape {train_groups.shape}, expected ({len(train_x)},)")
    if kind == "classification":
        if train_y.ndim != 1:
            raise ValueError(f"linear_probe: classification labels must be 1-D, got shape {train_y.shape}")
        if np.unique(train_y).size < 2:
            raise ValueError("linear_probe: the train labels hold a single class; nothing to classify")
    elif not (np.issubdtype(train_y.dtype, np.number) and np.issubdtype(test_y.dtype, np.number)):
        raise ValueError(f"linear_probe: regression targets must be numbers, got {train_y.dtype} / {test_y.dtype}")

    given = C if kind == "classification" else alpha
    grid = [float(v) for v in np.atleast_1d(given)]
    if not grid or min(grid) <= 0:
        raise ValueError(f"linear_probe: regularisation strengths must be > 0, got {given!r}")
    strength = grid[0] if len(grid) == 1 else _choose(kind, grid, train_x, train_y, train_groups,
                                                      cv_folds, seed, max_iter)
    model = _model(kind, strength, seed, max_iter)
    with warnings.catch_warnings():
        # lbfgs can stop at max_iter on large, nearly separable problems; the result says so
        # in "converged" instead of a warning per probe.
        warnings.simplefilter("ignore")
        model.fit(train_x, train_y)
    pred = model.predict(test_x)
    head = model.named_steps["head"]
    converged = bool(np.all(np.asarray(getattr(head, "n_iter_", 0)) < max_iter)) if kind == "classification" else True
    _, subj_inv = np.unique(test_subjects, return_inverse=True)
    out: dict = {"kind": kind, "metric": "accuracy" if kind == "classification" else "r2",
                 "strength": strength, "converged": converged, "n_train": int(len(train_x)),
                 "n_test": int(len(test_x)), "n_test_subjects": int(subj_inv.max()) + 1}
    boot = dict(n_boot=n_boot, seed=seed, level=level)
    if kind == "classification":
        correct = (pred == test_y).astype(np.float64)
        _, counts = np.unique(test_y, return_counts=True)
        out["n_classes"] = int(np.unique(train_y).size)
        out["score"] = bootstrap_ci(correct, subjects=subj_inv, **boot)
        out["chance"] = float(counts.max() / counts.sum())
        out["per_sample"] = correct.tolist()
    else:
        fn, m = _r2_stat(test_y, pred, subj_inv)
        out["score"] = bootstrap_ci(fn, m, **boot)
        if out["score"]["value"] is None:
            raise ValueError("linear_probe: a test target is constant, so R^2 is undefined")
        out["chance"] = 0.0
        sq = (test_y.reshape(len(test_y), -1) - pred.reshape(len(test_y), -1)) ** 2
        out["per_sample"] = sq.sum(axis=1).tolist()
    return out

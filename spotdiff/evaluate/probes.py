"""Leakage probes: how much of a label can a linear model read off a feature?

``grouped_probe`` + ``leakage`` are what the evaluate stage uses (``protocol``): the probe is fit and scored
on subjects the encoder never trained on, by cross-validation grouped by subject, so no probe is scored on a
subject it was fit on; every feature is reduced by PCA to one dimensionality inside the folds, so a wide
feature (8320 raw values) has no more room to fit than the 64-value subject feature, and that keeps each fit
cheap; C is chosen by a nested, also grouped, cross-validation. Chance is what a guess by the class prior
scores; leakage is accuracy above it, clipped at 0.

``linear_probe`` is the plain train/test probe (fit on one set of subjects, scored on another, one
regularisation strength or a grid chosen by cross-validation on the train set, ``chance`` the majority-class
rate), kept for callers that have a separate probe split.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

from spotdiff.evaluate.bootstrap import bootstrap_ci, bootstrap_means

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


PROBE_C = (0.01, 0.1, 1.0, 10.0, 100.0)
"""Inverse regularisation strengths of the leakage probe's logistic regression; the inner cross-validation
chooses one per outer fold."""


def pca_basis(x: np.ndarray, k: int, *, transform: Callable[[np.ndarray], np.ndarray] | None = None,
              block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(centre (d,), basis (d, k')) of the top ``k`` principal directions of the rows of ``x`` (or of
    ``transform(x)``, applied ``block`` rows at a time); k' < k when the rows span fewer. Exact, through the
    eigenvectors of the smaller of the Gram (rows x rows) and the covariance (dims x dims) matrix: a 140-row
    probe fold of an 8320-value feature costs one 140 x 140 eigendecomposition instead of a full SVD. With
    more rows than dims the covariance is summed block by block, so memory is d x d plus one block, not
    another copy of every row (evaluate's PCA baseline over 26k train views at 10k groups). Each direction's
    sign makes its largest entry positive."""
    n = len(x)

    def rows(s: int, e: int) -> np.ndarray:
        r = x[s:e] if transform is None else transform(x[s:e])
        return np.asarray(r, dtype=np.float64)

    first = rows(0, min(n, block))
    d = first.shape[1]
    if n <= block:
        centre = first.mean(axis=0)
    else:
        total = first.sum(axis=0)
        for s in range(block, n, block):
            total += rows(s, s + block).sum(axis=0)
        centre = total / n
    if n < d:
        xc = (first if n <= block else rows(0, n)) - centre
        vals, vecs = np.linalg.eigh(xc @ xc.T)
        order = np.argsort(vals)[::-1][:k]
        vals = vals[order]
        keep = vals > max(vals[0], 0.0) * 1e-10 if vals.size else np.zeros(0, bool)
        basis = xc.T @ (vecs[:, order[keep]] / np.sqrt(vals[keep]))
    else:
        cov = np.zeros((d, d))
        for s in range(0, n, block):
            b = (first if s == 0 else rows(s, s + block)) - centre
            cov += b.T @ b
        vals, vecs = np.linalg.eigh(cov)
        order = np.argsort(vals)[::-1][:k]
        keep = vals[order] > max(vals[order][0], 0.0) * 1e-10 if order.size else np.zeros(0, bool)
        basis = vecs[:, order[keep]]
    if basis.shape[1] == 0:
        basis = np.zeros((d, 1))  # constant rows: one all-zero component, which the probe reads as nothing
    flip = np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(basis.shape[1])])
    return centre, basis * np.where(flip == 0, 1.0, flip)


def _fit_predict(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, c: float, seed: int, max_iter: int) -> np.ndarray:
    """Predictions of a logistic regression fit on (x_tr, y_tr); a single training class is predicted as is."""
    from sklearn.linear_model import LogisticRegression

    classes = np.unique(y_tr)
    if classes.size < 2:
        return np.full(len(x_te), classes[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a non-converged fit still predicts; nested CV picks C on what it predicts
        return LogisticRegression(C=c, max_iter=max_iter, random_state=seed).fit(x_tr, y_tr).predict(x_te)


def _folds(groups: np.ndarray, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import GroupKFold

    n = min(n, np.unique(groups).size)
    cv = GroupKFold(n_splits=n, shuffle=True, random_state=seed)
    return list(cv.split(np.zeros((len(groups), 1)), groups=groups))


def _reduced(x: np.ndarray, tr: np.ndarray, te: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows ``tr`` and ``te`` of ``x`` standardised, projected on at most ``dim`` principal directions and
    scaled to unit variance per component, every statistic fit on the ``tr`` rows alone: every feature reaches
    the classifier at the same dimensionality and scale."""
    mean, std = x[tr].mean(axis=0), x[tr].std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    a, b = (x[tr] - mean) / std, (x[te] - mean) / std
    centre, basis = pca_basis(a, max(1, min(dim, len(tr) - 1)))
    a, b = (a - centre) @ basis, (b - centre) @ basis
    scale = a.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return a / scale, b / scale, basis.shape[1]


def grouped_probe(x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, dim: int, grid: Sequence[float] = PROBE_C,
                  outer: int = 5, inner: int = 3, seed: int = 0, max_iter: int = 1000) -> dict:
    """Out-of-fold linear probe of label ``y`` on features ``x``, never scored on a subject it was fit on.

    Outer folds group the rows by ``groups`` (subject ids): each outer fold's images are predicted by a probe
    fit on the other folds' subjects only. On those, the features are standardised and reduced by PCA to
    ``dim`` components (fit on the outer-train rows alone; the same ``dim`` for every feature, so a wide
    feature has no more room to fit than a narrow one), and the logistic regression's C is chosen from
    ``grid`` by an inner cross-validation grouped by subject on the same rows (mean accuracy; ties go to the
    smaller C, the stronger regularisation). Nothing is chosen on the rows it is scored on.

    Returns ``{"correct": 0/1 per row, "prior": per row the outer-train frequency of its true class, "C":
    the C of each outer fold, "dim": the fewest components a fold used, "folds": outer folds}``. ``prior``
    is what a classifier that guesses by the class prior scores on the row, so its mean is the chance level
    (``sum_k p_k q_k`` over train and test class frequencies; ``sum_k p_k^2`` when they agree).
    """
    x, y = _check_xy(x, y, "probe")
    groups = np.asarray(groups)
    if y.ndim != 1 or groups.shape != y.shape:
        raise ValueError(f"grouped_probe: y and groups must be 1-D of length {len(x)}, got {y.shape} and {groups.shape}")
    if np.unique(groups).size < 2:
        raise ValueError("grouped_probe: needs rows of at least 2 subjects")
    correct, prior = np.zeros(len(y)), np.zeros(len(y))
    chosen, dims = [], []
    for tr, te in _folds(groups, outer, seed):
        best = float(grid[0])
        inner_folds = _folds(groups[tr], inner, seed) if np.unique(groups[tr]).size >= 2 else []
        if inner_folds and np.unique(y[tr]).size > 1 and len(grid) > 1:
            acc = np.zeros(len(grid))
            for itr, ite in inner_folds:
                a, b, _ = _reduced(x[tr], itr, ite, dim)
                for g, c in enumerate(grid):
                    acc[g] += np.mean(_fit_predict(a, y[tr][itr], b, float(c), seed, max_iter) == y[tr][ite]) * len(ite)
            best = float(grid[int(np.argmax(acc))])  # first (smallest C) on ties
        a, b, k = _reduced(x, tr, te, dim)
        correct[te] = _fit_predict(a, y[tr], b, best, seed, max_iter) == y[te]
        labels, counts = np.unique(y[tr], return_counts=True)
        freq = dict(zip(labels.tolist(), (counts / counts.sum()).tolist()))
        prior[te] = [freq.get(v, 0.0) for v in y[te].tolist()]
        chosen.append(best)
        dims.append(k)
    return {"correct": correct, "prior": prior, "C": chosen, "dim": int(min(dims)), "folds": len(chosen)}


def leakage(correct: np.ndarray, prior: np.ndarray, subjects: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
            level: float = 0.95) -> dict:
    """What a probe reads above chance, from ``grouped_probe``'s per-row ``correct`` and ``prior``.

    ``accuracy``: mean of ``correct``; ``chance``: mean of ``prior`` (a guess by the class prior);
    ``excess``: accuracy - chance, signed; ``leakage``: the excess clipped at 0, because a probe below chance
    reads nothing, it does not "un-leak" (a below-chance score is no better than chance). ``at_chance``: the
    excess's interval reaches 0 (no evidence that the probe reads the label). Intervals resample subjects
    with the probe's predictions fixed (the probes are not refit per replicate)."""
    boot = dict(n_boot=n_boot, seed=seed, level=level)
    cols = {"correct": correct, "prior": prior}
    acc = bootstrap_means(lambda correct, prior: correct, cols, subjects, **boot)
    excess = bootstrap_means(lambda correct, prior: correct - prior, cols, subjects, **boot)
    clipped = {k: (None if v is None else max(0.0, v)) for k, v in excess.items()}
    low = excess["low"] if excess["low"] is not None else excess["value"]
    return {"accuracy": acc, "chance": float(np.mean(prior)), "excess": excess, "leakage": clipped,
            "at_chance": bool(low <= 0.0), "n_images": int(len(correct)),
            "n_subjects": int(np.unique(subjects).size)}

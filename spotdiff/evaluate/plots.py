"""Evaluation figures (PNG) a person can read at a glance: raw backbone vs subject feature.

- ``similarity_heatmaps``: cosine of each subject's anchor against every subject's pose / bg view.
  A feature that keeps identity shows a bright diagonal; one driven by pose or background does not.
- ``projection_scatter``: 2-D PCA of each feature, coloured by subject, pose and background
  labels. A good subject feature clusters by subject and looks like noise by pose and background.
- ``probe_bars``: linear-probe accuracy per label with 95% intervals and the chance level.

Every function takes arrays, labels and an output path, writes one PNG and returns its path.
Drawing uses matplotlib's Agg canvas directly (no pyplot, no global backend switch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from spotdiff.evaluate.metrics import unit_rows

_CATEGORICAL = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
                "#17becf", "#7f7f7f"]
"""matplotlib's tab10; also the most colours a label panel uses (more labels: the rest are grey)."""
_FEATURE_COLOURS = ["#8c8c8c", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
"""Bars per feature: the first (usually the raw backbone) grey, then strong colours."""


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def similarity_heatmaps(features: Mapping[str, Mapping[str, np.ndarray]], path: str | Path, *,
                        anchor: str = "anchor", queries: Sequence[str] = ("pose", "bg"),
                        max_subjects: int = 40, subject_names: Sequence[str] | None = None) -> Path:
    """One heatmap per (query view, feature): cos(anchor of subject i, query view of subject j).

    ``features`` maps a feature name (e.g. "raw backbone", "subject") to its views, each an
    (N, D) array with row ``i`` = subject ``i``. The first ``max_subjects`` subjects are drawn.
    Rows of the grid are query views, columns are features. Each panel has its own colour scale
    (raw CLIP cosines sit in a narrow high band) and its title gives the mean same-subject
    (diagonal) and different-subject (off-diagonal) cosine.
    """
    if not features:
        raise ValueError("similarity_heatmaps: no features given")
    for fname, views in features.items():
        missing = [v for v in (anchor, *queries) if v not in views]
        if missing:
            raise ValueError(f"similarity_heatmaps: feature {fname!r} lacks views {missing}")
    n_total = min(len(np.asarray(v[anchor])) for v in features.values())
    n = min(n_total, max_subjects)
    if n < 2:
        raise ValueError(f"similarity_heatmaps needs at least 2 subjects, got {n}")
    names = [str(s) for s in subject_names[:n]] if subject_names is not None else None
    cols, rows = len(features), len(queries)
    fig = _figure(4.2 * cols + 0.6, 3.9 * rows + 0.6)
    off = ~np.eye(n, dtype=bool)
    for r, q in enumerate(queries):
        for c, (fname, views) in enumerate(features.items()):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1)
            sim = unit_rows(np.asarray(views[anchor])[:n], f"{fname}/{anchor}") @ \
                unit_rows(np.asarray(views[q])[:n], f"{fname}/{q}").T
            im = ax.imshow(sim, cmap="magma", interpolation="nearest")
            bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
            bar.ax.tick_params(labelsize=6)
            bar.set_label("cosine", fontsize=7)
            ax.set_title(f"{fname}: {anchor} vs {q} view\nsame subject {np.diag(sim).mean():.2f}, "
                         f"different {sim[off].mean():.2f}", fontsize=8)
            ax.set_ylabel(f"{anchor} view of subject", fontsize=7)
            ax.set_xlabel(f"{q} view of subject", fontsize=7)
            if names is not None:
                ax.set_xticks(range(n), names, rotation=90, fontsize=5)
                ax.set_yticks(range(n), names, fontsize=5)
            else:
                ax.tick_params(labelsize=6)
    note = f" (first {n} of {n_total})" if n < n_total else ""
    fig.suptitle(f"Same-subject similarity is the diagonal{note}: a good subject feature shows a bright "
                 "diagonal on a dark field", fontsize=9)
    # Fixed margins in inches (tight_layout measured every tick label: a third of the drawing time).
    _margins(fig, left=0.6, right=0.75, top=0.75, bottom=0.55 if names is None else 0.8,
             wspace=0.35, hspace=0.35)
    return _save(fig, path)


def _margins(fig, *, left: float, right: float, top: float, bottom: float, wspace: float, hspace: float) -> None:
    """``subplots_adjust`` with outer margins given in inches, so they do not grow with the grid."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h, bottom=bottom / h,
                        wspace=wspace, hspace=hspace)


def _pca2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA scores of the rows and the fraction of variance each axis explains."""
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s ** 2
    frac = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    scores = centred @ vt[:2].T
    if scores.shape[1] < 2:
        scores = np.pad(scores, ((0, 0), (0, 2 - scores.shape[1])))
        frac = np.pad(frac, (0, 2 - frac.size))
    return scores, frac


def _is_continuous(values: np.ndarray, max_colors: int) -> bool:
    return np.issubdtype(values.dtype, np.floating) and np.unique(values).size > max_colors


def projection_scatter(features: Mapping[str, np.ndarray], labels: Mapping[str, Sequence], path: str | Path, *,
                       max_points: int = 3000, max_colors: int = 10, seed: int = 0) -> Path:
    """2-D PCA of each feature (grid rows) coloured by each label kind (grid columns).

    ``features`` maps a name to an (n, D) array; all hold the same n images in the same order.
    ``labels`` maps a kind (e.g. "subject", "pose", "background") to n labels. Categorical labels
    with up to ``max_colors`` values get one colour each and a legend; with more values,
    ``max_colors`` of them (a seeded choice) are coloured and the rest drawn grey; float labels
    with many values (e.g. a pose angle) use a colour scale. At most ``max_points`` images are
    drawn (a seeded sample, always including every image of a coloured label). PCA is fit per
    feature, on unit-length rows (cosine geometry, as every metric uses).
    """
    if not features or not labels:
        raise ValueError("projection_scatter: need at least one feature and one label kind")
    arrays = {name: unit_rows(x, name) for name, x in features.items()}
    n = {x.shape[0] for x in arrays.values()}
    if len(n) != 1:
        raise ValueError(f"projection_scatter: features have different row counts {sorted(n)}")
    n = n.pop()
    kinds = {k: np.asarray(v) for k, v in labels.items()}
    for k, v in kinds.items():
        if v.shape != (n,):
            raise ValueError(f"projection_scatter: labels {k!r} have shape {v.shape}, expected ({n},)")
    rng = np.random.default_rng(seed)
    coloured: dict[str, np.ndarray] = {}
    keep = np.zeros(n, dtype=bool)
    for k, v in kinds.items():
        values = np.unique(v)
        if _is_continuous(v, max_colors) or values.size <= max_colors:
            coloured[k] = values
        else:
            coloured[k] = np.sort(rng.choice(values, size=max_colors, replace=False))
            keep |= np.isin(v, coloured[k])
    room = max(0, max_points - int(keep.sum()))
    rest = np.flatnonzero(~keep)
    keep[rng.choice(rest, size=min(room, rest.size), replace=False)] = True
    idx = np.flatnonzero(keep)

    rows, cols = len(arrays), len(kinds)
    # Legends sit right of their panel: leave room for the longest entry (about 0.06 inch a character at
    # 6 pt plus the marker) beside every panel, so the last column's legend is not cut at the edge.
    legend = max((len(str(x)) for k in kinds if np.unique(kinds[k]).size <= max_colors
                  and not _is_continuous(kinds[k], max_colors) for x in coloured[k]), default=0)
    room = 0.3 + 0.06 * legend if legend else 0.0
    fig = _figure((4.0 + room) * cols + 0.4, 3.7 * rows + 0.6)
    for r, (fname, x) in enumerate(arrays.items()):
        scores, frac = _pca2(x[idx])
        for c, (kind, v) in enumerate(kinds.items()):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1)
            lab = v[idx]
            if _is_continuous(v, max_colors):
                sc = ax.scatter(scores[:, 0], scores[:, 1], c=lab.astype(float), cmap="viridis", s=7,
                                linewidths=0)
                bar = fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.03)
                bar.ax.tick_params(labelsize=6)
                note = ""
            else:
                shown = coloured[kind]
                grey = ~np.isin(lab, shown)
                ax.scatter(scores[grey, 0], scores[grey, 1], c="#d0d0d0", s=5, linewidths=0)
                # Coloured points in one call, in a seeded random order: drawing label by label
                # would bury the first labels under the last where they overlap.
                pts = rng.permutation(np.flatnonzero(~grey))
                colour_of = np.searchsorted(shown, lab[pts])
                ax.scatter(scores[pts, 0], scores[pts, 1], s=12, linewidths=0,
                           c=[_CATEGORICAL[m % len(_CATEGORICAL)] for m in colour_of])
                for m, value in enumerate(shown):  # legend entries only
                    ax.scatter([], [], c=_CATEGORICAL[m % len(_CATEGORICAL)], s=12, label=str(value))
                total = np.unique(v).size
                if total <= max_colors:
                    ax.legend(fontsize=6, markerscale=1.2, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                              frameon=False, handletextpad=0.2)
                    note = ""
                else:
                    note = f"\n{len(shown)} of {total} coloured, rest grey"
            ax.set_title(f"{fname}, coloured by {kind}{note}", fontsize=8)
            ax.set_xlabel(f"PC1 ({100 * frac[0]:.0f}% of variance)", fontsize=7)
            ax.set_ylabel(f"PC2 ({100 * frac[1]:.0f}%)", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle(f"PCA of {idx.size} images: a good subject feature groups by subject and mixes pose and "
                 "background", fontsize=9)
    _margins(fig, left=0.55, right=0.3 + room, top=0.8, bottom=0.5, wspace=0.45 + room / 3.4, hspace=0.45)
    return _save(fig, path)


def probe_bars(results: Mapping[str, Mapping[str, dict]], path: str | Path, *,
               title: str = "Linear probes on held-out subjects (lower = less leakage for pose/background)",
               ylabel: str = "test accuracy", interval: str = "95% bootstrap interval over test subjects") -> Path:
    """Grouped bars: probe score per label (groups) and feature (bars), 95% interval error bars,
    the chance level as a dashed line over each group.

    ``results[feature][probe]`` is a ``linear_probe`` result (uses ``score`` {value, low, high},
    ``chance`` and ``metric``); every feature needs the same probes.
    """
    if not results:
        raise ValueError("probe_bars: no results given")
    feats = list(results)
    probes = list(results[feats[0]])
    for f in feats:
        if list(results[f]) != probes:
            raise ValueError(f"probe_bars: feature {f!r} has probes {list(results[f])}, expected {probes}")
    width = 0.8 / len(feats)
    fig = _figure(max(5.0, 1.6 * len(probes) * max(1, len(feats) / 2) + 1.5), 3.8)
    ax = fig.add_subplot()
    lows = [0.0]
    for b, f in enumerate(feats):
        xs = np.arange(len(probes)) - 0.4 + width * (b + 0.5)
        vals = np.array([results[f][p]["score"]["value"] for p in probes], float)
        err = np.array([[v - (results[f][p]["score"]["low"] if results[f][p]["score"]["low"] is not None else v),
                         (results[f][p]["score"]["high"] if results[f][p]["score"]["high"] is not None else v) - v]
                        for v, p in zip(vals, probes)]).T
        ax.bar(xs, vals, width * 0.92, yerr=err, capsize=3, color=_FEATURE_COLOURS[b % len(_FEATURE_COLOURS)],
               label=f, error_kw={"linewidth": 1})
        for x, v, hi in zip(xs, vals, vals + err[1]):
            # Inside the bar, at its foot: clear of the error bar and of the chance line.
            if v >= 0.08:
                ax.text(x, 0.015, f"{v:.2f}", ha="center", va="bottom", fontsize=7, color="white",
                        fontweight="bold", zorder=5)
            else:
                ax.text(x, max(v, hi) + 0.015, f"{v:.2f}", ha="center", va="bottom", fontsize=7, zorder=5)
        lows.append(float(np.min(vals - err[0])))
    for g, p in enumerate(probes):
        chance = results[feats[0]][p]["chance"]
        ax.hlines(chance, g - 0.45, g + 0.45, colors="black", linestyles="--", linewidth=1.2,
                  label="chance" if g == 0 else None)
    labels = [p if results[feats[0]][p].get("metric", "accuracy") == "accuracy" else f"{p}\n(R²)"
              for p in probes]
    ax.set_xticks(range(len(probes)), labels, fontsize=8)
    ax.set_ylim(min(lows) - 0.05 if min(lows) < 0 else 0.0, 1.12)
    marked = any(results[feats[0]][p].get("metric", "accuracy") != "accuracy" for p in probes)
    ax.set_ylabel(f"{ylabel} (R² where marked)" if marked else ylabel, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=len(feats) + 1, frameon=False)
    ax.set_title(f"{title}\nerror bars: {interval}", fontsize=8, loc="left",
                 pad=18)
    fig.tight_layout()
    return _save(fig, path)

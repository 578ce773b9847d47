"""The evaluation protocol: what is measured, on which images, against which baselines, and what passes.

Every number is computed once, on the test split (subjects the encoder never trained on); nothing is
chosen on the numbers the verdict reads:

- **Retrieval without a shortcut.** A group's views are ``anchor`` (pose P0, background B0), ``bg`` (P0,
  B1) and ``pose`` (P1, B0). A ``pose`` view shares the anchor's background and a ``bg`` view shares its
  pose, so retrieving either from the anchors can be won by the shared factor alone (the raw feature
  finds every pose view through the background). Only ``pose`` views against ``bg`` views (and the
  reverse) differ in both factors: ``pose_and_bg``, the mean of the two directions per subject, is the
  retrieval the verdict reads. The per-view pairs are reported beside it, each naming what it shares; no
  average includes them.
- **Leakage probes on unseen subjects** (``probes.grouped_probe``): fit and scored by cross-validation
  grouped by subject on the test split, every feature reduced by PCA to the subject feature's dimension
  inside the folds, C chosen by nested cross-validation. Chance is the score of a guess by the class prior;
  leakage is accuracy above chance, clipped at 0 (below chance is at chance, not a win).
- **Fair baselines** (``baselines.BASELINES``). The subject feature passes a check only by beating every
  baseline, i.e. the best of them, with a paired bootstrap interval of the difference that excludes 0.
  For a leakage check, the best baseline is the one that leaks least; when some baseline's probe does not
  read the factor above chance, the check is ``unmeasurable``: the data cannot show that training removed
  what the backbone view carried.

Intervals resample test subjects (one draw shared by every feature, so differences are paired); the
retrieval gallery and the probes' out-of-fold predictions stay fixed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spotdiff.common.record import VIEWS
from spotdiff.evaluate.bootstrap import bootstrap_ci, bootstrap_means
from spotdiff.evaluate.metrics import invariance, retrieval_hits, retrieval_loo_hits
from spotdiff.evaluate.probes import PROBE_C, grouped_probe, leakage

PROTOCOL = 2
"""Version of the evaluation protocol (1: raw whole-image baseline, anchor-view retrieval, train-split
probes). Headlines of different protocols are not comparable."""

SUBJECT = "subject"
PAIRS: dict[str, tuple[str, str, str | None]] = {
    "pose_to_bg": ("pose", "bg", None),
    "bg_to_pose": ("bg", "pose", None),
    "pose_to_anchor": ("pose", "anchor", "background"),
    "bg_to_anchor": ("bg", "anchor", "pose"),
}
"""Retrieval pair -> (query view, gallery view, the factor query and gallery share: the shortcut)."""
CROSS = ("pose_to_bg", "bg_to_pose")
"""The pairs that share neither factor; ``pose_and_bg`` is their mean per subject."""
FACTORS = ("background", "pose")
KS = (1, 5)

MET, NOT_MET, UNMEASURABLE, SKIPPED = "met", "NOT met", "unmeasurable", "skipped"


@dataclass(frozen=True)
class Protocol:
    dim: int
    """Probe dimensionality: the subject feature's."""
    n_boot: int = 1000
    seed: int = 0
    level: float = 0.95
    outer_folds: int = 5
    inner_folds: int = 3
    grid: tuple[float, ...] = PROBE_C

    @property
    def boot(self) -> dict[str, Any]:
        return {"n_boot": self.n_boot, "seed": self.seed, "level": self.level}


def first_per_subject(subject_ids: Sequence[str]) -> list[int]:
    """Index of each subject's first group, in order. Retrieval and invariance compare row i of one view
    with row i of another, so they keep one group per subject (a packaged or folder photo subject has many
    groups; a second group of the same subject in the gallery would count as a miss)."""
    return sorted({s: i for i, s in reversed(list(enumerate(subject_ids)))}.values())


def _views(f: np.ndarray, rows: list[int]) -> dict[str, np.ndarray]:
    return {v: f[rows, i] for i, v in enumerate(VIEWS)}


def _retrieval(views: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Hit flags (subjects, len(KS)) per pair, and ``pose_and_bg``: the mean of the two shortcut-free pairs."""
    hits = {name: retrieval_hits(views[gallery], views[query], KS) for name, (query, gallery, _) in PAIRS.items()}
    hits["pose_and_bg"] = np.mean([hits[p] for p in CROSS], axis=0)
    return hits


def score(features: Mapping[str, np.ndarray], subjects: Sequence[str], labels: Mapping[str, np.ndarray],
          proto: Protocol) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every metric of every feature, and the comparisons of the subject feature with the baselines.

    ``features`` maps a name (``SUBJECT`` and the baselines) to (groups, views, D) arrays of the test split,
    ``subjects`` the subject id of each group, ``labels`` the ``background`` and ``pose`` label of each image
    (groups x views, row-major; pose -1 = none). Returns (per-feature metrics, comparisons)."""
    subjects = np.asarray(subjects)
    rows = first_per_subject(subjects.tolist())
    per_image = np.repeat(subjects, len(VIEWS))
    out: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    for name, f in features.items():
        views = _views(f, rows)
        hits = _retrieval(views)
        flat = f.reshape(len(f) * len(VIEWS), -1)
        res = {"dim": int(f.shape[-1]),
               "retrieval": {pair: {f"top{k}": bootstrap_ci(h[:, m], **proto.boot) for m, k in enumerate(KS)}
                             for pair, h in hits.items()},
               "invariance": {**invariance(views["anchor"], {"pose": views["pose"], "bg": views["bg"]}, **proto.boot),
                              "pose_and_bg": invariance(views["bg"], {"pose": views["pose"]}, **proto.boot)["pose"]},
               "probes": {}}
        raw[name] = {"hits": hits, "probes": {}}
        for factor in FACTORS:
            keep = labels[factor] != (-1 if factor == "pose" else "unknown")
            y, g = labels[factor][keep], per_image[keep]
            if np.unique(y).size < 2 or np.unique(g).size < 2:
                res["probes"][factor] = {"skipped": f"{np.unique(y).size} class(es) over {np.unique(g).size} subject(s)"}
                continue
            p = grouped_probe(flat[keep], y, g, dim=proto.dim, grid=proto.grid, outer=proto.outer_folds,
                              inner=proto.inner_folds, seed=proto.seed)
            res["probes"][factor] = {**leakage(p["correct"], p["prior"], g, **proto.boot), "C": p["C"],
                                     "dim": p["dim"], "folds": p["folds"], "n_classes": int(np.unique(y).size)}
            raw[name]["probes"][factor] = {**p, "subjects": g}
        out[name] = res
    return out, compare(out, raw, proto)


def _diff(a: np.ndarray, b: np.ndarray, proto: Protocol, subjects: np.ndarray | None = None) -> dict:
    return bootstrap_means(lambda a, b: a - b, {"a": a, "b": b}, subjects, **proto.boot)


def _leak_diff(s: dict, b: dict, proto: Protocol) -> dict:
    """Paired interval of (subject leakage - baseline leakage), each clipped at chance per replicate."""
    return bootstrap_means(lambda cs, ps, cb, pb: max(0.0, cs - ps) - max(0.0, cb - pb),
                           {"cs": s["correct"], "ps": s["prior"], "cb": b["correct"], "pb": b["prior"]},
                           s["subjects"], **proto.boot)


def _low(iv: dict) -> float:
    return iv["value"] if iv["low"] is None else iv["low"]


def _high(iv: dict) -> float:
    return iv["value"] if iv["high"] is None else iv["high"]


def compare(metrics: Mapping[str, Any], raw: Mapping[str, Any], proto: Protocol) -> dict[str, Any]:
    """The subject feature against each baseline: shortcut-free retrieval top-1 (higher is better) and the
    leakage of each factor (lower is better), with paired difference intervals, the best baseline and a
    status (``MET``, ``NOT_MET``, ``UNMEASURABLE``, ``SKIPPED``)."""
    baselines = [n for n in metrics if n != SUBJECT]
    s = raw[SUBJECT]
    top1 = {n: metrics[n]["retrieval"]["pose_and_bg"]["top1"] for n in metrics}
    diffs = {b: _diff(s["hits"]["pose_and_bg"][:, 0], raw[b]["hits"]["pose_and_bg"][:, 0], proto) for b in baselines}
    best = max(baselines, key=lambda b: top1[b]["value"])
    out: dict[str, Any] = {"retrieval": {
        "metric": "retrieval top-1, pose views against bg views and the reverse (no shared factor)",
        "subject": top1[SUBJECT], "best_baseline": best, "baseline": top1[best], "difference": diffs[best],
        "vs": diffs, "status": MET if all(_low(d) > 0 for d in diffs.values()) else NOT_MET}}
    for factor in FACTORS:
        res = {n: metrics[n]["probes"][factor] for n in metrics}
        if any("skipped" in r for r in res.values()):
            out[factor] = {"metric": f"{factor} leakage", "status": SKIPPED,
                           "reason": next(r["skipped"] for r in res.values() if "skipped" in r)}
            continue
        blind = [b for b in baselines if res[b]["at_chance"]]
        diffs = {b: _leak_diff(raw[SUBJECT]["probes"][factor], raw[b]["probes"][factor], proto) for b in baselines}
        best = min(baselines, key=lambda b: res[b]["leakage"]["value"])
        if blind:
            status = UNMEASURABLE
        else:
            status = MET if all(_high(d) < 0 for d in diffs.values()) else NOT_MET
        out[factor] = {"metric": f"{factor} leakage (probe accuracy above chance, clipped at 0)",
                       "subject": res[SUBJECT]["leakage"], "best_baseline": best, "baseline": res[best]["leakage"],
                       "difference": diffs[best], "vs": diffs, "blind_baselines": blind, "status": status}
    return out


def photos(features: Mapping[str, np.ndarray], labels: np.ndarray, proto: Protocol) -> dict[str, Any]:
    """Leave-one-out retrieval on real photos for every feature, and the subject feature against the best
    baseline: ``better`` (beats every baseline), ``worse`` (the best baseline beats it) or ``not better``."""
    hits = {n: retrieval_loo_hits(f, labels, KS) for n, f in features.items()}
    per = {n: {"n_photos": int(len(labels)), "n_subjects": int(np.unique(labels).size),
               **{f"top{k}": bootstrap_ci(h[:, m], subjects=labels, **proto.boot) for m, k in enumerate(KS)}}
           for n, h in hits.items()}
    baselines = [n for n in features if n != SUBJECT]
    diffs = {b: _diff(hits[SUBJECT][:, 0], hits[b][:, 0], proto, labels) for b in baselines}
    best = max(baselines, key=lambda b: per[b]["top1"]["value"])
    if all(_low(d) > 0 for d in diffs.values()):
        status = "better"
    elif _high(diffs[best]) < 0:
        status = "worse"
    else:
        status = "not better"
    return {"features": per, "comparison": {"metric": "leave-one-out top-1", "subject": per[SUBJECT]["top1"],
                                            "best_baseline": best, "baseline": per[best]["top1"],
                                            "difference": diffs[best], "vs": diffs, "status": status}}


def verdict(comparisons: Mapping[str, Any]) -> dict[str, Any]:
    """``{"checks": {check: status}, "pass": bool, "verdict": "PASS" | "FAIL" | "UNMEASURABLE"}``: PASS when
    every check is met, FAIL when one is not met, UNMEASURABLE when none failed but one could not be
    measured (a baseline blind to the factor, or no labels)."""
    checks = {"retrieval": comparisons["retrieval"]["status"],
              **{f"{f}_leakage": comparisons[f]["status"] for f in FACTORS}}
    if all(v == MET for v in checks.values()):
        word = "PASS"
    elif any(v == NOT_MET for v in checks.values()):
        word = "FAIL"
    else:
        word = "UNMEASURABLE"
    return {"checks": checks, "pass": word == "PASS", "verdict": word,
            "rule": "the subject feature beats every baseline (so the best one, named per check) with a 95% "
                    "paired bootstrap interval of the difference that excludes 0: higher retrieval top-1 of pose "
                    "views against bg views and the reverse (no shared factor), lower background and pose "
                    "leakage (probe accuracy above chance, clipped at 0); a leakage check is unmeasurable when a "
                    "baseline's probe does not read the factor above chance"}

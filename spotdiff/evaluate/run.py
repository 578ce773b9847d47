"""The evaluate stage: does the trained subject feature keep identity and drop pose and background,
better than the raw backbone feature?

Features come from the same backbone feature cache as training; the trained encoder
(``data/train/model.safetensors``) turns them into subject, pose and background features. Held-out
= the ``test`` split (subjects never seen in training). Linear probes are fit on the ``train`` split
and scored on ``test``. Every figure has a 95% bootstrap interval over test subjects, for both the
subject feature and the raw backbone feature (the baseline).

Labels for the probes come from each group's JSON record (``spotdiff.common.factors``): the background kind
of each view, and the yaw bin (front, left, back, right) of rendered subjects; photo subjects have no
yaw label and are left out of the pose probe.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from spotdiff.config import Params
from spotdiff.evaluate.metrics import orthogonality, retrieval_loo, retrieval_topk, invariance
from spotdiff.evaluate.probes import linear_probe
from spotdiff.common.factors import POSE_BINS, view_labels
from spotdiff.common.paths import portable
from spotdiff.model import cache
from spotdiff.common.record import VIEWS

def first_per_subject(subject_ids: list[str]) -> list[int]:
    """Index of each subject's first group, in order. Retrieval and invariance compare row i of one view
    with row i of another, so the test set keeps one group per subject (a packaged or folder photo
    subject has many groups; a second group of the same subject in the gallery would count as a miss)."""
    return sorted({s: i for i, s in reversed(list(enumerate(subject_ids)))}.values())


def encode(model: Any, features: np.ndarray) -> dict[str, np.ndarray]:
    """The trained encoder's subject / pose / background features of backbone ``features`` (N, 3, F),
    each (N, 3, D)."""
    import torch

    n = features.shape[0]
    with torch.no_grad():
        out = model(torch.from_numpy(features.reshape(n * len(VIEWS), -1)))
    return {k: v.reshape(n, len(VIEWS), -1).numpy() for k, v in out.items()}


def _probe(name: str, tr_x: np.ndarray, tr_y: np.ndarray, te_x: np.ndarray, te_y: np.ndarray, tr_groups: np.ndarray,
           te_subjects: np.ndarray, seed: int, n_boot: int) -> dict[str, Any]:
    if len(set(tr_y.tolist())) < 2 or len(te_y) == 0:
        # e.g. every background of one kind: there is nothing to predict, so no leakage to measure
        return {"skipped": f"{name} probe: {len(set(tr_y.tolist()))} class(es) in train, {len(te_y)} test images"}
    result = linear_probe(tr_x, tr_y, te_x, te_y, "classification", seed=seed, train_groups=tr_groups,
                          test_subjects=te_subjects, n_boot=n_boot)
    result.pop("per_sample", None)
    return result


PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def photo_files(folder: Path) -> list[Path]:
    """The photos of ``folder``/<subject>/, sorted; FileNotFoundError naming the stage input when the folder
    is missing, ValueError when it holds none (a configured input is never skipped)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"real-photo folder {folder} not found (the evaluate stage's `photos` input: "
                                "`spotdiff evaluate --photos PATH`, dvc.yaml dep; default data/photos/dreambench-dev)")
    files = [p for p in sorted(folder.glob("*/*")) if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES]
    if not files:
        raise ValueError(f"real-photo folder {folder} (the evaluate stage's `photos` input) holds no photos in "
                         f"subject subfolders ({', '.join(PHOTO_SUFFIXES)})")
    return files


def _photo_features(folder: Path, encoder: Any, model: Any) -> dict[str, Any]:
    """Backbone and subject features of every photo in ``folder``/<subject>/ (real photos, several per
    subject). Files are named relative to ``folder``; ``sha256`` digests the whole set (names and bytes)."""
    import hashlib

    import torch

    from spotdiff.common.images import BadInput, load_photo
    from spotdiff.common.tars import sha256_file

    images, labels, skipped, listing = [], [], {}, []
    for path in photo_files(folder):
        rel = path.relative_to(folder).as_posix()
        listing.append(f"{sha256_file(path)}  {rel}\n")
        try:
            images.append(load_photo(path, max_pixels=40_000_000, work_size=encoder.image_size).rgb)
            labels.append(path.parent.name)
        except BadInput as err:
            skipped[rel] = err.reason
    raw = encoder.features(images)
    with torch.no_grad():
        subject = model(torch.from_numpy(raw))["subject"].numpy()
    return {"raw": raw, "subject": subject, "labels": np.array(labels), "skipped": skipped,
            "sha256": hashlib.sha256("".join(listing).encode()).hexdigest()}


def _disjoint(a: dict[str, Any] | None, b: dict[str, Any] | None, higher_is_better: bool) -> bool:
    """``a`` beats ``b`` with non-overlapping 95% intervals (False when either is missing)."""
    if a is None or b is None or None in (a["low"], a["high"], b["low"], b["high"]):
        return False
    return a["low"] > b["high"] if higher_is_better else a["high"] < b["low"]


def evaluate(shard_dir: str | Path, model_dir: str | Path, out_dir: str | Path, params: Params, *,
             photos: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Compute every metric, write ``metrics.json``, ``headline.json``, the plot CSVs, PNG figures and
    ``report.md`` into ``out_dir``; returns the metrics. ``photos``: a folder of real photos, a subfolder per
    subject (None: no cross-photo retrieval); a missing or empty folder is an error, checked before any work.
    The metrics name it as given, relative (``spotdiff.common.paths.portable``), with the sha256 of its files."""
    from spotdiff.evaluate import plots
    from spotdiff.model.trained import load_trained

    t0 = time.perf_counter()
    if photos is not None:
        photo_files(Path(photos))
    cfg = params.evaluate
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, encoder = load_trained(model_dir, params.embed)
    train_set, _ = cache.load_or_build(shard_dir, "train", encoder, params.train.cache_dir, progress=progress)
    test_set, _ = cache.load_or_build(shard_dir, "test", encoder, params.train.cache_dir, progress=progress)
    first = first_per_subject(test_set.subject_ids)
    test_set = cache.FeatureSet([test_set.keys[i] for i in first], [test_set.subject_ids[i] for i in first],
                                [test_set.records[i] for i in first], test_set.features[first], test_set.skipped)
    feats = {"raw": {"test": test_set.features, "train": train_set.features}}
    enc_test, enc_train = encode(model, test_set.features), encode(model, train_set.features)
    feats["subject"] = {"test": enc_test["subject"], "train": enc_train["subject"]}

    boot = {"n_boot": cfg.n_boot, "seed": cfg.seed}
    subjects_test = view_labels(test_set.records)["subject"]
    n_img = len(test_set) * len(VIEWS)
    flat = {k: v.reshape(n_img, -1) for k, v in enc_test.items()}
    m: dict[str, Any] = {
        "n_test_groups": len(test_set), "n_train_groups": len(train_set),
        "backbone": encoder.identity, "backends": {"embed": params.embed.backend},
        "orthogonality": {
            "subject_pose": orthogonality(flat["subject"], flat["pose"], subjects_test, **boot),
            "subject_background": orthogonality(flat["subject"], flat["background"], subjects_test, **boot),
            "pose_background": orthogonality(flat["pose"], flat["background"], subjects_test, **boot),
        },
    }
    lab_tr, lab_te = view_labels(train_set.records), view_labels(test_set.records)
    for name, f in feats.items():
        te, tr = f["test"], f["train"]
        views = {"pose": te[:, 2], "bg": te[:, 1]}
        res = {"invariance": invariance(te[:, 0], views, **boot),
               "retrieval": retrieval_topk(te[:, 0], views, **boot), "probes": {}}
        tr_flat, te_flat = tr.reshape(len(tr) * 3, -1), te.reshape(len(te) * 3, -1)
        res["probes"]["background"] = _probe("background", tr_flat, lab_tr["background"], te_flat, lab_te["background"],
                                             lab_tr["subject"], lab_te["subject"], cfg.seed, cfg.n_boot)
        keep_tr, keep_te = lab_tr["pose"] >= 0, lab_te["pose"] >= 0
        res["probes"]["pose"] = _probe("pose", tr_flat[keep_tr], lab_tr["pose"][keep_tr], te_flat[keep_te],
                                       lab_te["pose"][keep_te], lab_tr["subject"][keep_tr], lab_te["subject"][keep_te],
                                       cfg.seed, cfg.n_boot)
        m[name] = res

    if photos is not None:
        real = _photo_features(Path(photos), encoder, model)
        m["real_photos"] = {"folder": portable(photos), "sha256": real["sha256"], "skipped": real["skipped"],
                            **{n: retrieval_loo(real[n], real["labels"], **boot) for n in ("raw", "subject")}}
    else:
        m["real_photos"] = {"folder": None, "skipped": "no photo folder given"}

    checks = {
        "retrieval_top1": _disjoint(m["subject"]["retrieval"]["all"]["top1"], m["raw"]["retrieval"]["all"]["top1"], True),
        "background_probe": _disjoint(m["subject"]["probes"]["background"].get("score"),
                                      m["raw"]["probes"]["background"].get("score"), False),
        "pose_probe": _disjoint(m["subject"]["probes"]["pose"].get("score"), m["raw"]["probes"]["pose"].get("score"),
                                False),
    }
    m["criterion"] = {"checks": checks, "pass": all(checks.values()),
                      "rule": "subject beats raw with non-overlapping 95% intervals: higher retrieval top-1 "
                              "(pose and bg views), lower background and pose probe accuracy"}
    (out / "metrics.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    _write_plot_data(out, m)
    _figures(out, plots, feats, enc_test, lab_te, m)
    (out / "report.md").write_text(report(m))
    m["seconds"] = round(time.perf_counter() - t0, 2)  # returned, not written: outputs stay byte-stable
    return m


def headline(m: dict[str, Any]) -> dict[str, Any]:
    """The few numbers ``dvc metrics show/diff`` compares (point estimates)."""
    h: dict[str, Any] = {"criterion_pass": m["criterion"]["pass"]}
    for name in ("raw", "subject"):
        r = m[name]
        h[name] = {"retrieval_top1": round(r["retrieval"]["all"]["top1"]["value"], 4),
                   "retrieval_top5": round(r["retrieval"]["all"]["top5"]["value"], 4),
                   **{f"{p}_probe": round(r["probes"][p]["score"]["value"], 4)
                      for p in ("background", "pose") if "score" in r["probes"][p]},
                   "auc_pose_change": round(r["invariance"]["pose"]["auc"]["value"], 4),
                   "auc_bg_change": round(r["invariance"]["bg"]["auc"]["value"], 4)}
        if name in m.get("real_photos", {}):
            h[name]["real_photo_top1"] = round(m["real_photos"][name]["top1"]["value"], 4)
    h["orthogonality"] = {k: round(v["value"], 4) for k, v in m["orthogonality"].items()}
    return h


def _write_plot_data(out: Path, m: dict[str, Any]) -> None:
    """Long-format CSVs for ``dvc plots`` (one row per feature and metric, with the interval)."""
    rows = []
    for name in ("raw", "subject"):
        r = m[name]
        for view in ("pose", "bg", "all"):
            for k in ("top1", "top5"):
                iv = r["retrieval"][view][k]
                rows.append(["retrieval", f"{view}_{k}", name, iv["value"], iv["low"], iv["high"], ""])
        for probe in ("background", "pose"):
            p = r["probes"][probe]
            if "score" not in p:
                continue
            rows.append(["probe", probe, name, p["score"]["value"], p["score"]["low"], p["score"]["high"], p["chance"]])
    with (out / "scores.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "metric", "feature", "value", "low", "high", "chance"])
        w.writerows(rows)


def _figures(out: Path, plots: Any, feats: dict[str, Any], enc_test: dict[str, np.ndarray],
             lab_te: dict[str, np.ndarray], m: dict[str, Any]) -> None:
    views = {n: {"anchor": f["test"][:, 0], "pose": f["test"][:, 2], "bg": f["test"][:, 1]} for n, f in feats.items()}
    plots.similarity_heatmaps(views, out / "similarity.png")
    n_img = feats["raw"]["test"].shape[0] * len(VIEWS)
    flat = {n: f["test"].reshape(n_img, -1) for n, f in feats.items()}
    pose = np.array([POSE_BINS[i] if i >= 0 else "none" for i in lab_te["pose"]])
    plots.projection_scatter(flat, {"subject": lab_te["subject"], "pose": pose, "background": lab_te["background"]},
                             out / "projection.png")
    probes = {n: {k: v for k, v in m[n]["probes"].items() if "score" in v} for n in ("raw", "subject")}
    if probes["raw"]:
        plots.probe_bars(probes, out / "probes.png")


def _fmt(iv: dict[str, Any]) -> str:
    lo, hi = iv["low"], iv["high"]
    return f"{iv['value']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{iv['value']:.3f}"


def report(m: dict[str, Any]) -> str:
    """``report.md``: every metric for raw and subject features, with intervals, and the verdict."""
    lines = ["# Orthogonality evaluation", "",
             f"Held-out test split: {m['n_test_groups']} groups; probes fit on {m['n_train_groups']} train groups. "
             "Values: point estimate [95% bootstrap interval over test subjects].", "",
             f"Backbone: `{m['backbone']}`", "",
             "| metric | raw backbone | subject feature |", "|---|---|---|"]
    for view in ("all", "pose", "bg"):
        for k in ("top1", "top5"):
            lines.append(f"| retrieval {k}, {view} view(s) from anchor | {_fmt(m['raw']['retrieval'][view][k])} | "
                         f"{_fmt(m['subject']['retrieval'][view][k])} |")
    for change in ("pose", "bg"):
        for k in ("auc", "margin"):
            lines.append(f"| invariance {k}, {change} change | {_fmt(m['raw']['invariance'][change][k])} | "
                         f"{_fmt(m['subject']['invariance'][change][k])} |")
    for probe in ("background", "pose"):
        r, s = m["raw"]["probes"][probe], m["subject"]["probes"][probe]
        if "score" not in s:
            lines.append(f"| {probe} probe | skipped: {s['skipped']} | |")
            continue
        lines.append(f"| {probe} probe accuracy (chance {s['chance']:.3f}; lower = less leakage) | "
                     f"{_fmt(r['score'])} | {_fmt(s['score'])} |")
    if "raw" in m.get("real_photos", {}):
        for k in ("top1", "top5"):
            lines.append(f"| real photos ({m['real_photos']['folder']}), leave-one-out {k} | "
                         f"{_fmt(m['real_photos']['raw'][k])} | {_fmt(m['real_photos']['subject'][k])} |")
    lines += ["", "Orthogonality of the trained features (mean |cos|, test images):", ""]
    lines += [f"- {k.replace('_', ' vs ')}: {_fmt(v)}" for k, v in m["orthogonality"].items()]
    c = m["criterion"]
    lines += ["", f"## Criterion: {'PASS' if c['pass'] else 'FAIL'}", "", c["rule"] + ".", ""]
    lines += [f"- {k}: {'met' if v else 'NOT met'}" for k, v in c["checks"].items()]
    lines += ["", "Figures: similarity.png, projection.png, probes.png.", ""]
    return "\n".join(lines)


@dataclass
class EvaluateStats:
    headline: dict[str, Any]
    """``headline(metrics)``: what ``headline.json`` and the metrics file hold."""
    seconds: float
    out_dir: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.headline)

    def summary(self) -> str:
        h = self.headline
        return (f"evaluate: criterion {'PASS' if h['criterion_pass'] else 'FAIL'}; subject vs raw: "
                + ", ".join(f"{k} {h['subject'][k]:.3f} vs {h['raw'][k]:.3f}" for k in h["subject"])
                + f" -> {self.out_dir}/report.md")


def run(params: Params, paths: Mapping[str, Path], *, progress: bool = True) -> EvaluateStats:
    """The stage (``spotdiff.stages``): evaluate the model in ``paths["model"]`` on ``paths["shards"]``'s test
    split and the real photos in ``paths["photos"]`` into ``paths["out"]`` (``headline.json`` there and in
    ``paths["metrics"]``)."""
    m = evaluate(paths["shards"], paths["model"], paths["out"], params, photos=paths["photos"], progress=progress)
    h = headline(m)
    text = json.dumps(h, indent=2, sort_keys=True) + "\n"
    (Path(paths["out"]) / "headline.json").write_text(text)
    Path(paths["metrics"]).parent.mkdir(parents=True, exist_ok=True)
    Path(paths["metrics"]).write_text(text)
    return EvaluateStats(h, m["seconds"], str(paths["out"]))

"""The evaluate stage: does the trained subject feature keep identity and drop pose and background,
better than what the same input gives without training?

Features come from the same backbone feature cache as training; the trained encoder
(``data/train/model.safetensors``) turns them into subject, pose and background features, and
``baselines`` builds the features the subject feature must beat (the raw image, the raw central window the
head reads, a random projection and a PCA of it at the subject feature's dimension, the untrained head).
``protocol`` measures them all on the ``test`` split (subjects never seen in training): retrieval of pose
views against bg views (no shared factor), leakage probes fit and scored by cross-validation grouped by
subject, and the verdict. The train split serves only the PCA baseline (no labels); the val split is not
read.

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
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow.parquet as pq

from spotdiff.config import Params
from spotdiff.evaluate import baselines, protocol
from spotdiff.evaluate.metrics import orthogonality
from spotdiff.evaluate.protocol import SUBJECT, first_per_subject
from spotdiff.common.factors import POSE_BINS, view_labels
from spotdiff.common.paths import portable
from spotdiff.errors import InputError, MissingInputError
from spotdiff.model import cache
from spotdiff.common.record import VIEWS

__all__ = ["evaluate", "feature_maps", "headline", "headline_summary", "run", "encode", "first_per_subject",
           "photo_line", "report"]


def encode(model: Any, features: np.ndarray) -> dict[str, np.ndarray]:
    """The trained encoder's subject / pose / background features of backbone ``features`` (N, 3, F),
    each (N, 3, D)."""
    import torch

    n = features.shape[0]
    with torch.no_grad():
        out = model(torch.from_numpy(features.reshape(n * len(VIEWS), -1)))
    return {k: v.reshape(n, len(VIEWS), -1).numpy() for k, v in out.items()}


def _subject_map(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def f(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.asarray(x, np.float32)))["subject"].numpy().astype(np.float64)

    return f


def train_seed(model_dir: str | Path) -> int:
    """``train.seed`` of the run that wrote ``model_dir`` (its ``config.json``): the untrained-head and
    random-projection baselines start from it."""
    path = Path(model_dir) / "config.json"
    try:
        return int(json.loads(path.read_text())["train"]["seed"])
    except FileNotFoundError as err:
        raise InputError(f"{path} not found: the evaluate stage reads the training seed from train's output") from err
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{path}: no train.seed ({err}); rerun the train stage") from err


PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def photo_files(folder: Path) -> list[Path]:
    """The photos of ``folder``/<subject>/, sorted; ``MissingInputError`` naming the stage input when the
    folder is missing, ``InputError`` when it holds none (a configured input is never skipped)."""
    if not folder.is_dir():
        raise MissingInputError(f"real-photo folder {folder} not found (the evaluate stage's `photos` input: "
                                "`spotdiff evaluate --photos PATH`, dvc.yaml dep; default data/photos/dreambench-dev)")
    files = [p for p in sorted(folder.glob("*/*")) if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES]
    if not files:
        raise InputError(f"real-photo folder {folder} (the evaluate stage's `photos` input) holds no photos in "
                         f"subject subfolders ({', '.join(PHOTO_SUFFIXES)})")
    return files


def _photo_features(folder: Path, encoder: Any) -> dict[str, Any]:
    """Backbone features of every photo in ``folder``/<subject>/ (real photos, several per subject). Files
    are named relative to ``folder``; ``sha256`` digests the whole set (names and bytes). A file that cannot
    be used (unreadable, not an image, corrupt: a decoder warning included) is no stage failure but a row of
    ``skipped``: its name -> "reason: detail"."""
    import hashlib

    from spotdiff.common.images import BadInput, load_photo
    from spotdiff.common.tars import sha256_file

    images, labels, skipped, listing = [], [], {}, []
    for path in photo_files(folder):
        rel = path.relative_to(folder).as_posix()
        try:
            listing.append(f"{sha256_file(path)}  {rel}\n")
        except OSError as err:
            listing.append(f"unreadable  {rel}\n")
            skipped[rel] = f"unreadable: {type(err).__name__}: {err.strerror or err}"
            continue
        try:
            images.append(load_photo(path, max_pixels=40_000_000, work_size=encoder.image_size).rgb)
            labels.append(path.parent.name)
        except BadInput as err:
            skipped[rel] = f"{err.reason}: {err.detail}"
    return {"backbone": encoder.features(images), "labels": np.array(labels), "skipped": skipped,
            "sha256": hashlib.sha256("".join(listing).encode()).hexdigest()}


INTERVALS = ("95% percentile bootstrap over test subjects ({n_boot} resamples), one draw shared by every feature, "
             "so differences between features are paired; retrieval keeps its gallery fixed, probes keep their "
             "out-of-fold predictions fixed (not refit per resample), real photos resample photo subjects")
"""What every interval resamples (``metrics.json``'s ``intervals``, the report's header)."""


def feature_maps(shard_dir: str | Path, model_dir: str | Path, params: Params, *, progress: bool = False
                 ) -> tuple[int, Any, Any, cache.FeatureSet, dict[str, Callable[[np.ndarray], np.ndarray]]]:
    """(train seed, trained heads, backbone encoder, train split's features, feature maps): the subject
    feature and every baseline as a function of backbone features (the PCA baseline is fit on the train
    split's images)."""
    from spotdiff.model.trained import load_trained

    seed = train_seed(model_dir)
    model, encoder = load_trained(model_dir, params.embed)
    train_set, _ = cache.load_or_build(shard_dir, "train", encoder, params.train.cache_dir, progress=progress)
    ctx = baselines.Context(model, train_set.features.reshape(-1, train_set.features.shape[-1]), seed)
    return seed, model, encoder, train_set, {SUBJECT: _subject_map(model), **baselines.build(ctx)}


def photo_line(folder: Path, encoder: Any, maps: Mapping[str, Callable[[np.ndarray], np.ndarray]],
               proto: protocol.Protocol) -> dict[str, Any]:
    """``metrics.json``'s ``real_photos``: leave-one-out retrieval of every feature on the photos of
    ``folder``/<subject>/ and the subject feature against the best baseline (``protocol.photos``)."""
    real = _photo_features(folder, encoder)
    return {"folder": portable(folder), "sha256": real["sha256"], "skipped": real["skipped"],
            **protocol.photos({n: f(real["backbone"]) for n, f in maps.items()}, real["labels"], proto)}


def _check_test_subjects(shard_dir: str | Path) -> None:
    """``InputError`` when the test split holds fewer than 2 subjects, read from ``index.parquet`` before any
    feature is computed (retrieval ranks a subject among others: one subject has nothing to be told from).
    Shards without an index are left to the feature cache, which names what is missing."""
    index = Path(shard_dir) / "index.parquet"
    if not index.is_file():
        return
    table = pq.ParquetFile(index).read(columns=["split", "subject_id"]).to_pydict()
    test = [s for split, s in zip(table["split"], table["subject_id"]) if split == "test"]
    if len(set(test)) < 2:
        raise InputError(f"the test split of {shard_dir} holds {len(test)} group(s) of {len(set(test))} subject(s); "
                         "evaluation needs at least 2 subjects (dozens for useful intervals): raise "
                         "generate.n_groups or shard.split.test")


def evaluate(shard_dir: str | Path, model_dir: str | Path, out_dir: str | Path, params: Params, *,
             photos: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Compute every metric, write ``metrics.json``, the plot CSV, PNG figures and ``report.md`` into
    ``out_dir``; returns the metrics. ``photos``: a folder of real photos, a subfolder per subject (None: no
    cross-photo retrieval); a missing or empty folder is an error, checked before any work. The metrics name
    it as given, relative (``spotdiff.common.paths.portable``), with the sha256 of its files."""
    from spotdiff.evaluate import plots

    t0 = time.perf_counter()
    if photos is not None:
        photo_files(Path(photos))
    _check_test_subjects(shard_dir)
    cfg = params.evaluate
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed, model, encoder, train_set, maps = feature_maps(shard_dir, model_dir, params, progress=progress)
    test_set, _ = cache.load_or_build(shard_dir, "test", encoder, params.train.cache_dir, progress=progress)
    n_groups, n_dim = test_set.features.shape[0], test_set.features.shape[-1]
    flat = test_set.features.reshape(n_groups * len(VIEWS), n_dim)
    feats = {name: f(flat).reshape(n_groups, len(VIEWS), -1) for name, f in maps.items()}
    proto = protocol.Protocol(dim=int(model.feature_dim), n_boot=cfg.n_boot, seed=cfg.seed)
    labels = view_labels(test_set.records)
    per_feature, comparisons = protocol.score(feats, test_set.subject_ids, labels, proto)

    enc = {k: v.reshape(n_groups * len(VIEWS), -1) for k, v in encode(model, test_set.features).items()}
    boot = {"n_boot": cfg.n_boot, "seed": cfg.seed}
    m: dict[str, Any] = {
        "protocol": protocol.PROTOCOL,
        "n_test_groups": n_groups, "n_test_subjects": len(set(test_set.subject_ids)),
        "n_retrieval_subjects": len(first_per_subject(test_set.subject_ids)), "n_train_groups": len(train_set),
        "train_seed": seed, "backbone": encoder.identity, "backends": {"embed": params.embed.backend},
        "intervals": INTERVALS.format(n_boot=cfg.n_boot),
        "baselines": list(baselines.BASELINES),
        "orthogonality": {
            "subject_pose": orthogonality(enc["subject"], enc["pose"], labels["subject"], **boot),
            "subject_background": orthogonality(enc["subject"], enc["background"], labels["subject"], **boot),
            "pose_background": orthogonality(enc["pose"], enc["background"], labels["subject"], **boot),
        },
        "features": per_feature, "comparisons": comparisons,
    }
    if photos is not None:
        m["real_photos"] = photo_line(Path(photos), encoder, maps, proto)
    else:
        m["real_photos"] = {"folder": None, "skipped": "no photo folder given"}
    m["criterion"] = protocol.verdict(comparisons)
    m["headline"] = card_headline(m)
    (out / "metrics.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    _write_plot_data(out, m)
    _figures(out, plots, feats, labels, m)
    (out / "report.md").write_text(report(m))
    m["seconds"] = round(time.perf_counter() - t0, 2)  # returned, not written: outputs stay byte-stable
    return m


HEADLINE: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any] | None], bool]] = {
    "retrieval_cross_top1": (lambda r: r["retrieval"]["pose_and_bg"]["top1"], True),
    "retrieval_cross_top5": (lambda r: r["retrieval"]["pose_and_bg"]["top5"], True),
    "retrieval_pose_view_top1": (lambda r: r["retrieval"]["pose_to_anchor"]["top1"], True),
    "retrieval_bg_view_top1": (lambda r: r["retrieval"]["bg_to_anchor"]["top1"], True),
    "background_leakage": (lambda r: r["probes"]["background"].get("leakage"), False),
    "pose_leakage": (lambda r: r["probes"]["pose"].get("leakage"), False),
    "auc_pose_change": (lambda r: r["invariance"]["pose"]["auc"], True),
    "auc_bg_change": (lambda r: r["invariance"]["bg"]["auc"], True),
}
"""Headline key -> (the interval it reads from a feature's metrics, higher is better). ``cross``: pose views
against bg views and the reverse, the retrieval without a shared factor; ``pose_view`` / ``bg_view``: from
the anchors (they share the background / the pose); leakage: probe accuracy above chance, clipped at 0."""


def headline(m: dict[str, Any]) -> dict[str, Any]:
    """The few numbers ``dvc metrics show/diff`` compares (point estimates): the subject feature's, the best
    baseline's per metric (its name in ``best_baseline_name``), and the verdict."""
    feats = m["features"]
    names = [n for n in feats if n != SUBJECT]
    values: dict[str, dict[str, float]] = {n: {} for n in feats}
    for key, (get, _) in HEADLINE.items():
        for n in feats:
            iv = get(feats[n])
            if iv is not None:
                values[n][key] = round(iv["value"], 4)
    if "features" in m.get("real_photos", {}):
        for n in feats:
            values[n]["real_photo_top1"] = round(m["real_photos"]["features"][n]["top1"]["value"], 4)
    higher = {k: up for k, (_, up) in HEADLINE.items()} | {"real_photo_top1": True}
    best = {k: (max if higher[k] else min)(names, key=lambda n, k=k: values[n][k])
            for k in values[SUBJECT] if all(k in values[n] for n in names)}
    c = m["criterion"]
    return {"protocol": m["protocol"], "criterion_pass": c["pass"], "verdict": c["verdict"], "checks": c["checks"],
            "subject": values[SUBJECT], "best_baseline": {k: values[n][k] for k, n in best.items()},
            "best_baseline_name": best,
            "orthogonality": {k: round(v["value"], 4) for k, v in m["orthogonality"].items()}}


CHECKS = {"retrieval": "retrieval top-1, pose vs bg views", "background": "background leakage",
          "pose": "pose leakage"}


def card_headline(m: dict[str, Any]) -> dict[str, Any]:
    """``metrics.json``'s ``headline``: what the release's dataset card lists (flat names, intervals as they
    are): the verdict, and per check its status, the subject feature, the best baseline and their difference."""
    out: dict[str, Any] = {"verdict": m["criterion"]["verdict"]}
    for key, label in CHECKS.items():
        c = m["comparisons"][key]
        out[f"{label}: status"] = c["status"]
        if "subject" in c:
            out[f"{label}: subject"] = c["subject"]
            out[f"{label}: best baseline ({c['best_baseline']})"] = c["baseline"]
            out[f"{label}: difference"] = c["difference"]
    p = m.get("real_photos", {}).get("comparison")
    if p:
        out["real photos top-1 (not in the criterion): subject"] = p["subject"]
        out[f"real photos top-1 (not in the criterion): best baseline ({p['best_baseline']})"] = p["baseline"]
    return out


def _write_plot_data(out: Path, m: dict[str, Any]) -> None:
    """Long-format CSV for ``dvc plots`` (one row per feature and metric, with the interval)."""
    rows = []
    for name, r in m["features"].items():
        for pair, ks in r["retrieval"].items():
            for k, iv in ks.items():
                rows.append(["retrieval", f"{pair}_{k}", name, iv["value"], iv["low"], iv["high"], ""])
        for probe, p in r["probes"].items():
            if "accuracy" in p:
                a, lk = p["accuracy"], p["leakage"]
                rows.append(["probe", f"{probe}_accuracy", name, a["value"], a["low"], a["high"], p["chance"]])
                rows.append(["probe", f"{probe}_leakage", name, lk["value"], lk["low"], lk["high"], 0.0])
    with (out / "scores.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kind", "metric", "feature", "value", "low", "high", "chance"])
        w.writerows(rows)


def _figures(out: Path, plots: Any, feats: dict[str, np.ndarray], labels: dict[str, np.ndarray],
             m: dict[str, Any]) -> None:
    best = m["comparisons"]["retrieval"]["best_baseline"]
    shown = {"raw_image": "raw image", best: f"{best} (best baseline)", SUBJECT: "subject"}
    rows = first_per_subject(labels["subject"][::len(VIEWS)].tolist())
    views = {title: {v: feats[n][rows, i] for i, v in enumerate(VIEWS)} for n, title in shown.items()}
    plots.similarity_heatmaps(views, out / "similarity.png", anchor="bg", queries=("pose",))
    n_img = feats[SUBJECT].shape[0] * len(VIEWS)
    flat = {"raw window": feats["raw_window"].reshape(n_img, -1), "subject": feats[SUBJECT].reshape(n_img, -1)}
    pose = np.array([POSE_BINS[i] if i >= 0 else "none" for i in labels["pose"]])
    plots.projection_scatter(flat, {"subject": labels["subject"], "pose": pose, "background": labels["background"]},
                             out / "projection.png")
    order = [n for n in m["features"] if n != SUBJECT] + [SUBJECT]  # baselines first: the subject's bar last
    probes = {n: {k: {"score": v["accuracy"], "chance": v["chance"], "metric": "accuracy"}
                  for k, v in m["features"][n]["probes"].items() if "accuracy" in v} for n in order}
    if probes[SUBJECT]:
        plots.probe_bars(probes, out / "probes.png",
                         title="Leakage probes on test subjects (lower = less leakage): cross-validation grouped by "
                               "subject,\nevery feature reduced by PCA to the subject feature's dimension; dashed: "
                               "chance (a guess by the class prior)",
                         ylabel="out-of-fold accuracy",
                         interval="95% bootstrap over test subjects, predictions fixed")


def _fmt(iv: dict[str, Any] | None) -> str:
    if iv is None:
        return "n/a"
    lo, hi = iv["low"], iv["high"]
    return f"{iv['value']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{iv['value']:.3f}"


def _signed(iv: dict[str, Any]) -> str:
    lo, hi = iv["low"], iv["high"]
    return f"{iv['value']:+.3f} [{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else f"{iv['value']:+.3f}"


BASELINE_ABOUT = {
    "raw_image": "the whole backbone feature (the old baseline)",
    "raw_window": "the standardised backbone feature over the central window the subject head reads",
    "random_projection": "the raw window times a seeded Gaussian matrix, at the subject feature's dimension",
    "pca": "the raw window on its top principal components over the train split, at the subject feature's dimension",
    "untrained_head": "the subject head initialised with the training seed, never trained",
}


def _check_line(name: str, c: dict[str, Any], higher: bool) -> str:
    if c["status"] == protocol.SKIPPED:
        return f"- **{name}: skipped** ({c['reason']})"
    line = (f"- **{name}: {c['status']}**. Subject {_fmt(c['subject'])} vs best baseline `{c['best_baseline']}` "
            f"{_fmt(c['baseline'])}; difference {_signed(c['difference'])} ({'higher' if higher else 'lower'} "
            "is better; met needs the interval of the difference to every baseline on that side of 0)")
    if c.get("blind_baselines"):
        line += (f". Unmeasurable: {', '.join(f'`{b}`' for b in c['blind_baselines'])} read(s) the factor at "
                 "chance, so the data cannot show that training removed it")
    return line + "."


def report(m: dict[str, Any]) -> str:
    """``report.md``: the verdict against the fair baselines, then every metric of every feature."""
    feats = m["features"]
    names = list(feats)
    c, comp = m["criterion"], m["comparisons"]
    photos = m.get("real_photos", {})
    lines = ["# Evaluation of the subject feature", "",
             f"Test split: {m['n_test_groups']} groups of {m['n_test_subjects']} subjects, none seen in training. "
             f"Retrieval and invariance use each subject's first group ({m['n_retrieval_subjects']} subjects, a "
             f"gallery of {m['n_retrieval_subjects']}); the leakage probes use every test image, fit and scored by "
             "5-fold cross-validation grouped by subject, each feature reduced by PCA to the subject feature's "
             f"dimension ({feats[SUBJECT]['dim']}) inside the folds, C chosen by nested cross-validation. The "
             f"train split ({m['n_train_groups']} groups) serves only the PCA baseline; training seed "
             f"{m['train_seed']} seeds the untrained head and the random projection.", "",
             f"Values: point estimate [interval]. Intervals: {m['intervals']}.", "",
             f"Backbone: `{m['backbone']}`", "",
             f"## Verdict: {c['verdict']}", "", c["rule"] + ".", "",
             _check_line("retrieval, pose views against bg views", comp["retrieval"], True),
             _check_line("background leakage", comp["background"], False),
             _check_line("pose leakage", comp["pose"], False)]
    if "comparison" in photos:
        p = photos["comparison"]
        word = {"better": "better than every baseline", "worse": "worse than the best baseline",
                "not better": "not better than the best baseline"}[p["status"]]
        lines += [f"- **Real photos ({photos['folder']}, not part of the criterion): the subject feature is {word}**, "
                  f"`{p['best_baseline']}`: leave-one-out top-1 {_fmt(p['subject'])} vs {_fmt(p['baseline'])}, "
                  f"difference {_signed(p['difference'])}."]
    if isinstance(photos.get("skipped"), dict) and photos["skipped"]:
        lines += [f"- Real photos left out ({len(photos['skipped'])}): "
                  + "; ".join(f"`{name}` ({why})" for name, why in sorted(photos["skipped"].items())) + "."]
    lines += ["", "## Every feature", "", "| metric | " + " | ".join(f"`{n}`" for n in names) + " |",
              "|---|" + "---|" * len(names)]

    def row(label: str, get: Callable[[dict[str, Any]], Any]) -> None:
        lines.append(f"| {label} | " + " | ".join(get(feats[n]) for n in names) + " |")

    row("dimensions", lambda r: str(r["dim"]))
    for pair, what in (("pose_and_bg", "pose vs bg views, both ways (no shared factor)"),
                       ("pose_to_bg", "pose view against bg views"), ("bg_to_pose", "bg view against pose views"),
                       ("pose_to_anchor", "pose view against anchors (shares the background)"),
                       ("bg_to_anchor", "bg view against anchors (shares the pose)")):
        for k in ("top1", "top5"):
            row(f"retrieval {k}, {what}", lambda r, pair=pair, k=k: _fmt(r["retrieval"][pair][k]))
    for change, what in (("pose", "pose change (shares background)"), ("bg", "background change (shares pose)"),
                         ("pose_and_bg", "pose and background change")):
        row(f"invariance AUC, {what}", lambda r, change=change: _fmt(r["invariance"][change]["auc"]))
    for probe in ("background", "pose"):
        row(f"{probe} probe accuracy", lambda r, probe=probe: _fmt(r["probes"][probe].get("accuracy")))
        row(f"{probe} probe chance (guess by class prior)",
            lambda r, probe=probe: f"{r['probes'][probe]['chance']:.3f}" if "chance" in r["probes"][probe] else "n/a")
        row(f"{probe} leakage (above chance, clipped at 0)",
            lambda r, probe=probe: _fmt(r["probes"][probe].get("leakage"))
            + (" (at chance)" if r["probes"][probe].get("at_chance") else ""))
    if "features" in photos:
        for k in ("top1", "top5"):
            lines.append(f"| real photos, leave-one-out {k} | "
                         + " | ".join(_fmt(photos["features"][n][k]) for n in names) + " |")
    lines += ["", "Baselines:", ""] + [f"- `{n}`: {BASELINE_ABOUT.get(n, n)}" for n in m["baselines"]]
    lines += ["", "Orthogonality of the trained features (mean |cos|, every test image):", ""]
    lines += [f"- {k.replace('_', ' vs ')}: {_fmt(v)}" for k, v in m["orthogonality"].items()]
    lines += ["", "Figures: similarity.png (bg views against pose views), projection.png, probes.png.", ""]
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
        return f"evaluate: {headline_summary(self.headline)} -> {self.out_dir}/report.md"


def headline_summary(h: Mapping[str, Any]) -> str:
    """One line of a headline: the verdict, then each subject score against the best baseline's."""
    return (f"criterion {h['verdict']}; subject feature vs best baseline: "
            + ", ".join(f"{k} {v:.3f} vs {h['best_baseline'][k]:.3f} ({h['best_baseline_name'][k]})"
                        for k, v in h["subject"].items() if k in h["best_baseline"]))


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

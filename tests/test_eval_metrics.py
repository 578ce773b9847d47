"""Evaluation metrics on constructed features whose answers are known.

The constructed world: every image's raw feature is [subject block | pose block | background
block]. A perfectly disentangled subject feature is the subject block alone (identical for all
views of a subject, orthogonal to the pose and background blocks); a fully entangled one is the
pose block; a random one is noise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import r2_score, roc_auc_score

from spotdiff.evaluate import (abs_cos, bootstrap_ci, different_subject_pairs, invariance, linear_probe,
                               mean_abs_cos, orthogonality, resample_weights, retrieval_loo, retrieval_topk,
                               roc_auc)
from spotdiff.evaluate.plots import probe_bars, projection_scatter, similarity_heatmaps

D = 16
VIEWS = ("anchor", "bg", "pose")


@dataclass
class World:
    """Per view (N, ...) arrays: raw, subject (disentangled), pose and bg expert features, labels."""
    raw: dict
    subject: dict
    pose_feat: dict
    bg_feat: dict
    pose_label: dict
    bg_label: dict
    n: int


def make_world(n: int, seed: int = 0, n_pose: int = 4, n_bg: int = 5) -> World:
    rng = np.random.default_rng(seed)
    s_vec = rng.normal(size=(n, D))
    p_vec = rng.normal(size=(n_pose, D))
    b_vec = rng.normal(size=(n_bg, D))
    p0 = rng.integers(0, n_pose, n)
    b0 = rng.integers(0, n_bg, n)
    p1 = (p0 + rng.integers(1, n_pose, n)) % n_pose  # the pose view has a new pose
    b1 = (b0 + rng.integers(1, n_bg, n)) % n_bg  # the bg view has a new background
    pose_label = {"anchor": p0, "bg": p0, "pose": p1}
    bg_label = {"anchor": b0, "bg": b1, "pose": b0}
    zero = np.zeros((n, D))
    raw, subject, pose_feat, bg_feat = {}, {}, {}, {}
    for v in VIEWS:
        p, b = p_vec[pose_label[v]], b_vec[bg_label[v]]
        raw[v] = np.hstack([s_vec, p, b])
        subject[v] = np.hstack([s_vec, zero, zero])
        pose_feat[v] = np.hstack([zero, p, zero])
        bg_feat[v] = np.hstack([zero, zero, b])
    return World(raw, subject, pose_feat, bg_feat, pose_label, bg_label, n)


def stack(d: dict) -> np.ndarray:
    return np.concatenate([d[v] for v in VIEWS])


def assert_json_clean(result: dict) -> None:
    """Strict JSON (no NaN) and only plain Python types."""
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text) == result


# --- bootstrap -------------------------------------------------------------------------------

def test_bootstrap_interval_known_width_and_contains_value():
    values = np.random.default_rng(1).normal(size=400)
    ci = bootstrap_ci(values, n_boot=1000, seed=3)
    assert ci["value"] == pytest.approx(values.mean())
    assert ci["low"] < ci["value"] < ci["high"]
    # Standard error of a mean of 400 unit-variance values is 0.05: 95% width ~ 2 * 1.96 * 0.05.
    assert ci["high"] - ci["low"] == pytest.approx(0.196, rel=0.15)
    assert_json_clean(ci)


def test_bootstrap_narrower_with_more_subjects_and_level():
    rng = np.random.default_rng(2)
    small = bootstrap_ci(rng.normal(size=50), n_boot=500, seed=0)
    large = bootstrap_ci(rng.normal(size=2000), n_boot=500, seed=0)
    assert large["high"] - large["low"] < (small["high"] - small["low"]) / 3  # sqrt(40) ~ 6.3x narrower
    v = rng.normal(size=200)
    wide, narrow = bootstrap_ci(v, level=0.95), bootstrap_ci(v, level=0.5)
    assert narrow["high"] - narrow["low"] < wide["high"] - wide["low"]


def test_bootstrap_deterministic_for_seed():
    v = np.random.default_rng(3).exponential(size=100)
    assert bootstrap_ci(v, seed=7) == bootstrap_ci(v, seed=7)
    assert bootstrap_ci(v, seed=7) != bootstrap_ci(v, seed=8)
    assert bootstrap_ci(v, n_boot=0) == {"value": pytest.approx(v.mean()), "low": None, "high": None}


def test_bootstrap_weights_are_counts_of_resampled_subjects():
    blocks = list(resample_weights(37, 1000, seed=0))
    w = np.concatenate(blocks)
    assert w.shape == (1000, 37)
    assert np.all(w.sum(axis=1) == 37) and np.all(w >= 0) and np.all(w == np.round(w))
    # Each subject is drawn Binomial(37, 1/37) times: mean 1, variance 36/37.
    assert w.mean() == pytest.approx(1.0, abs=0.02)
    assert w.var() == pytest.approx(36 / 37, rel=0.1)
    # The function form (recompute on the resampled indices) gives the same answer as the
    # vectorised per-subject-mean form on the same replicates.
    v = np.random.default_rng(4).normal(size=37)
    by_index = bootstrap_ci(lambda w: v[np.repeat(np.arange(37), w.astype(int))].mean(), 37, seed=5)
    by_values = bootstrap_ci(v, seed=5)
    assert by_index == pytest.approx(by_values)


def test_cluster_bootstrap_resamples_whole_subjects():
    # Two views per subject with identical values: resampling subjects must equal resampling
    # the per-subject values, not twice as many independent samples.
    per_subject = np.random.default_rng(5).normal(size=60)
    per_sample = np.repeat(per_subject, 2)
    subjects = np.repeat([f"s{i:02d}" for i in range(60)], 2)
    clustered = bootstrap_ci(per_sample, subjects=subjects, seed=1)
    assert clustered == pytest.approx(bootstrap_ci(per_subject, seed=1))
    with pytest.raises(ValueError, match="subjects has shape"):
        bootstrap_ci(per_sample, subjects=subjects[:5])
    with pytest.raises(ValueError, match="n_subjects"):
        bootstrap_ci(lambda w: 0.0)


# --- orthogonality, AUC ------------------------------------------------------------------------

def test_orthogonality_disentangled_entangled():
    w = make_world(50)
    assert mean_abs_cos(stack(w.subject), stack(w.pose_feat)) == pytest.approx(0.0, abs=1e-12)
    assert mean_abs_cos(stack(w.subject), stack(w.bg_feat)) == pytest.approx(0.0, abs=1e-12)
    # Fully entangled: the subject feature is the pose feature (or its negative: |cos| still 1).
    assert mean_abs_cos(stack(w.pose_feat), -stack(w.pose_feat)) == pytest.approx(1.0)
    assert abs_cos(np.eye(3), np.array([[1.0, 1, 0], [0, 2, 0], [0, 0, -5]])) == pytest.approx([2 ** -0.5, 1, 1])
    subjects = np.tile(np.arange(50), 3)
    ci = orthogonality(stack(w.raw), stack(w.pose_feat), subjects, n_boot=200)
    assert 0 < ci["low"] <= ci["value"] <= ci["high"] < 1
    assert_json_clean(ci)


def test_cosine_inputs_checked():
    x = np.ones((4, 3))
    bad = x.copy()
    bad[2] = 0
    with pytest.raises(ValueError, match="row 2"):
        mean_abs_cos(x, bad)
    with pytest.raises(ValueError, match="same shape"):
        mean_abs_cos(x, np.ones((5, 3)))
    nan = x.copy()
    nan[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mean_abs_cos(nan, x)


def test_roc_auc_matches_definition_with_ties():
    rng = np.random.default_rng(6)
    pos = rng.normal(size=70).round(1) + 0.4
    neg = rng.normal(size=90).round(1)  # rounding makes ties
    expected = roc_auc_score(np.r_[np.ones(70), np.zeros(90)], np.r_[pos, neg])
    assert roc_auc(pos, neg) == pytest.approx(expected)
    assert roc_auc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert roc_auc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert roc_auc([1.0], [1.0]) == 0.5


# --- invariance --------------------------------------------------------------------------------

def test_invariance_disentangled_is_perfect():
    w = make_world(60)
    out = invariance(w.subject["anchor"], {"pose": w.subject["pose"], "bg": w.subject["bg"]}, n_boot=200)
    assert out["n_subjects"] == 60 and out["n_different_pairs"] == 60 * 59
    for change in ("pose", "bg"):
        r = out[change]
        assert r["same"]["value"] == pytest.approx(1.0)
        assert r["auc"] == {"value": 1.0, "low": 1.0, "high": 1.0}
        assert r["margin"]["value"] == pytest.approx(1.0 - r["different"]["value"])
        assert r["margin"]["low"] > 0.5
    assert_json_clean(out)


def test_invariance_entangled_and_random():
    w = make_world(300, seed=1)
    # Pose feature as "subject feature": a background change keeps it (same = 1), a pose change
    # does not. Under a pose change, same pairs compare two different poses; a different-subject
    # pair compares anchor pose with another subject's new pose, equal in 1 of 4 cases (cos = 1)
    # and otherwise distributed like the same pairs: AUC = 3/4 * 1/2 + 1/4 * 0 = 0.375.
    ent = invariance(w.pose_feat["anchor"], {"pose": w.pose_feat["pose"], "bg": w.pose_feat["bg"]}, n_boot=100)
    assert ent["pose"]["auc"]["value"] == pytest.approx(0.375, abs=0.05)
    assert ent["bg"]["same"]["value"] == pytest.approx(1.0)
    # Under a background change it ties (cos 1) with the 1 in 4 other subjects that share the
    # anchor pose and beats the rest: AUC = 3/4 + 1/4 * 1/2 = 0.875.
    assert ent["bg"]["auc"]["value"] == pytest.approx(0.875, abs=0.03)
    rng = np.random.default_rng(9)
    rand = invariance(rng.normal(size=(300, D)), {"pose": rng.normal(size=(300, D))}, n_boot=200)
    r = rand["pose"]
    assert r["auc"]["value"] == pytest.approx(0.5, abs=0.06)  # sd of AUC with 300 positives ~0.017
    assert r["auc"]["low"] < 0.5 < r["auc"]["high"] or abs(r["auc"]["value"] - 0.5) < 0.05
    assert abs(r["margin"]["value"]) < 0.05


def test_different_subject_pairs_sampled_when_large():
    i, j = different_subject_pairs(5, max_pairs=100)
    assert len(i) == 20 and np.all(i != j)
    i, j = different_subject_pairs(1000, max_pairs=20_000, seed=3)
    assert len(i) == 20_000 and np.all(i != j)
    assert np.all(np.bincount(i) == 20)  # every subject gets the same number of partners
    assert 0 <= j.min() and j.max() < 1000 and np.unique(j).size > 900
    i2, j2 = different_subject_pairs(1000, max_pairs=20_000, seed=3)
    assert np.array_equal(j, j2)
    with pytest.raises(ValueError, match="at least 2"):
        different_subject_pairs(1)


# --- retrieval ---------------------------------------------------------------------------------

def test_retrieval_disentangled_entangled_random():
    w = make_world(120, seed=2)
    good = retrieval_topk(w.subject["anchor"], {"pose": w.subject["pose"], "bg": w.subject["bg"]}, n_boot=100)
    assert good["n_gallery"] == 120
    for view in ("pose", "bg"):
        assert good[view]["top1"]["value"] == 1.0 and good[view]["top5"]["value"] == 1.0
    assert "all" not in good  # no average over views: a view that shares a factor with the gallery could win it
    assert_json_clean(good)
    # Raw feature: pose and background make up 2/3 of it, so other subjects that share the bg
    # view's pose and background (~6 of 120) compete with the right anchor: mostly missed.
    raw = retrieval_topk(w.raw["anchor"], {"bg": w.raw["bg"]}, n_boot=0)
    assert raw["bg"]["top1"]["value"] < 0.5
    rng = np.random.default_rng(3)
    n = 500
    rand = retrieval_topk(rng.normal(size=(n, D)), rng.normal(size=(n, D)), k=(1, 50), n_boot=100)
    assert rand["query"]["top1"]["value"] < 0.02  # chance 1/500: ~1 hit expected
    assert rand["query"]["top50"]["value"] == pytest.approx(50 / n, abs=0.05)


def test_retrieval_ties_count_against_query():
    same = np.ones((10, 4))
    out = retrieval_topk(same, {"pose": same}, n_boot=0)
    assert out["pose"]["top1"]["value"] == 0.0 and out["pose"]["top5"]["value"] == 0.0
    with pytest.raises(ValueError, match="k must be"):
        retrieval_topk(same, same, k=(0,))


def test_retrieval_loo_labelled_photos():
    rng = np.random.default_rng(4)
    labels = np.repeat([f"subject{i}" for i in range(8)], 5)
    centres = rng.normal(size=(8, 32))
    clustered = centres[np.repeat(np.arange(8), 5)] + 0.05 * rng.normal(size=(40, 32))
    out = retrieval_loo(clustered, labels, n_boot=200)
    assert out["n_photos"] == 40 and out["n_subjects"] == 8
    assert out["top1"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert_json_clean(out)
    many = np.repeat(np.arange(200), 5)
    rand = retrieval_loo(rng.normal(size=(1000, 32)), many, n_boot=100)
    assert rand["top1"]["value"] < 0.03  # chance 4/999
    with pytest.raises(ValueError, match="single photo"):
        retrieval_loo(clustered[:6], labels[:6])


# --- probes ------------------------------------------------------------------------------------

def _split(w: World, feat: dict, label: dict, n_train: int):
    """Probe data: train on the first n_train subjects, test on the rest (all three views)."""
    x, y = stack(feat), stack(label)
    subj = np.tile(np.arange(w.n), 3)
    tr = subj < n_train
    return x[tr], y[tr], x[~tr], y[~tr], subj[~tr], subj[tr]


def test_probes_at_chance_from_disentangled_subject_feature():
    w = make_world(400, seed=5)
    for label in (w.pose_label, w.bg_label):
        tx, ty, vx, vy, vs, _ = _split(w, w.subject, label, 300)
        out = linear_probe(tx, ty, vx, vy, test_subjects=vs, seed=0, n_boot=200)
        _, counts = np.unique(vy, return_counts=True)
        assert out["chance"] == pytest.approx(counts.max() / counts.sum())
        # The subject block carries nothing about pose/background: at most chance (+3 sd noise).
        assert out["score"]["value"] <= out["chance"] + 0.08
        assert out["n_test"] == 300 and out["n_test_subjects"] == 100
        assert np.mean(out["per_sample"]) == pytest.approx(out["score"]["value"])
        assert_json_clean(out)


def test_probes_near_one_from_entangled_feature():
    w = make_world(200, seed=6)
    rng = np.random.default_rng(0)
    noisy = {v: w.pose_feat[v] + 0.05 * rng.normal(size=w.pose_feat[v].shape) for v in VIEWS}
    tx, ty, vx, vy, vs, _ = _split(w, noisy, w.pose_label, 150)
    out = linear_probe(tx, ty, vx, vy, test_subjects=vs, n_boot=200)
    assert out["score"]["value"] > 0.97 and out["converged"]
    assert out["score"]["low"] <= out["score"]["value"] <= out["score"]["high"]
    # The raw feature also carries pose: the probe reads it well above chance.
    tx, ty, vx, vy, vs, _ = _split(w, w.raw, w.pose_label, 150)
    raw = linear_probe(tx, ty, vx, vy, test_subjects=vs, n_boot=0)
    assert raw["score"]["value"] > raw["chance"] + 0.3


def test_regression_probe_r2_and_cv_choice():
    w = make_world(200, seed=7)
    angle = {v: w.pose_label[v] * 10.0 for v in VIEWS}  # a numeric pose parameter
    tx, ty, vx, vy, vs, ts = _split(w, w.pose_feat, angle, 150)
    out = linear_probe(tx, ty, vx, vy, kind="regression", test_subjects=vs, alpha=(0.1, 10.0),
                       train_groups=ts, n_boot=200)
    assert out["metric"] == "r2" and out["chance"] == 0.0 and out["strength"] in (0.1, 10.0)
    assert out["score"]["value"] > 0.95
    # The point estimate is the ordinary R^2 of the fitted model's predictions.
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler
    sc = StandardScaler().fit(tx)
    pred = Ridge(alpha=out["strength"]).fit(sc.transform(tx), ty).predict(sc.transform(vx))
    assert out["score"]["value"] == pytest.approx(r2_score(vy, pred))
    tx, ty, vx, vy, vs, _ = _split(w, w.subject, angle, 150)
    blind = linear_probe(tx, ty, vx, vy, kind="regression", test_subjects=vs, n_boot=100)
    assert blind["score"]["value"] < 0.1
    assert_json_clean(blind)
    cls = linear_probe(*_split(w, w.raw, w.pose_label, 150)[:4], C=[0.01, 1.0], n_boot=0)
    assert cls["strength"] in (0.01, 1.0)
    with pytest.raises(ValueError, match="kind"):
        linear_probe(tx, ty, vx, vy, kind="ranking")
    with pytest.raises(ValueError, match="single class"):
        linear_probe(tx, np.zeros(len(tx)), vx, vy)


# --- plots -------------------------------------------------------------------------------------

def _png_ok(path) -> tuple[int, int]:
    assert path.stat().st_size > 5000
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_plots_write_readable_pngs(tmp_path):
    w = make_world(60, seed=8)
    rng = np.random.default_rng(1)
    feats = {"raw backbone": w.raw, "subject": {v: w.subject[v] + 0.1 * rng.normal(size=w.subject[v].shape)
                                                for v in VIEWS}}
    heat = similarity_heatmaps(feats, tmp_path / "heat.png", max_subjects=40)
    width, height = _png_ok(heat)
    assert width > height  # two feature columns side by side

    subjects = np.tile(np.arange(60), 3)
    labels = {"subject": subjects, "pose": stack(w.pose_label), "background": stack(w.bg_label)}
    scatter = projection_scatter({"raw backbone": stack(feats["raw backbone"]), "subject": stack(feats["subject"])},
                                 labels, tmp_path / "pca.png")
    _png_ok(scatter)

    results = {}
    for name, f in feats.items():
        results[name] = {}
        for probe, label in (("pose label", w.pose_label), ("background label", w.bg_label)):
            tx, ty, vx, vy, vs, _ = _split(w, f, label, 40)
            results[name][probe] = linear_probe(tx, ty, vx, vy, test_subjects=vs, n_boot=50)
    bars = probe_bars(results, tmp_path / "sub" / "probes.png")
    _png_ok(bars)
    with pytest.raises(ValueError, match="lacks views"):
        similarity_heatmaps({"raw": {"anchor": w.raw["anchor"]}}, tmp_path / "x.png")

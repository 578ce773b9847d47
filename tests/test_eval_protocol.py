"""The evaluation protocol (issue 18) on constructed features: for each metric, a feature that a shortcut lets
win the old metric must lose (or be called unmeasurable by) the new one, and a feature that really is better
must still win.

The constructed world: subject ``i``'s group has three views, ``anchor`` (pose P0, background B0), ``bg`` (P0,
B1) and ``pose`` (P1, B0), every pose and background drawn for that group alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from spotdiff.evaluate import probes, protocol
from spotdiff.evaluate.metrics import retrieval_topk
from spotdiff.evaluate.probes import grouped_probe, leakage, linear_probe
from spotdiff.evaluate.protocol import MET, NOT_MET, SUBJECT, UNMEASURABLE

VIEWS = ("anchor", "bg", "pose")


def group_world(n: int, seed: int, d: int = 16) -> dict[str, np.ndarray]:
    """Per view (n, d) vectors: ``subject`` identity, ``pose`` and ``background`` of the image."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, d))
    p0, p1, b0, b1 = (rng.normal(size=(n, d)) for _ in range(4))
    return {"subject": np.stack([s, s, s], 1), "pose": np.stack([p0, p0, p1], 1),
            "background": np.stack([b0, b1, b0], 1)}


def no_labels(n: int) -> dict[str, np.ndarray]:
    """Probe labels that skip both probes (one background kind, no yaw): for retrieval-only worlds."""
    return {"background": np.full(n * 3, "noise"), "pose": np.full(n * 3, -1)}


def proto(dim: int = 16, n_boot: int = 300) -> protocol.Protocol:
    return protocol.Protocol(dim=dim, n_boot=n_boot, seed=0)


def old_both_views_top1(f: np.ndarray) -> float:
    """The old headline: retrieval of the pose and bg views from the anchors, averaged per subject."""
    r = retrieval_topk(f[:, 0], {"pose": f[:, 2], "bg": f[:, 1]}, n_boot=0)
    return (r["pose"]["top1"]["value"] + r["bg"]["top1"]["value"]) / 2


# --- retrieval ---------------------------------------------------------------------------------

def test_background_shortcut_wins_anchor_retrieval_and_loses_pose_vs_bg():
    """A feature that encodes background identity finds every pose view from its anchor (they share the
    background) and so beat a real but noisy identity feature on the old both-views average; on pose views
    against bg views (no shared factor) it is at chance and loses, and the real feature wins."""
    n = 60
    w = group_world(n, seed=1)
    rng = np.random.default_rng(2)
    shortcut = w["background"] + 0.05 * rng.normal(size=w["background"].shape)
    real = w["subject"] + 1.3 * rng.normal(size=w["subject"].shape)  # identity, through heavy noise
    assert old_both_views_top1(shortcut) > old_both_views_top1(real) + 0.1  # the old metric's winner

    per, comp = protocol.score({SUBJECT: shortcut, "real": real}, [f"s{i}" for i in range(n)], no_labels(n), proto())
    assert per[SUBJECT]["retrieval"]["pose_to_anchor"]["top1"]["value"] == 1.0  # reported beside, never averaged in
    assert per[SUBJECT]["retrieval"]["pose_and_bg"]["top1"]["value"] < 0.1
    assert comp["retrieval"]["status"] == NOT_MET and comp["retrieval"]["best_baseline"] == "real"

    _, comp = protocol.score({SUBJECT: real, "shortcut": shortcut}, [f"s{i}" for i in range(n)], no_labels(n), proto())
    assert comp["retrieval"]["status"] == MET and comp["retrieval"]["difference"]["low"] > 0


def test_subject_must_beat_the_best_baseline_not_the_weakest():
    """Beating the whole-image baseline is not enough: a baseline that reads the identity better (here the
    window the head reads) decides, and the verdict names it."""
    n = 60
    w = group_world(n, seed=3)
    rng = np.random.default_rng(4)
    image = w["background"] + 0.2 * w["subject"]  # background dominates the whole image
    window = w["subject"] + 0.4 * rng.normal(size=w["subject"].shape)
    subject = w["subject"] + 1.0 * rng.normal(size=w["subject"].shape)
    feats = {SUBJECT: subject, "raw_image": image, "raw_window": window}
    _, comp = protocol.score(feats, [f"s{i}" for i in range(n)], no_labels(n), proto())
    assert comp["retrieval"]["vs"]["raw_image"]["low"] > 0  # it does beat the old baseline
    assert comp["retrieval"]["status"] == NOT_MET and comp["retrieval"]["best_baseline"] == "raw_window"
    assert comp["background"]["status"] == protocol.SKIPPED and comp["pose"]["status"] == protocol.SKIPPED
    assert protocol.verdict(comp)["verdict"] == "FAIL"


# --- probes ------------------------------------------------------------------------------------

KINDS = np.array(["gradient", "noise", "pattern", "photo"])


def probe_world(n_subjects: int, rng: np.random.Generator, kind_vec: np.ndarray):
    """Groups with a background kind per view (the pose view keeps the anchor's): (each view's kind vector
    (n, 3, d), kind labels per image, subject per image)."""
    k = rng.integers(0, len(KINDS), size=(n_subjects, 3))
    k[:, 2] = k[:, 0]
    return kind_vec[k], KINDS[k].ravel(), np.repeat([f"s{i}" for i in range(n_subjects)], 3)


def test_probe_fit_on_flattened_train_subjects_misses_leakage_on_unseen_ones():
    """The invariance term flattens the class means on *train* subjects. A subject feature that is flat there
    but leaks on unseen subjects reads at chance to a probe fit on train subjects (the old protocol: a win
    over a leaking baseline); probes fit and scored on the unseen subjects read the leak, as much as the
    baseline's, and the check is not met."""
    n_tr, n_te, d = 150, 60, 16
    rng = np.random.default_rng(5)
    kind_vec = 1.5 * rng.normal(size=(len(KINDS), d))
    vec_tr, y_tr, _ = probe_world(n_tr, rng, kind_vec)
    vec_te, y_te, subj_te = probe_world(n_te, rng, kind_vec)
    ident_tr, ident_te = rng.normal(size=(n_tr, 1, d)).repeat(3, 1), rng.normal(size=(n_te, 1, d)).repeat(3, 1)

    def noise(m):
        return 0.3 * rng.normal(size=(m, 3, d))
    subject_tr = ident_tr + noise(n_tr)  # flat on the train subjects
    subject_te = ident_te + vec_te + noise(n_te)  # leaks on unseen ones
    base_tr, base_te = ident_tr + vec_tr + noise(n_tr), ident_te + vec_te + noise(n_te)

    def flat(x):
        return x.reshape(-1, d)
    old_s = linear_probe(flat(subject_tr), y_tr, flat(subject_te), y_te, test_subjects=subj_te, n_boot=300)
    old_b = linear_probe(flat(base_tr), y_tr, flat(base_te), y_te, test_subjects=subj_te, n_boot=300)
    assert old_s["score"]["high"] < old_b["score"]["low"]  # the old rule: non-overlapping, lower = met

    labels = {"background": y_te, "pose": np.full(len(y_te), -1)}
    per, comp = protocol.score({SUBJECT: subject_te, "baseline": base_te}, [f"s{i}" for i in range(n_te)], labels,
                               proto(d))
    assert per[SUBJECT]["probes"]["background"]["leakage"]["low"] > 0.2  # the leak, read on unseen subjects
    assert comp["background"]["status"] == NOT_MET


def wide_world(n: int, seed: int, d: int = 16, width: int = 3000):
    """``z`` (n, d) and ``relu(z @ W)`` (n, width): the same information, the wide one a deterministic function
    of the narrow one; label: z_1^2 above its median, which no linear read-out of ``z`` can see."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, width))

    def draw(m):
        z = rng.normal(size=(m, d))
        return z, np.maximum(z @ w, 0.0), (z[:, 0] ** 2 > 0.455).astype(int)

    return draw


def test_wide_baseline_reads_a_label_only_through_its_width():
    """A linear probe on 3000 random ReLU features of ``z`` reads z_1^2, which a linear probe on ``z`` cannot,
    although the wide feature holds nothing ``z`` does not: the old protocol (full width, C = 1, fit on train
    subjects) calls the narrow feature leak-free against it. Reduced to the same dimensionality inside the
    folds, the wide baseline reads the label at chance, so the check is unmeasurable, not met."""
    d = 16
    draw = wide_world(0, seed=0, d=d)
    z_tr, b_tr, y_tr = draw(900)
    z_te, b_te, y_te = draw(180)
    subj = np.repeat(np.arange(60), 3)
    old_s = linear_probe(z_tr, y_tr, z_te, y_te, test_subjects=subj, n_boot=300)
    old_b = linear_probe(b_tr, y_tr, b_te, y_te, test_subjects=subj, n_boot=300)
    assert old_s["score"]["high"] < old_b["score"]["low"]  # "met" under the old rule

    per, comp = protocol.score({SUBJECT: z_te.reshape(60, 3, d), "wide": b_te.reshape(60, 3, -1)},
                               [f"s{i}" for i in range(60)], {"background": y_te.astype(str), "pose": np.full(180, -1)},
                               proto(d))
    assert per["wide"]["probes"]["background"]["dim"] == per[SUBJECT]["probes"]["background"]["dim"] == d
    assert per["wide"]["probes"]["background"]["at_chance"]
    assert comp["background"]["status"] == UNMEASURABLE and comp["background"]["blind_baselines"] == ["wide"]


def test_below_chance_is_at_chance_not_a_win():
    """A constant feature's out-of-fold probe guesses the training folds' majority, which is the held-out
    fold's minority: below chance, systematically. Lower accuracy than a baseline that reads nothing either
    is no evidence of less leakage: leakage is clipped at chance and the check is unmeasurable."""
    n, d = 20, 8
    rng = np.random.default_rng(1)
    y = np.repeat(rng.permutation(np.repeat(["a", "b"], n // 2)), 3)  # each subject one class, balanced
    subj = np.repeat([f"s{i}" for i in range(n)], 3)
    const = np.ones((n * 3, d))
    noise = rng.normal(size=(n * 3, d))
    p = grouped_probe(const, y, subj, dim=d)
    leak = leakage(p["correct"], p["prior"], subj, n_boot=300)
    assert leak["accuracy"]["value"] < leak["chance"] - 0.1 and leak["excess"]["value"] < -0.1  # below chance
    assert leak["leakage"]["value"] == 0.0 and leak["at_chance"]

    labels = {"background": y, "pose": np.full(n * 3, -1)}
    per, comp = protocol.score({SUBJECT: const.reshape(n, 3, d), "noise": noise.reshape(n, 3, d)},
                               [f"s{i}" for i in range(n)], labels, proto(d))
    acc = {k: per[k]["probes"]["background"]["accuracy"]["value"] for k in (SUBJECT, "noise")}
    assert acc[SUBJECT] < acc["noise"]  # lower accuracy, which the old rule read as less leakage
    assert comp["background"]["status"] == UNMEASURABLE
    assert comp["background"]["difference"]["value"] == pytest.approx(-per["noise"]["probes"]["background"]["leakage"]["value"])
    assert not comp["background"]["difference"]["high"] < 0  # and not a win once clipped


def test_leakage_met_only_when_every_baseline_reads_the_factor_and_the_subject_reads_less():
    n, d = 60, 16
    rng = np.random.default_rng(8)
    vec, y, _ = probe_world(n, rng, 1.5 * rng.normal(size=(len(KINDS), d)))
    ident = rng.normal(size=(n, 1, d)).repeat(3, 1)
    clean = ident + 0.3 * rng.normal(size=(n, 3, d))
    leaky = ident + vec + 0.3 * rng.normal(size=(n, 3, d))
    blind = rng.normal(size=(n, 3, d))
    labels = {"background": y, "pose": np.full(n * 3, -1)}
    ids = [f"s{i}" for i in range(n)]
    _, comp = protocol.score({SUBJECT: clean, "leaky": leaky}, ids, labels, proto(d))
    assert comp["background"]["status"] == MET and comp["background"]["best_baseline"] == "leaky"
    _, comp = protocol.score({SUBJECT: clean, "leaky": leaky, "blind": blind}, ids, labels, proto(d))
    assert comp["background"]["status"] == UNMEASURABLE and comp["background"]["blind_baselines"] == ["blind"]
    _, comp = protocol.score({SUBJECT: leaky, "leaky2": ident + vec + 0.3 * rng.normal(size=(n, 3, d))}, ids, labels,
                             proto(d))
    assert comp["background"]["status"] == NOT_MET


def test_verdict_words():
    def comp(r, b, p):
        return {"retrieval": {"status": r}, "background": {"status": b}, "pose": {"status": p}}
    assert protocol.verdict(comp(MET, MET, MET)) | {"rule": ""} == {
        "checks": {"retrieval": MET, "background_leakage": MET, "pose_leakage": MET}, "pass": True, "verdict": "PASS",
        "rule": ""}
    assert protocol.verdict(comp(MET, MET, UNMEASURABLE))["verdict"] == "UNMEASURABLE"
    assert not protocol.verdict(comp(MET, MET, UNMEASURABLE))["pass"]
    assert protocol.verdict(comp(NOT_MET, MET, UNMEASURABLE))["verdict"] == "FAIL"


def test_grouped_probe_never_scores_a_subject_it_was_fit_on():
    """Each subject's images carry a label only that subject's identity predicts (a per-subject code): a probe
    scored on subjects it was fit on reads it perfectly; out of fold, grouped by subject, it reads chance."""
    n, d = 40, 48
    rng = np.random.default_rng(9)
    code = rng.normal(size=(n, d))
    x = np.repeat(code, 3, axis=0) + 0.01 * rng.normal(size=(n * 3, d))
    y = np.repeat(rng.integers(0, 2, n), 3)
    subj = np.repeat(np.arange(n), 3)
    p = grouped_probe(x, y, subj, dim=16)
    leak = leakage(p["correct"], p["prior"], subj, n_boot=300)
    assert leak["at_chance"], leak
    assert p["folds"] == 5 and len(p["C"]) == 5 and set(p["C"]) <= set(protocol.PROBE_C)


@pytest.mark.parametrize("n,d", [(40, 12), (12, 40)])
def test_pca_basis_in_blocks_is_the_same_basis(n, d):
    """evaluate's PCA baseline sums the covariance over row blocks (memory d x d, not another copy of 26k
    train rows): any block size gives the basis of the whole matrix at once, with the transform applied per
    block, and the directions span the same subspace (same signs by the largest-entry rule)."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(n, d)) * np.linspace(3, 0.2, d)).astype(np.float32)
    scale = np.linspace(1, 2, d)

    def transform(r):
        return np.asarray(r, np.float64) * scale

    centre, basis = probes.pca_basis(transform(x), 5)
    for block in (7, 16, n):
        c2, b2 = probes.pca_basis(x, 5, transform=transform, block=block)
        assert np.allclose(c2, centre, atol=1e-12) and np.allclose(b2, basis, atol=1e-9)
    assert basis.shape == (d, 5) and np.allclose(basis.T @ basis, np.eye(5), atol=1e-9)


def test_evaluate_refuses_bad_inputs_before_any_work(tmp_path):
    """A test split of one subject, a missing or an empty photo folder: each one ``InputError`` naming what to
    change, raised before the model is read (here there is none) or a feature computed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spotdiff.config import parse_params
    from spotdiff.errors import InputError, MissingInputError
    from spotdiff.evaluate.run import evaluate

    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(pa.table({"split": ["train", "train", "test", "test"],
                             "subject_id": ["proc:a", "proc:b", "proc:c", "proc:c"]}), shards / "index.parquet")
    params = parse_params({})
    with pytest.raises(InputError, match=r"holds 2 group\(s\) of 1 subject\(s\).*shard.split.test"):
        evaluate(shards, tmp_path / "no-model", tmp_path / "eval", params)
    with pytest.raises(MissingInputError, match="not found"):
        evaluate(shards, tmp_path / "no-model", tmp_path / "eval", params, photos=tmp_path / "missing")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(InputError, match="holds no photos"):
        evaluate(shards, tmp_path / "no-model", tmp_path / "eval", params, photos=tmp_path / "empty")
    # Two test subjects pass the check: the next thing missing is the model, named as such.
    pq.write_table(pa.table({"split": ["test", "test"], "subject_id": ["proc:c", "proc:d"]}), shards / "index.parquet")
    with pytest.raises(InputError, match="no-model"):
        evaluate(shards, tmp_path / "no-model", tmp_path / "eval", params)

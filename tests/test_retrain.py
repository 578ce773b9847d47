"""The scheduled-retraining release decision."""

from spotdiff.publish.retrain import decide

PREV = {"subject": {"retrieval_top1": 0.60, "background_probe": 0.40, "pose_probe": 0.25}}


def test_no_previous_release_publishes():
    assert decide(PREV, None, 0.02)["publish"] is True


def test_within_tolerance_publishes():
    new = {"subject": {"retrieval_top1": 0.59, "background_probe": 0.41, "pose_probe": 0.25}}
    d = decide(new, PREV, 0.02)
    assert d["publish"] and not any(r["regressed"] for r in d["rows"]) and len(d["rows"]) == 3


def test_regression_in_either_direction_blocks():
    worse_retrieval = {"subject": {**PREV["subject"], "retrieval_top1": 0.55}}
    d = decide(worse_retrieval, PREV, 0.02)
    assert not d["publish"] and "retrieval_top1" in d["reason"]
    more_leakage = {"subject": {**PREV["subject"], "background_probe": 0.45}}  # probes: lower is better
    d = decide(more_leakage, PREV, 0.02)
    assert not d["publish"] and "background_probe" in d["reason"]


def test_improvements_publish():
    better = {"subject": {"retrieval_top1": 0.70, "background_probe": 0.30, "pose_probe": 0.20}}
    d = decide(better, PREV, 0.0)
    assert d["publish"] and all(not r["regressed"] for r in d["rows"])

"""The scheduled-retraining release decision."""

from spotdiff.publish.retrain import decide

PREV = {"protocol": 2, "subject": {"retrieval_cross_top1": 0.60, "background_leakage": 0.10, "pose_leakage": 0.05}}


def test_no_previous_release_publishes():
    assert decide(PREV, None, 0.02)["publish"] is True


def test_within_tolerance_publishes():
    new = {"protocol": 2, "subject": {"retrieval_cross_top1": 0.59, "background_leakage": 0.11, "pose_leakage": 0.05}}
    d = decide(new, PREV, 0.02)
    assert d["publish"] and not any(r["regressed"] for r in d["rows"]) and len(d["rows"]) == 3


def test_regression_in_either_direction_blocks():
    worse_retrieval = {**PREV, "subject": {**PREV["subject"], "retrieval_cross_top1": 0.55}}
    d = decide(worse_retrieval, PREV, 0.02)
    assert not d["publish"] and "retrieval_cross_top1" in d["reason"]
    more_leakage = {**PREV, "subject": {**PREV["subject"], "background_leakage": 0.15}}  # leakage: lower is better
    d = decide(more_leakage, PREV, 0.02)
    assert not d["publish"] and "background_leakage" in d["reason"]


def test_improvements_publish():
    better = {"protocol": 2, "subject": {"retrieval_cross_top1": 0.70, "background_leakage": 0.0, "pose_leakage": 0.0}}
    d = decide(better, PREV, 0.0)
    assert d["publish"] and all(not r["regressed"] for r in d["rows"])


def test_another_protocol_is_not_compared():
    """A release evaluated under the old protocol (whole-image baseline, anchor-view retrieval) has no
    comparable score: the decision says so instead of comparing numbers that mean other things."""
    old = {"subject": {"retrieval_top1": 0.90, "background_probe": 0.10}}
    d = decide(PREV, old, 0.0)
    assert d["publish"] and not d["rows"] and "protocol 1" in d["reason"]

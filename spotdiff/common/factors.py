"""Factor labels of every view, read from each group's JSON record: which pose and which background.

Training uses them to keep the subject feature's mean the same across poses and backgrounds
(``losses.factor_invariance``); evaluation fits its leakage probes on the same labels. Both read them
here, so the two never disagree on what a label means.

- background: the background kind of each view (``noise``, ``gradient``, ``pattern``, ``horizon``,
  ``photo``, ...: the part of ``background.B0`` / ``B1`` before the colon);
- pose: the yaw of rendered (procedural) subjects in 4 bins of 90 degrees (``POSE_BINS``); photo
  subjects have no yaw label (-1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spotdiff.common.record import VIEWS

POSE_BINS = ("front", "left", "back", "right")
"""Yaw bins of 90 degrees centred on 0, 90, 180 and -90 degrees."""
VIEW_POSE = {"anchor": "P0", "bg": "P0", "pose": "P1"}
VIEW_BACKGROUND = {"anchor": "B0", "bg": "B1", "pose": "B0"}


def yaw_bin(yaw: float) -> int:
    """Index into POSE_BINS of a yaw angle in degrees."""
    return int(((yaw + 45.0) % 360.0) // 90.0)


def view_labels(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per image (groups x views, row-major) labels: ``background`` kind (str), ``pose`` bin (int, -1 =
    no yaw label), ``subject`` id (str)."""
    bg, pose, subj = [], [], []
    for rec in records:
        for view in VIEWS:
            bg.append(str(rec.get("background", {}).get(VIEW_BACKGROUND[view], "unknown")).split(":", 1)[0])
            yaw = rec.get("pose", {}).get(VIEW_POSE[view], {})
            pose.append(yaw_bin(float(yaw["yaw"])) if isinstance(yaw, dict) and "yaw" in yaw else -1)
            subj.append(rec.get("subject_id", rec.get("key", "")))
    return {"background": np.array(bg), "pose": np.array(pose), "subject": np.array(subj)}


def factor_ids(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """``view_labels``' pose and background labels as int64 class ids, shape (groups, views); -1 = no
    label. Background kinds are numbered in sorted order."""
    lab = view_labels(records)
    n = len(records)
    _, bg = np.unique(lab["background"], return_inverse=True)
    return {"pose": lab["pose"].astype(np.int64).reshape(n, len(VIEWS)),
            "background": np.asarray(bg, np.int64).reshape(n, len(VIEWS))}

"""Scheduled retraining's release decision: publish only if evaluation did not regress.

``decide(new, previous, max_regression)`` compares the subject feature's headline scores
(``evaluate.run.headline``) with those of the last release: a score regresses when it is worse by
more than ``max_regression`` (absolute, on 0-1 scores): lower for retrieval and invariance, higher for
the leakage probes (less leakage is better). No previous release: publish. A previous release evaluated
under another protocol (``evaluate.protocol.PROTOCOL``: other metrics, other baselines) has nothing
comparable: publish, and say so.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

HIGHER_IS_BETTER = ("retrieval_cross_top1", "retrieval_cross_top5", "auc_pose_change", "auc_bg_change",
                    "real_photo_top1")
LOWER_IS_BETTER = ("background_leakage", "pose_leakage")


def decide(new: dict[str, Any], previous: dict[str, Any] | None, max_regression: float) -> dict[str, Any]:
    """``{"publish": bool, "reason": str, "rows": [{"metric", "previous", "new", "change", "regressed"}]}``
    for headline dicts ``new`` and ``previous`` (each with a ``subject`` mapping of scores)."""
    if previous is None:
        return {"publish": True, "reason": "no previous release", "rows": [], "max_regression": max_regression}
    if previous.get("protocol") != new.get("protocol"):
        return {"publish": True, "max_regression": max_regression, "rows": [],
                "reason": f"the previous release was evaluated under protocol {previous.get('protocol', 1)}, this one "
                          f"under {new.get('protocol', 1)}: no score is comparable"}
    rows = []
    for metric in HIGHER_IS_BETTER + LOWER_IS_BETTER:
        old, cur = previous.get("subject", {}).get(metric), new.get("subject", {}).get(metric)
        if old is None or cur is None:
            continue
        better = (cur - old) if metric in HIGHER_IS_BETTER else (old - cur)
        rows.append({"metric": metric, "previous": old, "new": cur, "change": round(cur - old, 6),
                     "regressed": better < -max_regression})
    regressed = [r["metric"] for r in rows if r["regressed"]]
    reason = (f"regressed beyond {max_regression}: {', '.join(regressed)}" if regressed
              else f"no score regressed beyond {max_regression}")
    return {"publish": not regressed, "reason": reason, "rows": rows, "max_regression": max_regression}


def release_headline(tar_path: str | Path) -> dict[str, Any] | None:
    """The headline scores stored in a release tar's ``metrics.json`` (None if it has no evaluation)."""
    from spotdiff.evaluate.protocol import PROTOCOL
    from spotdiff.evaluate.run import headline

    with tarfile.open(tar_path) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("/metrics.json") and m.name.count("/") == 1), None)
        if member is None:
            return None
        metrics = json.loads(tar.extractfile(member).read())
    evaluation = metrics.get("evaluation")
    if not evaluation:
        return None
    if evaluation.get("protocol") != PROTOCOL:
        return {"protocol": evaluation.get("protocol", 1)}  # scores of another protocol: nothing to compare
    return headline(evaluation)


def latest_release(folder: str | Path) -> Path | None:
    """The newest ``spotdiff10k-*.tar`` in ``folder`` by modification time (None if there is none)."""
    tars = sorted(Path(folder).glob("spotdiff10k-*.tar"), key=lambda p: (p.stat().st_mtime, p.name))
    return tars[-1] if tars else None

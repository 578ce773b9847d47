"""How far can the mask-quality score's cue family go? (issue 15: held-out ROC AUC >= 0.9 was the target)

    .venv/bin/python bench/quality_ceiling.py [--rows bench/out/quality_ceiling_rows.json]   # ~2 min

Runs ``calibrate_quality.pool`` (the same photos, masks and labels as the fit) with four candidate cues
measured beside ``quality.cues``, none of them tied to how ``grabcut`` picks its hypothesis:

* ``sides``: frame sides the mask covers more than 10% of; ``side_max``: the largest such cover (a wearer, an
  arm, a table or the ground kept with the subject reaches the frame);
* ``agree_min``: the smallest IoU with the reference segmentations (``agree`` is the largest);
* ``regrow``: IoU of the mask with the photo re-segmented by its colour models from the mask's core (eroded by
  12% of the side): a subject cut in half regrows into the other half.

and ``area`` (left out of the shipped model, see ``calibrate_quality.CUES``). Then, with the cross-fit
protocol of ``calibrate_quality.py`` (fit on the photos of even index, test on the odd ones, and back), the
held-out ROC AUC (bad = IoU < 0.8) on the real masks and on ``grabcut``'s choice, and the share of good masks
lost when the threshold rejects 90% of bad ones, for: the shipped linear model, the linear model with the
new cues, logistic regression on pairwise products of standardised cues, and gradient-boosted trees (a
ceiling for what a small nonlinear model on these cues can do). Writes ``bench/out/quality_ceiling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import spotdiff  # noqa: E402,F401 -- first: it pins the CPU dispatch of numpy and cv2
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench import calibrate_quality  # noqa: E402
from bench.bench_segment import roc_auc  # noqa: E402
from spotdiff.generate.segment import quality  # noqa: E402
from spotdiff.generate.segment.colour import colour_refine, shrink  # noqa: E402

EXTRA = ("sides", "side_max", "agree_min", "regrow")


def extra_cues(rgb: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The candidate cues of the module docstring."""
    img = shrink(rgb, quality.SIDE)
    m = quality._fit(mask, img.shape[:2])
    covers = [float(s.mean()) for s in (m[0], m[-1], m[:, 0], m[:, -1])]
    out = {"sides": float(sum(c > 0.1 for c in covers)), "side_max": max(covers)}
    small = shrink(rgb, quality.REF_SIDE)
    m = quality._fit(mask, small.shape[:2])
    if not m.any() or m.all():
        return {**out, "agree_min": 0.0, "regrow": 0.0}
    out["agree_min"] = min(quality.iou(m, r) for r in quality.references(rgb))
    k = max(3, round(max(m.shape) * 0.12)) | 1
    core = cv2.erode(m.astype(np.uint8), np.ones((k, k), np.uint8))
    out["regrow"] = quality.iou(m, colour_refine(small, core.astype(np.float32), iterations=1)) if core.any() else 0.0
    return out


def _pairwise(z: np.ndarray) -> np.ndarray:
    n = z.shape[1]
    return np.hstack([z] + [(z[:, i] * z[:, j])[:, None] for i in range(n) for j in range(i, n)])


def heldout(rows: list[dict], cues: tuple[str, ...], kind: str, good: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Cross-fit held-out P(good) of every row."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    x = np.array([[r[k] for k in cues] for r in rows])
    held = np.zeros(len(rows))
    for h in (0, 1):
        tr = half != h
        if kind == "gbm":
            model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15, random_state=0)
            held[~tr] = model.fit(x[tr], good[tr]).predict_proba(x[~tr])[:, 1]
            continue
        z = x  # linear: calibrate_quality's own fit (raw cues, C=1)
        if kind == "pairwise":  # standardised by the training half, then every product of two
            z = _pairwise((x - x[tr].mean(0)) / (x[tr].std(0) + 1e-9))
        model = LogisticRegression(C=0.01 if kind == "pairwise" else 1.0, max_iter=20000)
        held[~tr] = model.fit(z[tr], good[tr]).predict_proba(z[~tr])[:, 1]
    return held


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "bench/data/segment")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/quality_ceiling.json")
    ap.add_argument("--rows", type=Path, default=None, help="reuse rows written by an earlier run (JSON)")
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.rows:
        rows = json.loads(args.rows.read_text())
    else:
        shipped = quality.cues
        quality.cues = lambda rgb, mask: {**shipped(rgb, mask), **extra_cues(rgb, mask)}
        try:
            rows = calibrate_quality.pool(args.data, None)
        finally:
            quality.cues = shipped
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_name(args.out.stem + "_rows.json").write_text(json.dumps(rows))
    iou = np.array([r["iou"] for r in rows])
    good, half = iou >= 0.8, np.array([r["photo"] % 2 for r in rows])
    bad = ~good
    real = np.array([r["mask"].startswith(("hyp:", "mediapipe", "grabcut")) for r in rows])
    chosen = np.array([r["mask"] == "grabcut" for r in rows])
    base = calibrate_quality.CUES
    models = {"shipped cues, linear (as calibrate_quality)": (base, "linear"),
              "+ new cues, linear": (base + EXTRA, "linear"),
              "+ new cues, pairwise products (C=0.01)": (base + EXTRA, "pairwise"),
              "+ new cues, gradient-boosted trees": (base + EXTRA, "gbm"),
              "+ new cues + area, gradient-boosted trees": (base + EXTRA + ("area",), "gbm")}
    result = {"when": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg(), "masks": len(rows),
              "real_masks": int(real.sum()), "bad_share_real": float(bad[real].mean()),
              "near_miss_share_of_bad": float(((iou >= 0.7) & bad)[real].sum() / (bad & real).sum()), "models": {}}
    print(f"{result['real_masks']} real masks, {result['bad_share_real']:.0%} bad; "
          f"{result['near_miss_share_of_bad']:.0%} of the bad ones are near misses (0.7 <= IoU < 0.8)")
    print("| model | AUC real | AUC grabcut's choice | AUC bad < 0.7 vs good | good lost at 90% bad rejected |")
    print("|---|---:|---:|---:|---:|")
    for name, (cues, kind) in models.items():
        held = heldout(rows, cues, kind, good, half)
        clear = real & ((iou < 0.7) | good)
        t = float(np.quantile(held[real & bad], 0.9))
        r = {"auc_real": roc_auc(held[real], bad[real]), "auc_grabcut": roc_auc(held[chosen], bad[chosen]),
             "auc_clear": roc_auc(held[clear], bad[clear]), "threshold_90": t,
             "good_lost_90": float((held[real & good] < t).mean())}
        result["models"][name] = r
        print(f"| {name} | {r['auc_real']:.3f} | {r['auc_grabcut']:.3f} | {r['auc_clear']:.3f} | "
              f"{r['good_lost_90']:.1%} |")
    result["seconds"] = time.time() - t0
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fit the mask-quality score (``spotdiff.generate.segment.quality``) on the ground-truth benchmark.

    .venv/bin/python bench/calibrate_quality.py [--data bench/data/segment] [--out bench/out/quality_fit.json]

For every photo of ``bench/segment_data.py``'s sets it scores these masks with ``quality.cues``:

* real segmentations: each ``grabcut`` hypothesis (``grabcut.hypotheses``, refined to the photo's size as
  the backend does), the ``grabcut`` backend's choice among them (made with the weights in ``quality.py`` when
  the script runs: fit, paste the weights, run again, until they settle) and ``mediapipe``'s map;
* planted failures of the ground truth, as the issue saw them: a background rectangle added beside the
  subject, the subject cut in half, a halo ring (the mask dilated by 3-7% of the side), a full frame;
* the ground truth itself.

Labels: IoU with the ground truth >= 0.8 ("good"). A logistic regression on the cues (scikit-learn) is
fitted on the photos of even index and tested on the odd ones, then the other way round: the ROC AUC of
the real segmentations of the held-out half is the number to quote. The weights written into
``quality.py`` are then fitted on every photo. Prints the weights, the held-out ROC curve and the rates at
candidate thresholds; writes them to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
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

from bench.bench_segment import IMAGE_SIZE, roc_auc  # noqa: E402
from spotdiff.common.images import load_photo  # noqa: E402
from spotdiff.generate.segment import grabcut, quality  # noqa: E402

CUES = ("border", "edge", "weak", "contrast", "separable", "largest", "solidity", "stable", "agree")
"""The cues the model weighs. ``quality.cues`` also measures ``area``, left out: it is a prior on subject size
(the benchmark's subjects fill 10-60% of the frame), not a sign of a good outline, and it rejected small
subjects such as the packaged rocket."""


def plant(gt: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A failure planted into the bool ground truth ``gt``: ``rect`` (a background block joined to the
    subject), ``cut`` (one half of the subject dropped), ``halo`` (a ring of background), ``full`` (the frame)."""
    h, w = gt.shape
    m = gt.copy()
    ys, xs = np.nonzero(gt)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    if kind == "rect":
        rw, rh = int(w * rng.uniform(0.15, 0.4)), int(h * rng.uniform(0.15, 0.4))
        side = int(rng.integers(4))
        if side == 0:
            x, y = max(0, x0 - rw + 4), int(rng.integers(0, h - rh))
        elif side == 1:
            x, y = min(w - rw, x1 - 4), int(rng.integers(0, h - rh))
        elif side == 2:
            x, y = int(rng.integers(0, w - rw)), max(0, y0 - rh + 4)
        else:
            x, y = int(rng.integers(0, w - rw)), min(h - rh, y1 - 4)
        m[y:y + rh, x:x + rw] = True
    elif kind == "cut":
        if rng.random() < 0.5:
            c = (x0 + x1) // 2
            m[:, c:] = False if rng.random() < 0.5 else m[:, c:]
            if m[:, c:].any():
                m[:, :c] = False
        else:
            m[(y0 + y1) // 2:] = False
    elif kind == "halo":
        k = max(3, int(max(h, w) * rng.uniform(0.03, 0.07))) | 1
        m = cv2.dilate(gt.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    elif kind == "full":
        m[:] = True
        b = int(min(h, w) * rng.uniform(0, 0.05))
        if b:
            m[:b], m[-b:], m[:, :b], m[:, -b:] = False, False, False, False
    return m


def pool(data: Path, limit: int | None) -> list[dict]:
    with (data / "index.csv").open() as f:
        items = list(csv.DictReader(f))
    if limit:
        items = items[::max(1, len(items) // limit)]
    rows = []
    mp = grabcut.quality.person_map
    for i, it in enumerate(items):
        path = data / it["set"] / f"{it['id']}.jpg"
        photo = load_photo(path, max_pixels=40_000_000, work_size=IMAGE_SIZE)
        gt = cv2.resize(cv2.imread(str(path.with_suffix(".png")), cv2.IMREAD_GRAYSCALE), photo.rgb.shape[1::-1],
                        interpolation=cv2.INTER_AREA) >= 128
        masks = {f"hyp:{name}": grabcut.refine(m, photo.rgb) for name, m in grabcut.hypotheses(photo)}
        masks["grabcut"] = grabcut.segment_grabcut(photo, it["class"]).mask
        person = mp(photo.rgb)
        if person is not None:
            masks["mediapipe"] = person
        rng = np.random.default_rng(i)
        for kind in ("rect", "cut", "halo", "full"):
            masks[f"plant:{kind}"] = plant(gt, kind, rng).astype(np.float32)
        masks["gt"] = gt.astype(np.float32)
        for name, mask in masks.items():
            pred = mask >= 0.5
            union = np.count_nonzero(pred | gt)
            rows.append({"photo": i, "set": it["set"], "id": it["id"], "mask": name,
                         "iou": 1.0 if union == 0 else np.count_nonzero(pred & gt) / union,
                         **quality.cues(photo.rgb, mask)})
        if i % 50 == 0:
            print(f"{i}/{len(items)} photos", flush=True)
    return rows


def rates(scores: np.ndarray, bad: np.ndarray, threshold: float) -> tuple[float, float]:
    """(share of bad masks rejected, share of good masks lost) by ``score < threshold``."""
    return float((scores[bad] < threshold).mean()), float((scores[~bad] < threshold).mean())


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegression

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "bench/data/segment")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/quality_fit.json")
    ap.add_argument("--limit", type=int, default=None, help="about this many photos, spread over the sets")
    ap.add_argument("--rows", type=Path, default=None, help="reuse rows written by an earlier run (JSON)")
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = json.loads(args.rows.read_text()) if args.rows else pool(args.data, args.limit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_name(args.out.stem + "_rows.json").write_text(json.dumps(rows))
    x = np.array([[r[k] for k in CUES] for r in rows])
    good = np.array([r["iou"] >= 0.8 for r in rows])
    half = np.array([r["photo"] % 2 for r in rows])
    real = np.array([r["mask"].startswith(("hyp:", "mediapipe", "grabcut")) for r in rows])
    held = np.zeros(len(rows))
    for h in (0, 1):
        model = LogisticRegression(C=1.0, max_iter=5000).fit(x[half != h], good[half != h])
        held[half == h] = model.predict_proba(x[half == h])[:, 1]
    model = LogisticRegression(C=1.0, max_iter=5000).fit(x, good)
    weights = {k: round(float(w), 4) for k, w in zip(CUES, model.coef_[0])}
    bias = round(float(model.intercept_[0]), 4)
    bad = ~good
    auc = roc_auc(held[real], bad[real])
    gross = real & ((np.array([r["iou"] for r in rows]) < 0.5) | good)
    auc_gross = roc_auc(held[gross], bad[gross])
    curve = []
    for t in np.round(np.arange(0.05, 1.0, 0.05), 2):
        rej, lost = rates(held[real], bad[real], float(t))
        curve.append({"threshold": float(t), "bad_rejected": rej, "good_lost": lost})
    planted = {}
    for kind in ("rect", "cut", "halo", "full"):
        g = held[np.array([r["mask"] == "gt" for r in rows])]
        p = held[np.array([r["mask"] == f"plant:{kind}" for r in rows])]
        planted[kind] = float((g > p).mean())
    per_mask = {name: roc_auc(held[sel], bad[sel]) for name in sorted({r["mask"] for r in rows})
                if (sel := np.array([r["mask"] == name for r in rows])).any()}
    result = {"when": time.strftime("%Y-%m-%d %H:%M"), "seconds": time.time() - t0, "photos": int(half.size and
              len({r["photo"] for r in rows})), "masks": len(rows), "real_masks": int(real.sum()),
              "bad_share_real": float(bad[real].mean()), "heldout_auc_real": auc, "heldout_auc_gross_vs_good": auc_gross,
              "heldout_auc_per_mask": per_mask, "gt_above_planted": planted, "curve": curve,
              "weights": weights, "bias": bias}
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=1))
    print("| threshold | bad rejected | good lost |\n|---:|---:|---:|")
    for c in curve:
        print(f"| {c['threshold']:.2f} | {c['bad_rejected']:.1%} | {c['good_lost']:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

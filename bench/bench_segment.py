"""Segmentation against ground-truth masks: mask IoU, boundary F-score, share of bad masks and time, per backend.

    .venv/bin/python bench/segment_data.py                 # once: prepares bench/data/segment (git-ignored)
    .venv/bin/python bench/bench_segment.py [--data bench/data/segment] [--sets weizmann,composite]
                                            [--backends grabcut-v1,auto,grabcut,mediapipe,alpha] [--limit N]
                                            [--sam-checkpoint PATH]

Every photo is loaded the way ``generate`` loads a folder photo (``load_photo`` with the default
``image_size`` of params.yaml) and segmented through ``spotdiff.generate.segment.segment`` (what
``generate`` calls), backends taking turns photo by photo, next to a baseline measured in the same
loop: decoding the JPEG and resizing it to GrabCut's working size (``decode+resize``). A backend's ms
include loading the photo (as ``generate`` does), not the quality score.

Per backend and set: mean IoU (mask >= 0.5 against the ground truth >= 128), mean boundary F-score
(boundary pixels matched within 0.75% of the image diagonal, as DAVIS does), the share of masks with
IoU < 0.8 ("bad"), the share rejected as empty (counted as IoU 0), ms per photo, and the mask-quality
score's ROC AUC for bad vs good (``spotdiff.generate.segment.quality``; its own ms, "+ quality ms", come on top of the backend's, as in
``segment.segment``), and the AUC of the backend's own score. ``grabcut-v1`` is the grabcut backend before
issue 15 (``bench/grabcut_v1.py``). ``alpha`` runs on the
composite set only, each photo handed over with its exact mask as transparency (the path a cut-out
PNG takes). ``sam`` runs when ``--sam-checkpoint`` names a segment-anything checkpoint.

Writes ``bench/out/segment.json`` (the table) and ``bench/out/segment_rows.csv`` (one row per photo and
backend: IoU, boundary F, score, quality and its cues), which ``bench/calibrate_quality.py`` reads.
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

from spotdiff.common.images import Photo, load_photo  # noqa: E402
from spotdiff.generate import segment  # noqa: E402
from spotdiff.generate.segment import grabcut  # noqa: E402
from spotdiff.generate.segment.quality import clear_cache  # noqa: E402

BAD_IOU = 0.8
IMAGE_SIZE = 256
"""params.yaml's ``generate.image_size``: ``load_photo`` keeps a short side of at most twice this."""


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.count_nonzero(pred | gt)
    return 1.0 if union == 0 else np.count_nonzero(pred & gt) / union


def _boundary(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)) > 0


def boundary_f(pred: np.ndarray, gt: np.ndarray) -> float:
    """F-score of boundary pixels matched within 0.75% of the image diagonal (DAVIS' measure)."""
    h, w = gt.shape
    r = max(1, round(0.0075 * float(np.hypot(h, w))))
    bp, bg = _boundary(pred), _boundary(gt)
    if not bp.any() and not bg.any():
        return 1.0
    if not bp.any() or not bg.any():
        return 0.0
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    near_g = cv2.dilate(bg.astype(np.uint8), disk) > 0
    near_p = cv2.dilate(bp.astype(np.uint8), disk) > 0
    precision = np.count_nonzero(bp & near_g) / np.count_nonzero(bp)
    recall = np.count_nonzero(bg & near_p) / np.count_nonzero(bg)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores below a random negative (ties count half):
    the AUC of "low score = positive (bad)". NaN when either class is empty."""
    pos, neg = scores[positive], scores[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    below = (pos[:, None] < neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(below / (len(pos) * len(neg)))


def load_items(data: Path, sets: list[str], limit: int | None) -> list[dict]:
    with (data / "index.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["set"] in sets]
    if limit:
        per = {s: [r for r in rows if r["set"] == s][:limit] for s in sets}
        rows = [r for s in sets for r in per[s]]
    return rows


def _decode_resize(path: Path) -> np.ndarray:
    """Baseline: what any segmenter must pay at least: decode the photo, shrink it to GrabCut's side."""
    photo = load_photo(path, max_pixels=40_000_000, work_size=IMAGE_SIZE)
    h, w = photo.rgb.shape[:2]
    f = min(1.0, grabcut.WORK_SIDE / max(h, w))
    return cv2.resize(photo.rgb, (max(16, round(w * f)), max(16, round(h * f))), interpolation=cv2.INTER_AREA)


def run(data: Path, items: list[dict], backends: list[str], quality_fn=None) -> tuple[list[dict], dict[str, float]]:
    """One row per (photo, backend); and the baseline's ms per photo."""
    rows: list[dict] = []
    base_ms: list[float] = []
    for it in items:
        path = data / it["set"] / f"{it['id']}.jpg"
        gt_full = cv2.imread(str(path.with_suffix(".png")), cv2.IMREAD_GRAYSCALE)
        t0 = time.perf_counter()
        _decode_resize(path)
        base_ms.append((time.perf_counter() - t0) * 1000)
        for name in backends:
            if name == "alpha" and it["set"] != "composite":
                continue
            clear_cache()  # each backend pays for the quality score's references itself
            t0 = time.perf_counter()
            photo = load_photo(path, max_pixels=40_000_000, work_size=IMAGE_SIZE)
            gt = cv2.resize(gt_full, photo.rgb.shape[1::-1], interpolation=cv2.INTER_AREA) >= 128
            if name == "alpha":
                photo = Photo(photo.rgb, cv2.resize(gt_full, photo.rgb.shape[1::-1], interpolation=cv2.INTER_AREA),
                              photo.source_size)
            seg = segment.get(segment.choose(name, photo, it["class"]))(photo, it["class"])
            ms = (time.perf_counter() - t0) * 1000
            empty = float(seg.mask.max(initial=0.0)) < 0.5  # segment.segment rejects these (segmentation_empty)
            mask = np.zeros(gt.shape, np.float32) if empty else seg.mask
            row = {"set": it["set"], "id": it["id"], "backend": name, "used": seg.backend, "iou": iou(mask >= 0.5, gt),
                   "bf": boundary_f(mask >= 0.5, gt), "backend_score": seg.score, "empty": empty, "ms": ms}
            if quality_fn is not None:
                t1 = time.perf_counter()
                q = quality_fn(photo, mask)
                row.update({"quality": q.score, "ms_quality": (time.perf_counter() - t1) * 1000,
                            **{f"cue_{k}": v for k, v in q.cues.items()}})
            rows.append(row)
    return rows, {"decode+resize": float(np.mean(base_ms))}


def summarise(rows: list[dict], base: dict[str, float]) -> list[dict]:
    out = []
    keys = sorted({(r["backend"], r["set"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for backend, set_ in keys + sorted({(r["backend"], "all") for r in rows}):
        sel = [r for r in rows if r["backend"] == backend and (set_ == "all" or r["set"] == set_)]
        ious = np.array([r["iou"] for r in sel])
        bad = ious < BAD_IOU
        entry = {"backend": backend, "set": set_, "n": len(sel), "mean_iou": float(ious.mean()),
                 "mean_bf": float(np.mean([r["bf"] for r in sel])), "bad_share": float(bad.mean()),
                 "empty_share": float(np.mean([r["empty"] for r in sel])),
                 "ms": float(np.mean([r["ms"] for r in sel])),
                 "backend_score_auc": roc_auc(np.array([r["backend_score"] for r in sel]), bad)}
        if "quality" in sel[0]:
            entry["quality_auc"] = roc_auc(np.array([r["quality"] for r in sel]), bad)
            entry["ms_quality"] = float(np.mean([r["ms_quality"] for r in sel]))
        entry["ms_vs_baseline"] = entry["ms"] / base["decode+resize"]
        out.append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "bench/data/segment")
    ap.add_argument("--sets", default="weizmann,composite")
    ap.add_argument("--backends", default="grabcut-v1,auto,grabcut,mediapipe,alpha",
                    help="grabcut-v1 is the grabcut backend before issue 15 (bench/grabcut_v1.py)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many photos per set")
    ap.add_argument("--sam-checkpoint", default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/segment.json")
    ap.add_argument("--no-quality", action="store_true", help="skip the mask-quality score")
    args = ap.parse_args(argv)
    if not (args.data / "index.csv").exists():
        print(f"{args.data}/index.csv not found: run bench/segment_data.py first")
        return 2
    backends = args.backends.split(",")
    if "grabcut-v1" in backends:
        from bench.grabcut_v1 import segment_grabcut_v1

        segment.register("grabcut-v1", lambda: segment_grabcut_v1)
    if args.sam_checkpoint:
        from spotdiff.config import SamConfig
        from spotdiff.generate.segment.sam import SamSegmenter

        segment._instances["sam"] = SamSegmenter(SamConfig(checkpoint=args.sam_checkpoint))
        backends.append("sam")
    quality_fn = None
    if not args.no_quality:
        try:
            from spotdiff.generate.segment.quality import mask_quality as quality_fn
        except ImportError:
            quality_fn = None
    items = load_items(args.data, args.sets.split(","), args.limit)
    load0 = os.getloadavg()[0]
    t0 = time.time()
    rows, base = run(args.data, items, backends, quality_fn)
    table = summarise(rows, base)
    load1 = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"when": time.strftime("%Y-%m-%d %H:%M"), "load_start": load0, "load_end": load1,
              "seconds": time.time() - t0, "baseline_ms": base, "table": table}
    args.out.write_text(json.dumps(result, indent=1))
    with args.out.with_name(args.out.stem + "_rows.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k)
                                                if k in rows[0] else 99))
        w.writeheader()
        w.writerows(rows)
    print(f"load average {load0:.2f} -> {load1:.2f}; decode+resize baseline {base['decode+resize']:.1f} ms/photo")
    print("| backend | set | n | mean IoU | boundary F | IoU < 0.8 | empty | ms/photo | x baseline | + quality ms "
          "| backend score AUC | quality AUC |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for e in table:
        print(f"| {e['backend']} | {e['set']} | {e['n']} | {e['mean_iou']:.3f} | {e['mean_bf']:.3f} | "
              f"{e['bad_share']:.1%} | {e['empty_share']:.1%} | {e['ms']:.1f} | {e['ms_vs_baseline']:.1f} | "
              f"{e.get('ms_quality', float('nan')):.1f} | {e['backend_score_auc']:.3f} | {e.get('quality_auc', float('nan')):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

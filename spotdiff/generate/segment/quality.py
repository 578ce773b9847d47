"""Mask quality without ground truth: does this mask outline the photo's subject?

``mask_quality(photo, mask)`` measures cues that need only the photo and the mask, so the score is the same
function whatever backend made the mask:

* ``edge``: how strong the photo's edges are under the mask's outline (inside the frame), relative to the
  photo's strong edges. An outline through the middle of a subject (a cut) or across a plain
  background (a rectangle of background, a halo) runs where the photo has no edge.
* ``weak``: share of the outline with almost no edge under it.
* ``contrast``: colour difference between the two sides of the outline, each side averaged over a few
  pixels: a halo or a cut has the same colours on both sides.
* ``separable``: how well one colour histogram inside and one outside tell the photo's pixels apart
  (balanced accuracy, 0.5 = not at all): background kept in the mask, or subject left out of it, has
  the other side's colours.
* ``border``: share of the image border that the mask covers (a full-frame rectangle covers all of it).
* ``solidity``: mask area / area of its convex hull; ``largest``: share of the mask in its largest
  component; ``area``: mask area / image area.
* ``stable``: IoU of the mask with the photo re-segmented from it by its own colour models
  (``colour.colour_refine``, one pass): a mask that outlines the subject is nearly a fixed point.
* ``agree``: largest IoU of the mask with two reference segmentations made the same way for every mask
  (``references``: colour models seeded by the border-saliency prior, and by MediaPipe's person map where
  mediapipe is installed), at 64 px.

``score`` combines them by a logistic model fitted on ``bench/bench_segment.py``'s ground-truth benchmark
(``bench/calibrate_quality.py``, curve and rates in docs/benchmarks.md): the estimated probability that
the mask's IoU with the true subject is at least 0.8. ``registry.segment`` puts it in
``Segmentation.score`` for every backend, so it is what ``generate.min_segment_score`` compares, what the
group's record holds as ``segment.score`` and what QA's ``mask_quality`` check reads.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from spotdiff.common.images import Photo
from spotdiff.generate.segment.colour import border_saliency, colour_refine, shrink
from spotdiff.generate.segment.registry import get, set_scorer

SIDE = 128
"""Long side the outline and colour cues are measured at, pixels."""
REF_SIDE = 64
"""Long side of the reference segmentations and of ``stable`` and ``agree``."""
MASK_ON = 0.5


@dataclass(frozen=True)
class Quality:
    score: float
    """Estimated probability that the mask's IoU with the subject is >= 0.8, in [0, 1]."""
    cues: dict[str, float]


def _outline(m: np.ndarray) -> np.ndarray:
    """Pixels on either side of the mask's boundary, except on the image border."""
    u = m.astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    line = cv2.dilate(u, k) != cv2.erode(u, k)
    line[0, :], line[-1, :], line[:, 0], line[:, -1] = False, False, False, False
    return line


def _fit(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bool mask at ``shape`` (h, w) from a float mask of any size (area-averaged, >= 0.5)."""
    if mask.shape == shape:
        return mask >= MASK_ON
    return cv2.resize(mask.astype(np.float32), shape[::-1], interpolation=cv2.INTER_AREA) >= MASK_ON


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def outline_cues(rgb: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """``area``, ``border``, ``edge``, ``weak``, ``contrast``, ``separable``, ``largest``, ``solidity`` of
    ``mask`` (float, any size; subject >= 0.5) on ``rgb`` (uint8), measured at ``SIDE`` px."""
    img = shrink(rgb, SIDE)
    h, w = img.shape[:2]
    m = _fit(mask, (h, w))
    area = float(m.mean())
    out = {"area": area, "border": float(np.concatenate([m[0], m[-1], m[1:-1, 0], m[1:-1, -1]]).mean())}
    if not m.any() or m.all():
        return {**out, "edge": 0.0, "weak": 1.0, "contrast": 0.0, "separable": 0.5, "largest": 0.0, "solidity": 0.0}
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)
    blur = cv2.GaussianBlur(lab, (0, 0), 0.8)
    gx = cv2.Sobel(blur, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(blur, cv2.CV_32F, 0, 1, ksize=3)
    grad = np.sqrt((gx * gx + gy * gy).sum(axis=2))
    strong = float(np.percentile(grad, 90)) + 1e-3
    line = _outline(m)
    if line.any():
        g = np.minimum(cv2.dilate(grad, np.ones((3, 3), np.uint8))[line] / strong, 1.0)
        out["edge"], out["weak"] = float(g.mean()), float((g < 0.25).mean())
        mf = m.astype(np.float32)
        r = max(2.0, max(h, w) / 40)
        win = cv2.GaussianBlur(mf, (0, 0), r)
        inside = cv2.GaussianBlur(lab * mf[..., None], (0, 0), r) / np.maximum(win, 1e-3)[..., None]
        outside = cv2.GaussianBlur(lab * (1 - mf)[..., None], (0, 0), r) / np.maximum(1 - win, 1e-3)[..., None]
        diff = np.sqrt(((inside - outside) ** 2).sum(axis=2))[line]
        out["contrast"] = float(np.minimum(diff / 40.0, 1.0).mean())
    else:  # the outline lies on the image border only
        out.update(edge=0.0, weak=1.0, contrast=0.0)
    q = (lab * np.float32(8 / 256)).astype(np.int32).clip(0, 7)
    idx = ((q[..., 0] * 8 + q[..., 1]) * 8 + q[..., 2]).ravel()
    fg = np.bincount(idx[m.ravel()], minlength=512).astype(np.float64)
    bg = np.bincount(idx[~m.ravel()], minlength=512).astype(np.float64)
    pf, pb = fg / fg.sum(), bg / bg.sum()
    out["separable"] = float(0.5 * (pf[pf > pb].sum() + pb[pb >= pf].sum()))
    u = m.astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(u, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    out["largest"] = float(areas.max() / areas.sum())
    hull = cv2.convexHull(cv2.findNonZero(u))
    out["solidity"] = float(min(1.0, u.sum() / max(1.0, cv2.contourArea(hull) + 0.5 * cv2.arcLength(hull, True))))
    return out


_LOCAL = threading.local()
"""Per thread: what ``person_map`` and ``references`` computed for the last photo (keyed by its content), so a
backend's hypotheses and the final score of the same photo share them."""


def clear_cache() -> None:
    """Forget this thread's last photo (benchmarks: each backend then pays for the references itself)."""
    _LOCAL.memo = {}


def _cached(rgb: np.ndarray) -> dict[str, object]:
    key = hashlib.blake2b(np.ascontiguousarray(rgb).data, digest_size=16).digest() + bytes(str(rgb.shape), "ascii")
    memo = getattr(_LOCAL, "memo", None)
    if memo is None or key not in memo:
        memo = _LOCAL.memo = {key: {}}
    return memo[key]


def person_map(rgb: np.ndarray) -> np.ndarray | None:
    """MediaPipe's person map of ``rgb`` (float32, same size), or None where mediapipe is not installed."""
    memo = _cached(rgb)
    if "person" not in memo:
        try:
            model = get("mediapipe")
        except ImportError:
            memo["person"] = None
        else:
            memo["person"] = model(Photo(rgb, None, (rgb.shape[1], rgb.shape[0])), "").mask
    return memo["person"]


def references(rgb: np.ndarray) -> list[np.ndarray]:
    """Reference segmentations of ``rgb`` at ``REF_SIDE`` px (bool): colour models seeded by the border
    saliency, and by MediaPipe's person map where mediapipe is installed."""
    memo = _cached(rgb)
    if "refs" not in memo:
        small = shrink(rgb, REF_SIDE)
        refs = [colour_refine(small, border_saliency(small))]
        person = person_map(rgb)
        if person is not None:
            refs.append(colour_refine(small, cv2.resize(person, small.shape[1::-1], interpolation=cv2.INTER_AREA)))
        memo["refs"] = refs
    return memo["refs"]


def cues(rgb: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Every cue of ``mask`` (float (H, W), subject >= 0.5) on ``rgb`` (uint8 (H, W, 3)); see the module."""
    out = outline_cues(rgb, mask)
    small = shrink(rgb, REF_SIDE)
    m = _fit(mask, small.shape[:2])
    if not m.any() or m.all():
        return {**out, "stable": 0.0, "agree": 0.0}
    out["stable"] = iou(m, colour_refine(small, m.astype(np.float32), iterations=1))
    out["agree"] = max(iou(m, r) for r in references(rgb))
    return out


# Logistic model of P(IoU >= 0.8), fitted by bench/calibrate_quality.py on the benchmark (docs/benchmarks.md).
WEIGHTS: dict[str, float] = {
    "border": -1.571,
    "edge": 4.674,
    "weak": -3.446,
    "contrast": -2.37,
    "separable": 2.8036,
    "largest": 2.9624,
    "solidity": -4.5682,
    "stable": 3.4044,
    "agree": 3.8851,
}
BIAS = -10.512


def score_of(c: dict[str, float]) -> float:
    """The calibrated score of a cue dict."""
    z = BIAS + sum(w * c[k] for k, w in WEIGHTS.items())
    return float(1.0 / (1.0 + np.exp(-z)))


def mask_quality(photo, mask: np.ndarray) -> Quality:
    """Quality of ``mask`` (float (H, W), subject >= 0.5) on ``photo`` (a ``Photo`` or its uint8 rgb)."""
    rgb = getattr(photo, "rgb", photo)
    c = cues(rgb, mask)
    return Quality(score_of(c), c)


set_scorer(lambda photo, mask: mask_quality(photo, mask).score)

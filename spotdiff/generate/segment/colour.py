"""Colour-model building blocks shared by the ``grabcut`` backend and the mask-quality score.

* ``shrink``: a photo shrunk to a working side (INTER_AREA).
* ``border_saliency``: how unlike the image border each pixel's colour is, in [0, 1]: a pixel whose colour
  is common on the border (where the background is) scores 0, one whose colour never occurs there 1.
* ``colour_refine``: re-segment an image from a rough prior mask with colour models learned from that
  mask: a global colour histogram of each side, a local one (each side's mean colour within a few pixels,
  which keeps a brown horse apart from the brown field beyond it), the prior blurred as a spatial term, all
  summed as log-odds and smoothed along the image's own edges by a guided filter (cost-volume filtering, a
  cheap stand-in for a graph cut). Iterated: each pass learns its models from the previous mask.

Everything is exact float32 arithmetic, box filters and Gaussian blurs, pinned like the rest of OpenCV by
``spotdiff.common.determinism``.
"""

from __future__ import annotations

import cv2
import numpy as np

BINS = 16
"""Colour histogram bins per RGB channel."""


def shrink(rgb: np.ndarray, side: int) -> np.ndarray:
    """``rgb`` with its long side at most ``side`` pixels (at least 16 px a side), INTER_AREA."""
    h, w = rgb.shape[:2]
    f = min(1.0, side / max(h, w))
    if f == 1.0:
        return rgb
    return cv2.resize(rgb, (max(16, round(w * f)), max(16, round(h * f))), interpolation=cv2.INTER_AREA)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter of float32 ``src`` by the grey float32 ``guide`` (window 2 * radius + 1,
    reflected borders), from box filters and exact element-wise float operations.

    Not ``cv2.ximgproc.guidedFilter``: its output depends on the CPU it runs on (an emulated AMD EPYC and
    an Intel Xeon differed in the last bits on every photo, with OpenCV's dispatch pinned; its box filters
    and OpenCV's arithmetic alone did not), and a last bit is enough to move a mask pixel (issue 14)."""
    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_32F, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(src)
    var_i = box(guide * guide) - mean_i * mean_i
    cov_ip = box(guide * src) - mean_i * mean_p
    a = cov_ip / (var_i + np.float32(eps))
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def border_band(h: int, w: int, share: float = 0.04) -> np.ndarray:
    """Bool (h, w): the outer ``share`` of the shorter side on every side (at least 1 px)."""
    k = max(1, round(min(h, w) * share))
    band = np.zeros((h, w), bool)
    band[:k], band[-k:], band[:, :k], band[:, -k:] = True, True, True, True
    return band


def _colour_index(rgb: np.ndarray) -> np.ndarray:
    q = (rgb.astype(np.int32) * BINS) >> 8
    return (q[..., 0] * BINS + q[..., 1]) * BINS + q[..., 2]


def _blur_hist(hist: np.ndarray) -> np.ndarray:
    """A (BINS, BINS, BINS) histogram blurred by a separable [1, 2, 1] / 4 kernel along each axis."""
    out = hist
    for axis in range(3):
        pad = np.pad(out, [(1, 1) if a == axis else (0, 0) for a in range(3)])
        parts = [np.take(pad, np.arange(start, start + BINS), axis=axis) for start in range(3)]
        out = (parts[0] + 2 * parts[1] + parts[2]) * np.float32(0.25)
    return out


def border_saliency(rgb: np.ndarray) -> np.ndarray:
    """float32 (H, W) in [0, 1]: 1 - (share of a pixel's colour on the border / its share in the image),
    clipped, lightly blurred. Background colours (common on the border) -> 0, subject colours -> 1."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    q = (lab >> 5).astype(np.int32)  # 8 bins per channel
    idx = (q[..., 0] * 8 + q[..., 1]) * 8 + q[..., 2]
    h, w = idx.shape
    band = border_band(h, w)
    on_border = np.bincount(idx[band], minlength=512).astype(np.float32) / np.float32(band.sum())
    overall = np.bincount(idx.ravel(), minlength=512).astype(np.float32) / np.float32(idx.size)
    ratio = on_border / np.maximum(overall, np.float32(1e-9))
    sal = np.float32(1.0) - np.clip(ratio[idx], 0.0, 1.0)
    return cv2.GaussianBlur(sal.astype(np.float32), (0, 0), 1.0)


def _local_logodds(lab: np.ndarray, m: np.ndarray, sigma: float) -> np.ndarray:
    """Log-odds of subject from each side's local mean colour (nearest local mean, pooled local variance)."""
    mf = m.astype(np.float32)
    wf = cv2.GaussianBlur(mf, (0, 0), sigma)
    wb = np.float32(1.0) - wf
    mu_f = cv2.GaussianBlur(lab * mf[..., None], (0, 0), sigma) / np.maximum(wf, np.float32(1e-3))[..., None]
    mu_b = cv2.GaussianBlur(lab * (1 - mf)[..., None], (0, 0), sigma) / np.maximum(wb, np.float32(1e-3))[..., None]
    df = ((lab - mu_f) ** 2).sum(axis=2)
    db = ((lab - mu_b) ** 2).sum(axis=2)
    var = cv2.GaussianBlur(np.where(m, df, db).astype(np.float32), (0, 0), sigma) + np.float32(25.0)
    lr = (db - df) / (2 * var)
    has_f, has_b = wf > 0.02, wb > 0.02
    lr = np.where(has_f & has_b, lr, np.where(has_f, np.float32(3.0), np.float32(-3.0)))
    return np.clip(lr, -6.0, 6.0).astype(np.float32)


def colour_refine(rgb: np.ndarray, prior: np.ndarray, iterations: int = 2, local: float = 0.05,
                  spatial: float = 0.08) -> np.ndarray:
    """Bool mask of ``rgb`` (uint8, small) re-segmented from float ``prior`` (same size, subject >= 0.5).

    ``local``: radius (sigma) of the local colour models, ``spatial``: blur of the previous mask used as the
    spatial term, both as fractions of the long side."""
    h, w = prior.shape
    side = max(h, w)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    grey = lab[..., 0] / np.float32(255.0)
    idx = _colour_index(rgb)
    m = prior >= 0.5
    k = max(1, round(min(h, w) * 0.03))
    kernel = np.ones((k, k), np.uint8)
    for _ in range(iterations):
        if not m.any() or m.all():
            break
        fg = cv2.erode(m.astype(np.uint8), kernel) > 0
        bg = cv2.erode((~m).astype(np.uint8), kernel) > 0
        fg = fg if fg.sum() >= 20 else m
        bg = bg if bg.sum() >= 20 else ~m
        hf = _blur_hist(np.bincount(idx[fg], minlength=BINS ** 3).reshape(BINS, BINS, BINS).astype(np.float32))
        hb = _blur_hist(np.bincount(idx[bg], minlength=BINS ** 3).reshape(BINS, BINS, BINS).astype(np.float32))
        hf = hf / max(float(hf.sum()), 1.0) + np.float32(1e-5)
        hb = hb / max(float(hb.sum()), 1.0) + np.float32(1e-5)
        z = np.log(hf / hb).ravel()[idx] + _local_logodds(lab, m, local * side)
        sp = np.clip(cv2.GaussianBlur(m.astype(np.float32), (0, 0), spatial * side), 0.02, 0.98)
        z = z + np.log(sp / (1 - sp))
        p = (1.0 / (1.0 + np.exp(-np.clip(z, -20.0, 20.0)))).astype(np.float32)
        m = guided_filter(grey, p, 2, 1e-3) >= 0.5
    return m

"""Measurements QA checks are made of: pure functions on decoded arrays, no thresholds.

Images are OpenCV's BGR uint8 (H, W, 3), masks uint8 (H, W) with 255 = subject. Image
quality, background change, perceptual hashes and identity crops use a copy shrunk to
``analysis_side`` pixels (``shrink``), so one threshold means the same at 128 px and at
512 px; mask geometry and subject alignment use full resolution, their results being
fractions of the image or of the subject's box already.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from spotdiff.common.images import decode_heard

MASK_ON = 128
"""A pixel belongs to the subject when its soft mask is at least this (uint8 scale)."""

ALIGN_SIDE = 48
"""Side, pixels, of the square canvas subjects are aligned on before they are compared."""

SHARP_EDGE_RATIO = 0.3
"""Laplacian-to-gradient ratio of a crisp, one-pixel anti-aliased edge; maps sharpness to 1."""


class DecodeError(ValueError):
    """A member is missing or does not decode to what a group needs."""


def _is_decoder_warning(line: bytes) -> bool:
    return line.startswith(DECODER_WARNINGS)


DECODER_WARNINGS = (b"Corrupt JPEG data", b"Premature end of JPEG", b"Warning: unknown JFIF", b"Invalid SOS",
                    b"libpng warning", b"libpng error")
"""What libjpeg and libpng print, and OpenCV passes to stderr, when they decode damaged data anyway: a
flipped bit in a JPEG's entropy-coded data gave "Corrupt JPEG data: 43 extraneous bytes before marker
0xd9" and an image with 6910 of 65536 pixels wrong, which QA used to accept. Such a member is a decode
failure. (Most flipped bits make no warning at all: the recorded member checksums catch those.)"""


def _strict_imdecode(data: bytes, flags: int) -> np.ndarray:
    """``cv2.imdecode`` that fails on a decoder warning instead of returning what it made of the damage."""
    img, fault = decode_heard(data, flags, _is_decoder_warning)
    if fault:
        raise DecodeError(f"decoder warning: {fault}")
    if img is None:
        raise DecodeError("does not decode as an image")
    return img


def decode_image(data: bytes | None) -> np.ndarray:
    """JPEG (or any OpenCV format) bytes -> BGR uint8; raises DecodeError, also on a decoder warning."""
    if not data:
        raise DecodeError("missing or empty")
    # Some decoders fill a truncated JPEG with grey instead of failing: look for its end marker.
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-16:]:
        raise DecodeError("truncated JPEG (no end-of-image marker)")
    return _strict_imdecode(data, cv2.IMREAD_COLOR)


def decode_mask(data: bytes | None) -> np.ndarray:
    """PNG bytes -> uint8 (H, W); raises DecodeError, also on a decoder warning (a bad CRC)."""
    if not data:
        raise DecodeError("missing or empty")
    return _strict_imdecode(data, cv2.IMREAD_GRAYSCALE)


def shrink(img: np.ndarray, side: int) -> np.ndarray:
    """``img`` with its longer side reduced to ``side`` pixels (area averaging); never enlarged."""
    h, w = img.shape[:2]
    if max(h, w) <= side:
        return img
    s = side / max(h, w)
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def digest(data: bytes) -> bytes:
    """Digest of a member's bytes: equal digests mean identical files. (SHA-1: not for
    security; the fastest hashlib digest here. Hashing the ~15 KB file, not the decoded
    pixels, is 10x cheaper; pixels re-encoded differently are near duplicates at distance 0.)"""
    return hashlib.sha1(data).digest()


def binary(mask: np.ndarray) -> np.ndarray:
    """uint8 0/1 of ``mask >= MASK_ON``."""
    return cv2.threshold(mask, MASK_ON - 1, 1, cv2.THRESH_BINARY)[1]


# --- mask -----------------------------------------------------------------------------------

def mask_stats(mask: np.ndarray) -> dict[str, float]:
    """Shape of the subject mask.

    * ``area``: subject pixels / image pixels, [0, 1].
    * ``bbox_side``: shorter side of the subject's bounding box / longer image side, [0, 1].
    * ``border_cut``: subject pixels on the outermost image rows and columns / perimeter of
      the subject's bounding box, [0, 1]; 0 when the subject lies inside the frame, about
      0.25 when one whole side of its box is cut by the image edge.
    """
    on = binary(mask)
    h, w = on.shape
    count = cv2.countNonZero(on)
    if count == 0:
        return {"area": 0.0, "bbox_side": 0.0, "border_cut": 0.0}
    x, y, bw, bh = cv2.boundingRect(on)
    edge = int(on[0].sum() + on[-1].sum() + on[1:-1, 0].sum() + on[1:-1, -1].sum())
    return {"area": count / (h * w), "bbox_side": min(bw, bh) / max(h, w), "border_cut": edge / (2 * (bw + bh))}


def largest_component_share(mask: np.ndarray) -> float:
    """Share of subject pixels in the largest 8-connected component, [0, 1]; 0 for an empty mask."""
    on = binary(mask)
    count = cv2.countNonZero(on)
    if count == 0:
        return 0.0
    _, _, stats, _ = cv2.connectedComponentsWithStats(on, connectivity=8)
    return float(stats[1:, cv2.CC_STAT_AREA].max() / count)


# --- image quality --------------------------------------------------------------------------

def quality_scores(grey: np.ndarray) -> dict[str, float]:
    """Cleanvision-style scores in [0, 1] of a (shrunk) grey image; low = the issue is present.

    * ``sharpness``: 99.5th percentile of |Laplacian| over that of the Sobel gradient
      magnitude, divided by ``SHARP_EDGE_RATIO``, clipped to 1. The ratio falls as edges
      widen (it is about 1/edge width) and does not depend on contrast, so a smooth
      background does not read as blur as long as the subject's outline is crisp.
    * ``dark``: 95th percentile of brightness / 255 (a black frame scores 0).
    * ``light``: 1 - 5th percentile of brightness / 255 (a white frame scores 0).
    * ``information``: entropy of the 64-bin brightness histogram / 6 bits (a flat frame
      scores 0).
    """
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    grad = _upper_quantile(cv2.magnitude(gx, gy).astype(np.int32), 0.995)
    lap = _upper_quantile(np.abs(cv2.Laplacian(grey, cv2.CV_16S, ksize=1)), 0.995)
    # A frame with no edges at all (flat) has no sharpness to speak of: score 0.
    sharp = min(1.0, lap / grad / SHARP_EDGE_RATIO) if grad > 1.0 else 0.0
    hist = cv2.calcHist([grey], [0], None, [64], [0, 256]).ravel()
    cdf = np.cumsum(hist) / hist.sum()
    p5, p95 = np.searchsorted(cdf, 0.05) * 4 + 2, np.searchsorted(cdf, 0.95) * 4 + 2
    p = hist[hist > 0] / hist.sum()
    entropy = float(-(p * np.log2(p)).sum())
    return {"sharpness": float(sharp), "dark": min(1.0, p95 / 255), "light": max(0.0, 1 - p5 / 255),
            "information": min(1.0, entropy / 6.0)}


def _upper_quantile(values: np.ndarray, q: float) -> float:
    """The ``q`` quantile (nearest rank) of non-negative integers, from their counts: 4x
    faster than np.percentile on a 128 px image, exact for integers."""
    flat = values.ravel()
    k = min(flat.size - 1, int(q * flat.size))
    return float(np.searchsorted(np.cumsum(np.bincount(flat)), k, side="right"))


HASH_BITS = 256
"""Bits of the perceptual hash. 64 bits (the classic pHash) are too coarse for generated
views: unrelated views with smooth backgrounds came within 6 bits of each other among 900."""


def phash_bits(grey: np.ndarray) -> np.ndarray:
    """256-bit perceptual hash as uint8 0/1: the 16x16 lowest DCT frequencies of a 64x64
    thumbnail, each compared with their median (the DC term left out of the median)."""
    small = cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:16, :16].ravel()
    median = np.partition(low[1:], 127)[127]  # the 128th of 255: np.median is 10x slower here
    return (low > median).astype(np.uint8)


# --- pairs of views -------------------------------------------------------------------------

def subject_box(mask: np.ndarray) -> tuple[float, float, float] | None:
    """(centre x, centre y, side) of the square around the subject's bounding box; None if empty."""
    x, y, w, h = cv2.boundingRect(binary(mask))
    if w == 0:
        return None
    return x + w / 2, y + h / 2, float(max(w, h))


def align(img: np.ndarray, box: tuple[float, float, float], side: int = ALIGN_SIDE,
          interp: int = cv2.INTER_AREA) -> np.ndarray:
    """The square ``box`` of ``img`` resampled to ``side`` x ``side`` (zeros outside the image).

    Putting two views' subjects on the same canvas cancels placement and scale, so what
    remains of their difference is pose (mask) and appearance (pixels).
    """
    cx, cy, s = box
    k = side / s
    m = np.float32([[k, 0, side / 2 - k * cx], [0, k, side / 2 - k * cy]])
    return cv2.warpAffine(img, m, (side, side), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def aligned_iou(mask_a: np.ndarray, box_a, mask_b: np.ndarray, box_b) -> float:
    """IoU of two subject masks after ``align``: 1 = same silhouette, whatever the placement."""
    a = align(mask_a, box_a, interp=cv2.INTER_LINEAR) >= MASK_ON
    b = align(mask_b, box_b, interp=cv2.INTER_LINEAR) >= MASK_ON
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def appearance_change(img_a: np.ndarray, mask_a: np.ndarray, box_a,
                      img_b: np.ndarray, mask_b: np.ndarray, box_b) -> float:
    """Mean |difference| / 255 of the aligned subjects' grey levels where both are solid, [0, 1].

    A re-posed subject shows other faces and other shading at the same spot on the aligned
    canvas; a copied or barely moved one shows the same pixels. A 1-pixel blur first, so a
    pixel or two of misalignment does not read as change.
    """
    ga = align(cv2.cvtColor(img_a, cv2.COLOR_BGR2GRAY), box_a).astype(np.float32)
    gb = align(cv2.cvtColor(img_b, cv2.COLOR_BGR2GRAY), box_b).astype(np.float32)
    ga, gb = cv2.GaussianBlur(ga, (0, 0), 1.0), cv2.GaussianBlur(gb, (0, 0), 1.0)
    both = (align(mask_a, box_a) >= 250) & (align(mask_b, box_b) >= 250)
    if np.count_nonzero(both) < 16:
        return 1.0  # almost no common subject area: the silhouettes differ completely
    return float(np.abs(ga - gb)[both].mean() / 255)


def pose_change(iou: float, appearance: float) -> float:
    """Pose change score in [0, 1]: max(1 - aligned mask IoU, 2 x appearance change).

    Either is enough: a turned subject changes its outline, a symmetric one (a bottle
    turning about its axis) keeps the outline but shows other faces and shading. The factor
    2 puts both on one scale (clean minima ~0.11 either way on generated data).
    """
    return float(min(1.0, max(1.0 - iou, 2.0 * appearance)))


def background_change(img_a: np.ndarray, mask_a: np.ndarray, img_b: np.ndarray, mask_b: np.ndarray,
                      margin: int = 2, min_share: float = 0.02) -> float:
    """Mean |RGB difference| / 255 of two same-size (shrunk) views where neither shows the subject.

    The subjects' union is grown by ``margin`` pixels so JPEG ringing and soft edges around
    them do not count. NaN when less than ``min_share`` of the image is left to compare.
    """
    if img_a.shape != img_b.shape:
        return float("nan")
    union = np.maximum(mask_a, mask_b) > 0
    if margin:
        union = cv2.dilate(union.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8)) > 0
    free = (~union).astype(np.uint8)
    if cv2.countNonZero(free) < min_share * free.size:
        return float("nan")
    per_channel = cv2.mean(cv2.absdiff(img_a, img_b), mask=free)[:img_a.shape[2] if img_a.ndim == 3 else 1]
    return float(np.mean(per_channel) / 255)

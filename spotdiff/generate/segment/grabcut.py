"""``grabcut`` segmentation of objects: several hypotheses, the one the mask-quality score rates best.

Issue 15 measured the old single GrabCut (a box seed 4% inside the frame, 128 px, 2 iterations) on a
benchmark of real photos with hand-made masks: 74% of its masks had IoU < 0.8 (background rectangles
kept, legs and handles cut), and its score (share in the largest blob) did not tell them apart. Now each
photo gets these hypotheses, each a largest component with its holes filled:

* ``person map``: MediaPipe's selfie-segmentation map (it outlines many animals and objects too);
* ``saliency GrabCut``: OpenCV GrabCut at ``GC_SIDE`` px seeded by the border-saliency prior
  (``colour.border_saliency``: colours common on the border are background) instead of a box;
* ``colour models``: ``colour.colour_refine`` at ``WORK_SIDE`` px seeded by the mean of the two priors
  (local and global colour models, smoothed along the photo's edges);
* ``box``: GrabCut seeded by the photo's subject box, when it has one (packaged photos);
* ``centred box``: GrabCut seeded by a box 4% inside the frame, then by a centred ellipse (the old backend),
  only when every other hypothesis is empty or a speck (a flat or noisy picture).

``quality.mask_quality`` scores each; the best is upsampled along the photo's own edges with a guided
filter (``refine``). Without mediapipe the person map is left out. Deterministic: GrabCut's RNG is
seeded, everything else is exact arithmetic.
"""

from __future__ import annotations

import cv2
import numpy as np

from spotdiff.common.images import Photo
from spotdiff.generate.segment import quality  # also sets the score registry.segment gives every mask
from spotdiff.generate.segment.colour import border_band, border_saliency, colour_refine, guided_filter, shrink
from spotdiff.generate.segment.registry import Segmentation, register

__all__ = ["guided_filter", "largest_component", "refine", "segment_grabcut"]

WORK_SIDE = 128
"""Long side of the colour-model hypothesis and of the mask that ``refine`` upsamples, pixels."""
GC_SIDE = 96
"""Long side GrabCut runs on, pixels: its cost grows faster than the pixel count (~30 ms here at 96 px,
~80 ms at 128 px, 2 iterations)."""
MARGIN = 0.04
"""Seed box inset from each border, as a fraction of the side: the subject is assumed to lie inside
(``sam``'s prompt box without a hint)."""
ITERATIONS = 2
MIN_SEED = 10
"""A saliency seed with fewer subject pixels than this is replaced by a centred ellipse."""
MIN_AREA = 0.005
"""A hypothesis covering less of the image than this is a speck, not a subject: left out."""


def largest_component(binary: np.ndarray) -> tuple[np.ndarray, float]:
    """Largest 8-connected component of a bool mask with its holes filled, and its share of the mask."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(binary, dtype=bool), 0.0
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = 1 + int(np.argmax(areas))
    comp = (labels == best).astype(np.uint8)
    # Fill holes: flood the background from outside; whatever it cannot reach is inside the subject.
    flood = np.pad(comp, 1)
    cv2.floodFill(flood, None, (0, 0), 1)
    filled = comp | (1 - flood[1:-1, 1:-1])
    return filled.astype(bool), float(areas.max() / areas.sum())


def _grabcut(bgr: np.ndarray, mask: np.ndarray, rect: tuple[int, int, int, int] | None,
             iterations: int = ITERATIONS) -> np.ndarray:
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    # GrabCut seeds its colour models from cv2's global RNG; fixing it keeps masks deterministic.
    cv2.setRNGSeed(0)
    mode = cv2.GC_INIT_WITH_RECT if rect else cv2.GC_INIT_WITH_MASK
    cv2.grabCut(bgr, mask, rect, bgd, fgd, iterations, mode)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def _ellipse_seed(h: int, w: int, mx: int, my: int) -> np.ndarray:
    """Border = sure background, centred ellipse = probable subject, its core = sure subject."""
    mask = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    mask[:my], mask[-my:], mask[:, :mx], mask[:, -mx:] = (cv2.GC_BGD,) * 4
    cv2.ellipse(mask, (w // 2, h // 2), (int(w * 0.3), int(h * 0.35)), 0, 0, 360, cv2.GC_PR_FGD, -1)
    cv2.ellipse(mask, (w // 2, h // 2), (int(w * 0.08), int(h * 0.1)), 0, 0, 360, cv2.GC_FGD, -1)
    return mask


def refine(coarse: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Upsample a coarse float mask to ``rgb``'s size along the image's own edges (guided filter)."""
    h, w = rgb.shape[:2]
    up = cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    radius = max(2, round(max(h, w) / WORK_SIDE * 1.5))
    # A grey guide: 3x cheaper than colour, and edges the filter needs are luminance edges here.
    guide = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    out = guided_filter(guide, up, radius, 1e-4)
    # The filter leaves a ramp as wide as its window; steepen it to a ~2 px soft edge.
    t = np.clip((out - 0.25) * 2.0, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _saliency_seed(sal: np.ndarray) -> np.ndarray:
    """GrabCut's seed from a saliency map: the border band sure background, salient pixels probable
    subject, the rest probable background; a centred ellipse when nothing is salient."""
    h, w = sal.shape
    seed = np.where(sal > 0.5, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    seed[border_band(h, w, 0.03)] = cv2.GC_BGD
    if np.count_nonzero(seed == cv2.GC_PR_FGD) < MIN_SEED:
        seed = _ellipse_seed(h, w, max(1, round(w * MARGIN)), max(1, round(h * MARGIN)))
    return seed


def hypotheses(photo: Photo) -> list[tuple[str, np.ndarray]]:
    """(name, bool mask at ``WORK_SIDE`` px) of every hypothesis for ``photo`` (see the module)."""
    small = shrink(photo.rgb, WORK_SIDE)
    sh, sw = small.shape[:2]
    sal = border_saliency(small)
    person = quality.person_map(photo.rgb)
    out = []
    if person is not None:
        person = cv2.resize(person, (sw, sh), interpolation=cv2.INTER_AREA)
        out.append(("person map", person >= 0.5))
    gc_small = shrink(photo.rgb, GC_SIDE)
    gh, gw = gc_small.shape[:2]
    bgr = cv2.cvtColor(gc_small, cv2.COLOR_RGB2BGR)
    gc_sal = cv2.resize(sal, (gw, gh), interpolation=cv2.INTER_AREA)
    out.append(("saliency GrabCut", _grabcut(bgr, _saliency_seed(gc_sal), None)))
    prior = sal if person is None else (sal + person) * np.float32(0.5)
    out.append(("colour models", colour_refine(small, prior)))
    if photo.box:
        x0, y0, x1, y1 = photo.box
        rect = (round(x0 * gw), round(y0 * gh), max(1, round((x1 - x0) * gw)), max(1, round((y1 - y0) * gh)))
        out.append(("box", _grabcut(bgr, np.zeros((gh, gw), np.uint8), rect)))
    out = [(name, largest_component(_fit(m, (sh, sw)))[0]) for name, m in out]
    out = [(name, m) for name, m in out if m.mean() >= MIN_AREA]
    if not out:  # nothing stands out (noise, a flat picture): the old centred box
        mx, my = max(1, round(gw * MARGIN)), max(1, round(gh * MARGIN))
        box = _grabcut(bgr, np.zeros((gh, gw), np.uint8), (mx, my, gw - 2 * mx, gh - 2 * my))
        if box.mean() < MIN_AREA:  # its sure-subject core keeps the ellipse seed from coming back empty
            box = _grabcut(bgr, _ellipse_seed(gh, gw, mx, my), None)
        out.append(("centred box", largest_component(_fit(box, (sh, sw)))[0]))
    return out


def _fit(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    return cv2.resize(mask.astype(np.float32), shape[::-1], interpolation=cv2.INTER_LINEAR) >= 0.5


def segment_grabcut(photo: Photo, class_name: str) -> Segmentation:
    """The hypothesis with the best mask-quality score, refined to the photo's size. Score: that quality
    (``registry.segment`` recomputes it on the refined mask)."""
    best_q, best = -1.0, None
    for _, mask in hypotheses(photo):
        if not mask.any():
            continue
        q = quality.mask_quality(photo, mask.astype(np.float32)).score
        if q > best_q:
            best_q, best = q, mask
    if best is None:
        return Segmentation(np.zeros(photo.rgb.shape[:2], np.float32), 0.0, "grabcut")
    mask = refine(best, photo.rgb)
    if mask.max(initial=0.0) < 0.5:  # a thin or noisy mask the edge-aware upsampling wiped out: upsample plainly
        mask = cv2.resize(best.astype(np.float32), photo.rgb.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    return Segmentation(mask, best_q, "grabcut")


register("grabcut", lambda: segment_grabcut)

"""The ``grabcut`` backend as it was before issue 15 (commit a57409d), kept for ``bench_segment.py`` to
measure the new one against in the same run (registered there as ``grabcut-v1``).

A box seed 4% inside the frame (or the photo's box hint), GrabCut at 128 px with 2 iterations, an
ellipse-seeded second pass when the first finds under 2% of the image (score halved), the largest
component with holes filled, upsampled by ``grabcut.refine``. Score: that component's share of the raw mask.
"""

from __future__ import annotations

import cv2
import numpy as np

from spotdiff.common.images import Photo
from spotdiff.generate.segment.grabcut import _ellipse_seed, _grabcut, largest_component, refine
from spotdiff.generate.segment.registry import Segmentation

WORK_SIDE, MARGIN, ITERATIONS, MIN_AREA = 128, 0.04, 2, 0.02


def segment_grabcut_v1(photo: Photo, class_name: str) -> Segmentation:
    h, w = photo.rgb.shape[:2]
    f = min(1.0, WORK_SIDE / max(h, w))
    small = cv2.resize(photo.rgb, (max(16, round(w * f)), max(16, round(h * f))), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    sh, sw = small.shape[:2]
    mx, my = max(1, round(sw * MARGIN)), max(1, round(sh * MARGIN))
    if photo.box:
        x0, y0, x1, y1 = photo.box
        rect = (round(x0 * sw), round(y0 * sh), round((x1 - x0) * sw), round((y1 - y0) * sh))
    else:
        rect = (mx, my, sw - 2 * mx, sh - 2 * my)
    raw = _grabcut(bgr, np.zeros((sh, sw), np.uint8), rect, ITERATIONS)
    penalty = 1.0
    if raw.mean() < MIN_AREA:
        raw = _grabcut(bgr, _ellipse_seed(sh, sw, mx, my), None, ITERATIONS)
        penalty = 0.5
    blob, share = largest_component(raw)
    return Segmentation(refine(blob, photo.rgb), share * penalty, "grabcut-v1")

"""``alpha`` segmentation: the photo's own transparency is the mask."""

from __future__ import annotations

import numpy as np

from spotdiff.common.images import BadInput, Photo
from spotdiff.generate.segment.registry import Segmentation, register


def segment_alpha(photo: Photo, class_name: str) -> Segmentation:
    """Score: share of mask pixels that are decisively in or out (alpha < 5% or > 95%)."""
    if photo.alpha is None:
        raise BadInput("no_alpha", "segment=alpha but the photo has no transparency")
    mask = photo.alpha.astype(np.float32) / 255.0
    decisive = float(np.mean((mask < 0.05) | (mask > 0.95)))
    return Segmentation(mask, decisive, "alpha")


register("alpha", lambda: segment_alpha)

"""``mediapipe`` segmentation: MediaPipe's bundled selfie-segmentation model, for people.

mediapipe 0.10.21 ships the model inside the wheel, so this runs offline. The
model is created once per process (it holds a graph and threads).
"""

from __future__ import annotations

import numpy as np

from spotdiff.common.images import Photo
from spotdiff.generate.segment.registry import Segmentation, register


class SelfieSegmenter:
    """Score: how decisive the person map is, mean of |2p - 1| over the image (1 = crisp)."""

    def __init__(self, model_selection: int = 0):
        # Imported here: mediapipe costs ~1 s to import and most runs never segment people.
        from mediapipe.python.solutions.selfie_segmentation import SelfieSegmentation

        self._model = SelfieSegmentation(model_selection=model_selection)

    def __call__(self, photo: Photo, class_name: str) -> Segmentation:
        result = self._model.process(np.ascontiguousarray(photo.rgb))
        prob = np.asarray(result.segmentation_mask, dtype=np.float32)
        prob = np.clip(prob, 0.0, 1.0)
        score = float(np.mean(np.abs(2.0 * prob - 1.0)))
        return Segmentation(prob, score, "mediapipe")


register("mediapipe", SelfieSegmenter)

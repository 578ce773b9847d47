"""``mediapipe`` segmentation: MediaPipe's bundled selfie-segmentation model, for people.

mediapipe 0.10.21 ships the model inside the wheel, so this runs offline. The
model is created once per process (it holds a graph and threads).

The person map is quantised to ``LEVELS`` steps before anything uses it (``quantise``): MediaPipe runs
TFLite with XNNPACK, whose kernels follow the CPU and, unlike numpy's, OpenCV's or torch's, have no
switch to pin them (``spotdiff.common.determinism``). On the astronaut photo an emulated AMD EPYC
(AVX2; ``qemu-x86_64 -cpu EPYC-Milan``) and an AVX-512 Xeon gave maps differing in 42% of the pixels,
by up to 1.5e-5; every soft edge pixel is rounded to uint8 after compositing, so a view's bytes
followed the CPU. After quantising, a pixel still differs only where the map lies within that
difference of a step boundary: none on that photo; expected about 0.13 pixels per photo (the sum of
the differences times ``LEVELS``; at 1/255 steps 4 pixels differed).
"""

from __future__ import annotations

import numpy as np

from spotdiff.common.images import Photo
from spotdiff.common.native_log import quiet_native
from spotdiff.generate.segment.registry import Segmentation, register

LEVELS = 32
"""Steps of the quantised person map (5 bits): fine enough for a soft edge a few pixels wide, which
resizing and compositing smooth further, coarse enough that CPU-dependent last bits rarely cross a step."""


def quantise(prob: np.ndarray) -> np.ndarray:
    """``prob`` clipped to [0, 1] and rounded to the nearest multiple of 1/``LEVELS`` (exact float
    operations, so the same bytes on every CPU for the same input)."""
    return np.floor(np.clip(prob, 0.0, 1.0) * LEVELS + 0.5) / LEVELS


class SelfieSegmenter:
    """Score: how decisive the person map is, mean of |2p - 1| over the image (1 = crisp)."""

    def __init__(self, model_selection: int = 0):
        # Imported here: mediapipe costs ~1 s to import and most runs never segment people.
        from mediapipe.python.solutions.selfie_segmentation import SelfieSegmentation

        with quiet_native():
            self._model = SelfieSegmentation(model_selection=model_selection)

    def __call__(self, photo: Photo, class_name: str) -> Segmentation:
        with quiet_native():
            result = self._model.process(np.ascontiguousarray(photo.rgb))
        prob = quantise(np.asarray(result.segmentation_mask, dtype=np.float32))
        score = float(np.mean(np.abs(2.0 * prob - 1.0)))
        return Segmentation(prob, score, "mediapipe")


register("mediapipe", SelfieSegmenter)

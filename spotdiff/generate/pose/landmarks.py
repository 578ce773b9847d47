"""Body landmarks of people in photos: MediaPipe's 33-point pose (BlazePose topology).

Landmarks are detected once, on the source photo, and then moved through the same geometry
as the pixels (crop, affine warp, resize, paste: see ``Layer.points``), so the group's JSON
records where each body point is in every view without running the model per view.

Backends, both offline:

* default: the pose model bundled in the mediapipe wheel (``solutions.pose.Pose``,
  ``static_image_mode=True, model_complexity=1``);
* ``generate.pose.landmarks_model`` set: that local MediaPipe Tasks asset through
  ``tasks.python.vision.PoseLandmarker``.

Each model is built lazily, once per process (it holds a graph and threads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from spotdiff.config import ConfigError
from spotdiff.common.native_log import quiet_native

MODEL_KEY = "generate.pose.landmarks_model"
N_LANDMARKS = 33
Landmarks = list[tuple[float, float, float]]
_Detector = Callable[[np.ndarray], "Landmarks | None"]
_detectors: dict[str | None, _Detector] = {}


def _to_pixels(landmarks, width: int, height: int) -> Landmarks:
    # MediaPipe normalises by the image's width/height with 0 at the left edge; pixel-centre
    # coordinates (those OpenCV warps use, see Layer.points) are half a pixel less.
    return [(float(p.x) * width - 0.5, float(p.y) * height - 0.5, float(p.visibility or 0.0)) for p in landmarks]


def _bundled() -> _Detector:
    # Imported here: mediapipe costs ~1 s to import and most runs never see a person.
    from mediapipe.python.solutions.pose import Pose

    with quiet_native():
        model = Pose(static_image_mode=True, model_complexity=1)

    def detect(rgb: np.ndarray) -> Landmarks | None:
        with quiet_native():
            result = model.process(rgb)
        if result.pose_landmarks is None:
            return None
        return _to_pixels(result.pose_landmarks.landmark, rgb.shape[1], rgb.shape[0])

    return detect


def _tasks(path: str) -> _Detector:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{MODEL_KEY} = {path!r}: no such file (models are never downloaded)")
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.PoseLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(file)),
                                           running_mode=vision.RunningMode.IMAGE, num_poses=1)
    try:
        with quiet_native():
            model = vision.PoseLandmarker.create_from_options(options)
    except Exception as err:  # noqa: BLE001 -- any load failure is the configured file's fault
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{MODEL_KEY} = {path!r}: not a usable pose-landmarker asset: {first}") from None

    def detect(rgb: np.ndarray) -> Landmarks | None:
        with quiet_native():
            result = model.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        if not result.pose_landmarks:
            return None
        return _to_pixels(result.pose_landmarks[0], rgb.shape[1], rgb.shape[0])

    return detect


def detector(model: str | None = None) -> _Detector:
    """The detector for ``model`` (None: the bundled one), built on first use in this process.

    Raises ``ConfigError`` naming the path and ``generate.pose.landmarks_model`` when ``model``
    is missing or cannot be loaded.
    """
    if model not in _detectors:
        _detectors[model] = _tasks(model) if model else _bundled()
    return _detectors[model]


def detect(rgb: np.ndarray, model: str | None = None) -> Landmarks | None:
    """The 33 pose landmarks of the most prominent person in ``rgb`` (uint8, (H, W, 3)), or None.

    Each landmark is (x, y, visibility): x, y in ``rgb``'s pixels, pixel-centre convention
    ((0, 0) = centre of the top-left pixel; points may fall outside the image when the body
    does), visibility in [0, 1] (MediaPipe's estimate that the point is in view and not
    occluded). ``model``: a Tasks asset path, or None for the bundled model.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) image, got shape {rgb.shape}")
    return detector(model)(rgb)


def record(points: np.ndarray | None) -> list[list[float]] | None:
    """Landmarks as stored in a group's JSON: [x, y, visibility] per point, x and y rounded to
    0.1 px, visibility to 3 decimals; None stays None."""
    if points is None:
        return None
    return [[round(float(x), 1), round(float(y), 1), round(float(v), 3)] for x, y, v in np.asarray(points)[:, :3]]

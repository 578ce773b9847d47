"""``affine`` pose variation of a segmented photo subject: flip, rotation, scale, perspective.

The warp is one 3x3 homography, recorded in the group's JSON so later stages (and
landmark transforms) can reproduce exactly what happened to the pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from spotdiff.generate.background.composite import Layer
from spotdiff.config import PoseConfig


def draw_params(rng: np.random.Generator, cfg: PoseConfig) -> dict:
    """Random affine pose parameters. Units: degrees, scale factor, corner shifts in layer fractions."""
    lo, hi = cfg.affine_scale
    return {
        "flip": bool(rng.random() < cfg.flip_probability),
        "rotation": float(rng.uniform(-cfg.affine_rotation, cfg.affine_rotation)),
        "scale": float(rng.uniform(lo, hi)),
        "perspective": [float(v) for v in rng.uniform(-cfg.affine_perspective, cfg.affine_perspective, size=8)],
    }


def homography(params: dict, width: int, height: int) -> np.ndarray:
    """Map layer pixel coordinates to output coordinates (about the layer centre, scale excluded).

    Scale is applied at compositing time, relative to the anchor's size, so the output
    here stays in the layer's own pixel units.
    """
    w, h = float(width), float(height)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = src + np.float32(params["perspective"]).reshape(4, 2) * np.float32([w, h])
    persp = cv2.getPerspectiveTransform(src, dst)
    flip = np.array([[-1, 0, w], [0, 1, 0], [0, 0, 1]], np.float64) if params["flip"] else np.eye(3)
    rot = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), params["rotation"], 1.0), [0, 0, 1]])
    return rot @ persp @ flip


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map points through a 3x3 homography (with the perspective divide).

    ``points`` is (n, 2 + k): x, y first, then k extra columns (e.g. visibility) returned
    unchanged. Coordinates use the convention of the pixels ``matrix`` warps; for
    ``cv2.warpPerspective`` that is pixel centres at integer coordinates. Returns float64.
    """
    pts = np.array(points, dtype=np.float64).reshape(len(points), -1)
    xyw = np.column_stack([pts[:, :2], np.ones(len(pts))]) @ np.asarray(matrix, np.float64).T
    pts[:, :2] = xyw[:, :2] / xyw[:, 2:3]
    return pts


def apply(layer: Layer, params: dict) -> tuple[Layer, np.ndarray]:
    """Warp a layer; returns the warped layer (cropped to its new box) and the full homography used.

    The homography maps the input layer's pixels to the returned layer's (crop shift included);
    the layer's ``points`` go through it too."""
    w, h = layer.size
    m = homography(params, w, h)
    corners = cv2.perspectiveTransform(np.float32([[[0, 0], [w, 0], [w, h], [0, h]]]), m)[0]
    x0, y0 = np.floor(corners.min(axis=0))
    x1, y1 = np.ceil(corners.max(axis=0))
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    m = shift @ m
    size = (int(x1 - x0), int(y1 - y0))
    # Warp premultiplied colour so pixels outside the subject cannot tint its edge.
    pre = cv2.warpPerspective(layer.rgb * layer.alpha[..., None], m, size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = np.clip(cv2.warpPerspective(layer.alpha, m, size, flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0), 0, 1)
    rgb = np.where(alpha[..., None] > 1e-4, pre / np.maximum(alpha, 1e-4)[..., None], 0.0)
    ys, xs = np.nonzero(alpha > 0.01)
    if len(xs):
        alpha = alpha[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        rgb = rgb[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        m = np.array([[1, 0, -xs.min()], [0, 1, -ys.min()], [0, 0, 1]], np.float64) @ m
    points = None if layer.points is None else transform_points(layer.points, m)
    return Layer(np.clip(rgb, 0, 255).astype(np.float32), alpha.astype(np.float32), points), m

"""Subject layers and compositing: soft edges, no halo.

A ``Layer`` is a subject cut out of its picture: straight (not premultiplied) RGB and
a soft alpha. Photo layers have the colours of their edge band replaced by colours
pushed out from the solid interior ("decontamination"), so the old background never
bleeds into the new one as a halo.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Layer:
    rgb: np.ndarray
    """float32 (h, w, 3) in [0, 255], straight colour."""
    alpha: np.ndarray
    """float32 (h, w) in [0, 1]."""
    points: np.ndarray | None = None
    """Optional float64 (n, 2 + k) points on the subject (e.g. pose landmarks): x, y in this layer's
    pixels, pixel-centre convention ((0, 0) = centre of the top-left pixel, as OpenCV warps use),
    then k extra columns (e.g. visibility) that geometry never changes. Every operation that
    moves the pixels moves these points the same way, so they stay true in the output."""
    offset: tuple[int, int] | None = None
    """(x, y) of this layer's top-left pixel in the photo it was cut from, pixels (set by
    ``cut_layer``); None for layers that were rendered, resized or warped."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.alpha.shape[1], self.alpha.shape[0]


def _normalised_blur(rgb: np.ndarray, solid: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Blurred solid weight and the solid pixels' blurred colour divided by it (where defined)."""
    weight = cv2.GaussianBlur(solid, (0, 0), sigma)
    colour = cv2.GaussianBlur(rgb * solid[..., None], (0, 0), sigma)
    return weight, colour / np.maximum(weight, 1e-6)[..., None]


def _push_colours(rgb: np.ndarray, solid: np.ndarray) -> np.ndarray:
    """Colour of the nearest solid pixels, by normalised convolution at growing scales.

    The first, narrow scale runs at full resolution (it decides the colours right at the
    edge); the wide ones run on a 4x smaller copy, where they cost 1/16 as much.
    """
    out = np.zeros_like(rgb)
    weight, colour = _normalised_blur(rgb, solid, 1.5)
    todo = weight <= 1e-3
    out[~todo] = colour[~todo]
    if todo.any():
        h, w = solid.shape
        small = (max(1, w // 4), max(1, h // 4))
        rgb_s = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA)
        solid_s = cv2.resize(solid, small, interpolation=cv2.INTER_AREA)
        fill = np.zeros_like(rgb_s)
        left = np.ones(solid_s.shape, bool)
        for sigma in (1.0, 3.0, 10.0):
            weight_s, colour_s = _normalised_blur(rgb_s, solid_s, sigma)
            ok = left & (weight_s > 1e-3)
            fill[ok] = colour_s[ok]
            left &= ~ok
        if left.any():
            fill[left] = rgb[solid > 0].mean(axis=0) if solid.any() else 0.0
        out[todo] = cv2.resize(fill, (w, h), interpolation=cv2.INTER_LINEAR)[todo]
    return out


def cut_layer(rgb: np.ndarray, mask: np.ndarray, pad: float = 0.04, points: np.ndarray | None = None) -> Layer:
    """Crop ``rgb`` (uint8) to the subject's box (plus ``pad`` of its size) and decontaminate edges.

    ``mask`` is float in [0, 1] at the image's size. The crop keeps the subject's aspect.
    ``points`` (optional, see ``Layer.points``) are in the image's pixels; the layer holds them
    shifted into its own pixels, and records the crop's top-left corner as ``offset``.
    """
    ys, xs = np.nonzero(mask > 0.02)
    if len(xs) == 0:
        raise ValueError("empty mask")
    h, w = mask.shape
    px, py = round((xs.max() - xs.min() + 1) * pad), round((ys.max() - ys.min() + 1) * pad)
    x0, x1 = max(0, xs.min() - px), min(w, xs.max() + 1 + px)
    y0, y1 = max(0, ys.min() - py), min(h, ys.max() + 1 + py)
    colour = rgb[y0:y1, x0:x1].astype(np.float32)
    alpha = mask[y0:y1, x0:x1].astype(np.float32)
    solid = (alpha > 0.98).astype(np.float32)
    band = alpha <= 0.98
    if band.any() and solid.any():
        colour[band] = _push_colours(colour, solid)[band]
    offset = (int(x0), int(y0))
    return Layer(colour, alpha, shift_points(points, -offset[0], -offset[1]), offset)


def shift_points(points: np.ndarray | None, dx: float, dy: float) -> np.ndarray | None:
    """``points`` (see ``Layer.points``) moved by (dx, dy) pixels; None stays None."""
    if points is None:
        return None
    out = np.array(points, dtype=np.float64)
    out[:, 0] += dx
    out[:, 1] += dy
    return out


def resize_layer(layer: Layer, factor: float) -> Layer:
    """Scale a layer by ``factor``, premultiplied so transparent pixels never tint the edge."""
    w, h = layer.size
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    if size == (w, h):
        return layer
    points = None
    if layer.points is not None:
        # cv2.resize maps pixel centres as x' = (x + 0.5) * sx - 0.5, with the per-axis factor
        # of the rounded size (not ``factor``), so points land where the pixels did.
        sx, sy = size[0] / w, size[1] / h
        points = np.array(layer.points, dtype=np.float64)
        points[:, 0] = (points[:, 0] + 0.5) * sx - 0.5
        points[:, 1] = (points[:, 1] + 0.5) * sy - 0.5
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    pre = cv2.resize(layer.rgb * layer.alpha[..., None], size, interpolation=interp)
    alpha = np.clip(cv2.resize(layer.alpha, size, interpolation=interp), 0.0, 1.0)
    rgb = np.where(alpha[..., None] > 1e-4, pre / np.maximum(alpha, 1e-4)[..., None], 0.0)
    return Layer(np.clip(rgb, 0, 255).astype(np.float32), alpha.astype(np.float32), points)


def composite(background: np.ndarray, layer: Layer,
              center: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Paste ``layer`` (already at its final size) onto ``background`` centred at ``center`` (x, y pixels).

    Parts outside the canvas are clipped. Returns (rgb uint8, mask uint8, points), images at
    the background's size; the mask is the layer's alpha as placed (255 = subject); points are
    the layer's ``points`` in canvas pixels (None when it has none), not clipped: a point may
    lie off the canvas where the subject does.
    """
    H, W = background.shape[:2]
    w, h = layer.size
    x0, y0 = round(center[0] - w / 2), round(center[1] - h / 2)
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
    out = background.astype(np.float32)
    mask = np.zeros((H, W), np.float32)
    if cx1 > cx0 and cy1 > cy0:
        a = layer.alpha[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        c = layer.rgb[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        region = out[cy0:cy1, cx0:cx1]
        out[cy0:cy1, cx0:cx1] = c * a[..., None] + region * (1.0 - a[..., None])
        mask[cy0:cy1, cx0:cx1] = a
    rgb = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return rgb, np.clip(mask * 255.0 + 0.5, 0, 255).astype(np.uint8), shift_points(layer.points, x0, y0)

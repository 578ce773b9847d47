"""Identity encoders: subject crops -> L2-normalised vectors whose cosine says "same subject".

An encoder is any ``embed_fn(images: list[np.ndarray]) -> np.ndarray (N, D)`` with unit
rows. QA hands it **RGBA uint8 crops** (H, W, 4): the subject's bounding box from the
view, with the soft mask as alpha, so an encoder can ignore the background (the
descriptor does) or flatten it onto a plain colour (``flatten``; the ``embed`` adapter
does, on mid grey, which is what CLIP-style encoders see as "no background").

Encoders register by name (``qa.identity.encoder`` in params.yaml):

* ``descriptor`` (default): a classical, training-free descriptor of the solid subject
  pixels: CIE Lab colour (an 8x8 a*b* histogram and a 8-bin L* histogram) and the
  orientation of brightness gradients (12 bins, magnitude-weighted, over 8 ``rings''
  of distance to the subject's outline would be pose-specific, so it is global). Each
  block is a probability histogram; square roots (Hellinger) make cosine behave like
  Bhattacharyya similarity. Colour says which subject, gradients say how it is built;
  both survive a change of pose far better than a change of subject.
* ``embed``: ``spotdiff.embed.ImageEncoder.from_config(**qa.identity.embed)``, imported
  only when chosen (needs torch; real weights or the embedded tiny CLIP-architecture model).
"""

from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np

EmbedFn = Callable[[list[np.ndarray]], np.ndarray]

DESCRIPTOR_SIDE = 64
"""Crops are resampled to this square side, pixels, before the descriptor is taken."""

SOLID = 250
"""Alpha (uint8) from which a pixel counts as subject for the descriptor: soft edges mix in
the background, which differs between views by design."""

_BLOCK_WEIGHTS = {"ab": 1.0, "l": 0.6, "grad": 0.8}
"""Relative weight of each histogram block in the descriptor (applied after the square root)."""


def flatten(rgba: np.ndarray, fill: int = 128) -> np.ndarray:
    """RGB uint8 of an RGBA crop composited over a plain ``fill`` grey."""
    a = rgba[..., 3:4].astype(np.float32) / 255
    return (rgba[..., :3] * a + fill * (1 - a) + 0.5).astype(np.uint8)


def _hist(values: np.ndarray, weights: np.ndarray, bins: int, lo: float, hi: float) -> np.ndarray:
    idx = np.clip(((values - lo) * (bins / (hi - lo))).astype(np.int64), 0, bins - 1)
    h = np.bincount(idx, weights=weights, minlength=bins)
    s = h.sum()
    return h / s if s > 0 else h


def describe(rgba: np.ndarray) -> np.ndarray:
    """Descriptor of one RGBA crop (see the module docstring); all zeros for an empty subject."""
    crop = cv2.resize(rgba, (DESCRIPTOR_SIDE, DESCRIPTOR_SIDE), interpolation=cv2.INTER_AREA)
    solid = crop[..., 3] >= SOLID
    lab = cv2.cvtColor(np.ascontiguousarray(crop[..., :3]), cv2.COLOR_RGB2Lab)
    grey = lab[..., 0].astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    mag, ang = cv2.cartToPolar(gx, gy, angleInDegrees=True)
    # Gradients of the outline itself only say where the (pose-dependent) silhouette runs:
    # use the solid interior, shrunk by a pixel so the outline's Sobel footprint drops out.
    inner = cv2.erode(solid.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if not solid.any():
        return np.zeros(64 + 8 + 12, np.float32)
    a, b, light = lab[..., 1][solid], lab[..., 2][solid], lab[..., 0][solid]
    ab = _hist(a.astype(np.int64) // 32 * 8 + b.astype(np.int64) // 32, np.ones(a.size), 64, 0, 64)
    lh = _hist(light.astype(np.float32), np.ones(light.size), 8, 0, 256)
    gh = _hist(ang[inner] % 180.0, mag[inner], 12, 0, 180) if inner.any() else np.zeros(12)
    vec = np.concatenate([np.sqrt(ab) * _BLOCK_WEIGHTS["ab"], np.sqrt(lh) * _BLOCK_WEIGHTS["l"],
                          np.sqrt(gh) * _BLOCK_WEIGHTS["grad"]]).astype(np.float32)
    n = np.linalg.norm(vec)
    return vec / n if n > 0 else vec


def descriptor_encoder(**_: Any) -> EmbedFn:
    """The ``descriptor`` encoder (no options)."""
    def embed(images: list[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, 64 + 8 + 12), np.float32)
        return np.stack([describe(im) for im in images])
    return embed


def embed_encoder(**options: Any) -> EmbedFn:
    """The ``embed`` encoder: ``spotdiff.embed.ImageEncoder.from_config(**options)`` on RGB crops
    flattened over mid grey. Imported here, when chosen, so QA never needs torch otherwise."""
    from spotdiff.embed import ImageEncoder  # noqa: PLC0415 -- optional, heavy dependency

    encoder = ImageEncoder.from_config(**options)

    def embed(images: list[np.ndarray]) -> np.ndarray:
        if not images:
            return np.zeros((0, 1), np.float32)
        out = np.asarray(encoder([flatten(im) for im in images]), dtype=np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return embed


ENCODERS: dict[str, Callable[..., EmbedFn]] = {"descriptor": descriptor_encoder, "embed": embed_encoder}
"""Encoder name -> factory(**options) -> embed_fn. Add one with ``register``."""


def register(name: str, factory: Callable[..., EmbedFn]) -> None:
    ENCODERS[name] = factory


def build(name: str, options: dict[str, Any] | None = None) -> EmbedFn:
    """The embed_fn registered as ``name``, built with ``options``."""
    if name not in ENCODERS:
        raise KeyError(f"unknown identity encoder {name!r}; known: {sorted(ENCODERS)}")
    return ENCODERS[name](**(options or {}))

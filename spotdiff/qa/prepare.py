"""Decode one group's members and take every per-view measurement the checks read.

``prepare(key, members, cfg)`` never raises for bad data: a member that is missing or does
not decode leaves ``Prepared.error`` set (the ``decode`` check fails it) and nothing else.
Identity vectors are filled in afterwards, a chunk at a time (``embed_chunk``), because
model encoders are much faster on batches.

A measurement that raises on one group (a bug met by an odd view, e.g. a 47x15 px crop) rejects
that group with ``error = "<view>: internal_error: <exception>"`` and a logged traceback; it never
stops the stage, so one bad group in 10k costs one group.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from spotdiff.qa import measure
from spotdiff.config.qa import QaConfig
from spotdiff.qa.identity import EmbedFn
from spotdiff.common.record import VIEWS
from spotdiff.common.tars import member_digests

LOG = logging.getLogger(__name__)


def internal_error(where: str, key: str, err: Exception) -> str:
    """The ``error`` of a group whose measurement raised: logged with its traceback (a bug to fix),
    recorded as a reject reason (the run goes on)."""
    LOG.warning("QA: group %s: %s raised; the group is rejected as internal_error", key, where, exc_info=err)
    return f"{where}: internal_error: {type(err).__name__}: {err}"


@dataclass
class ViewMeasures:
    """What the checks read of one view."""

    image: np.ndarray
    """BGR uint8 as decoded."""
    mask: np.ndarray
    """uint8 soft mask as decoded (all zeros when its size differs from the image's)."""
    mask_shape: tuple[int, ...]
    """Shape of the mask as decoded."""
    small: np.ndarray
    """BGR shrunk to ``analysis_side``."""
    small_mask: np.ndarray
    """The mask shrunk alike."""
    box: tuple[float, float, float] | None
    """Square around the subject (centre x, centre y, side), full resolution; None if no subject."""
    mask_stats: dict[str, float]
    """``measure.mask_stats`` of the mask."""
    quality: dict[str, float]
    """``measure.quality_scores`` of the shrunk view."""
    phash: np.ndarray
    """``measure.phash_bits`` of the shrunk view."""
    digest: bytes
    """Of the JPEG member's bytes."""
    crop: np.ndarray
    """RGBA uint8 subject bounding-box crop (alpha = mask) of the shrunk view, for the identity
    encoder: at ``analysis_side`` a subject is 40-110 px, plenty for a 64 px descriptor, and
    cropping the full-size view made the descriptor 3x slower at 256 px (more at 512)."""


@dataclass
class Prepared:
    """One decoded and measured group."""

    key: str
    record: dict[str, Any] = field(default_factory=dict)
    """The group's JSON record."""
    views: dict[str, ViewMeasures] = field(default_factory=dict)
    embedding: dict[str, np.ndarray] = field(default_factory=dict)
    """View -> identity vector of its subject crop (``embed_chunk``)."""
    error: str | None = None
    """Why the group could not be decoded (None when it was)."""
    sha256: dict[str, str] = field(default_factory=dict)
    """Member name -> sha256 of its bytes as read (checked against what generate recorded)."""


def _crop(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    x, y, w, h = cv2.boundingRect(measure.binary(mask))
    if w == 0 or h == 0:
        return np.zeros((0, 0, 4), np.uint8)
    rgba = cv2.cvtColor(image[y:y + h, x:x + w], cv2.COLOR_BGR2RGBA)
    rgba[..., 3] = mask[y:y + h, x:x + w]
    return rgba


def _view(image: np.ndarray, mask: np.ndarray, jpeg: bytes, cfg: QaConfig) -> ViewMeasures:
    small = measure.shrink(image, cfg.analysis_side)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    shape = mask.shape
    if shape != image.shape[:2]:  # the size check reports it; measure an empty mask meanwhile
        mask = np.zeros(image.shape[:2], np.uint8)
    small_mask = cv2.resize(mask, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA)
    return ViewMeasures(
        image=image, mask=mask, mask_shape=shape, small=small, small_mask=small_mask,
        box=measure.subject_box(mask), mask_stats=measure.mask_stats(mask),
        quality=measure.quality_scores(grey), phash=measure.phash_bits(grey),
        digest=measure.digest(jpeg), crop=_crop(small, small_mask))


def prepare(key: str, members: dict[str, bytes], cfg: QaConfig) -> Prepared:
    """Decode and measure one group (see the module docstring)."""
    out = Prepared(key, sha256=member_digests(members))
    try:
        record = json.loads(members["json"])
        if not isinstance(record, dict):
            raise ValueError(f"not a JSON object but {type(record).__name__}")
    except (KeyError, ValueError) as err:
        out.error = f"json: {type(err).__name__}: {err}"
        return out
    out.record = record
    decoded = {}
    for v in VIEWS:
        try:
            decoded[v] = (measure.decode_image(members.get(f"{v}.jpg")), measure.decode_mask(members.get(f"{v}.mask.png")))
        except measure.DecodeError as err:
            out.error = f"{v}: {err}"
            return out
    views = {}
    for v, (img, mask) in decoded.items():
        try:
            views[v] = _view(img, mask, members[f"{v}.jpg"], cfg)
        except Exception as err:  # noqa: BLE001 -- one group's bug is its reject, not the stage's failure
            out.error = internal_error(v, key, err)
            return out
    out.views = views
    return out


def embed_chunk(samples: list[Prepared], embed_fn: EmbedFn) -> None:
    """Fill ``embedding`` of every decoded sample with one batched call of ``embed_fn``."""
    todo = [(s, v) for s in samples if s.error is None for v in VIEWS]
    if not todo:
        return
    try:
        vectors = embed_fn([s.views[v].crop for s, v in todo])
    except Exception:  # noqa: BLE001 -- find the group(s) that raise, one at a time; reject only those
        for s in {id(s): s for s, _ in todo}.values():
            try:
                one = embed_fn([s.views[v].crop for v in VIEWS])
            except Exception as err:  # noqa: BLE001
                s.error, s.views = internal_error("identity", s.key, err), {}
                continue
            s.embedding.update(zip(VIEWS, one))
        return
    for (s, v), vec in zip(todo, vectors):
        s.embedding[v] = vec

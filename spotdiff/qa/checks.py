"""The QA checks: a registry of small functions, each scoring one property of a group.

A check returns raw values keyed by view (``anchor``, ``bg``, ``pose``; pair checks key
by the view compared with the anchor). ``evaluate`` turns them into the sample's score
(the value of the worst view: the one nearest to or furthest beyond a bound), a pass flag
(every value inside ``[low, high]``) and the name of that view. A check's name is also
the reason a failing sample is quarantined under.

Per-sample checks run in ``CHECKS`` order on one ``Prepared`` group. Cross-sample checks
(``cross=True``: duplicates) are registered here for their bounds and descriptions but
scored by ``spotdiff.qa.duplicates`` once every sample is prepared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from spotdiff.qa import measure
from spotdiff.config.qa import QaConfig
from spotdiff.qa.prepare import Prepared

Values = dict[str, float]
"""View (or compared view) -> raw value."""


@dataclass(frozen=True)
class Check:
    name: str
    """Also the quarantine reason."""
    about: str
    """What the score measures, with its units: shown in the report."""
    bounds: Callable[[QaConfig], tuple[float, float]]
    """Allowed ``[low, high]`` of every value, from the config."""
    score: Callable[[Prepared, QaConfig], Values] | None
    """Per-sample scorer; None for cross-sample checks."""
    nan_passes: bool = False
    """Whether a value that cannot be measured (NaN) passes: True where NaN means "nothing to
    compare with" (no earlier sample of the subject, no pose labels of a known kind)."""
    cross: bool = False
    """Scored across samples (``spotdiff.qa.duplicates``), after the per-sample pass."""


CHECKS: dict[str, Check] = {}
"""Name -> check, in the order checks run and reasons are listed."""


def register(name: str, about: str, bounds: Callable[[QaConfig], tuple[float, float]], *,
             nan_passes: bool = False):
    """Decorator: register the decorated per-sample scorer as check ``name``."""
    def deco(fn: Callable[[Prepared, QaConfig], Values]):
        CHECKS[name] = Check(name, about, bounds, fn, nan_passes)
        return fn
    return deco


def register_cross(name: str, about: str, bounds: Callable[[QaConfig], tuple[float, float]], *,
                   nan_passes: bool = False) -> None:
    """Register cross-sample check ``name`` (scored by ``spotdiff.qa.duplicates``)."""
    CHECKS[name] = Check(name, about, bounds, None, nan_passes, cross=True)


@dataclass(frozen=True)
class Outcome:
    """One check's verdict on one sample."""

    score: float
    """The worst view's value (NaN if it could not be measured)."""
    passed: bool
    view: str
    """Which view (or compared view) the score comes from."""


def margin(value: float, lo: float, hi: float, nan_passes: bool) -> float:
    """Signed distance of ``value`` inside ``[lo, hi]`` (negative outside): smaller is worse."""
    if math.isnan(value):
        return math.inf if nan_passes else -math.inf
    return min(value - lo, hi - value)


def evaluate(check: Check, values: Values, cfg: QaConfig) -> Outcome:
    """The sample's score, pass flag and worst view for ``values`` of ``check``."""
    lo, hi = check.bounds(cfg)
    if not values:
        return Outcome(float("nan"), check.nan_passes, "")
    view, value = min(values.items(), key=lambda kv: margin(kv[1], lo, hi, check.nan_passes))
    passed = all(margin(v, lo, hi, check.nan_passes) >= 0 for v in values.values())
    return Outcome(float(value), passed, view)


INF = math.inf


# --- decoding and geometry -------------------------------------------------------------------

@register("decode", "1 if every member (json, 3 JPEG views, 3 PNG masks) decodes and can be measured, else 0", lambda c: (1, 1))
def _decode(s: Prepared, cfg: QaConfig) -> Values:
    return {"all": 0.0 if s.error else 1.0}


@register("size", "shorter image side, px (0 if the mask's size or the record's image_size disagrees)",
          lambda c: (c.min_side, INF))
def _size(s: Prepared, cfg: QaConfig) -> Values:
    want = s.record.get("image_size")  # the side of the square views generate was asked for
    out = {}
    for v, m in s.views.items():
        h, w = m.image.shape[:2]
        ok = m.mask_shape == (h, w) and (want is None or (h, w) == (want, want))
        out[v] = float(min(h, w)) if ok else 0.0
    return out


@register("aspect", "image width / height", lambda c: c.aspect)
def _aspect(s: Prepared, cfg: QaConfig) -> Values:
    return {v: m.image.shape[1] / m.image.shape[0] for v, m in s.views.items()}


# --- mask ------------------------------------------------------------------------------------

def _mask_stat(stat: str) -> Callable[[Prepared, QaConfig], Values]:
    return lambda s, cfg: {v: m.mask_stats[stat] for v, m in s.views.items()}


register("mask_area", "subject pixels / image pixels", lambda c: c.mask.area)(_mask_stat("area"))


@register("mask_fragmented", "share of subject pixels in the largest connected component (exact masks: not judged)",
          lambda c: (c.mask.min_largest_component, 1), nan_passes=True)
def _mask_fragmented(s: Prepared, cfg: QaConfig) -> Values:
    segment = s.record.get("segment")
    backend = segment.get("backend") if isinstance(segment, dict) else None
    if backend in cfg.mask.exact_backends:
        return {v: float("nan") for v in s.views}
    return {v: measure.largest_component_share(m.mask) for v, m in s.views.items()}


@register("mask_quality", "mask-quality score of the photo mask every view was cut with: estimated P(IoU >= 0.8) "
          "(exact masks: not judged)", lambda c: (c.mask.min_quality, 1), nan_passes=True)
def _mask_quality(s: Prepared, cfg: QaConfig) -> Values:
    """The record's ``segment.score``: all three views are cut from one photo mask, so each view gets its
    score. NaN (passes) for exact masks and records without a score."""
    segment = s.record.get("segment")
    if not isinstance(segment, dict) or segment.get("backend") in cfg.mask.exact_backends:
        return {v: float("nan") for v in s.views}
    score = segment.get("score")
    value = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else float("nan")
    return {v: value for v in s.views}


register("mask_bbox", "shorter side of the subject's bounding box / image side",
         lambda c: (c.mask.min_bbox_side, 1))(_mask_stat("bbox_side"))
register("mask_cut", "subject pixels on the image border / perimeter of the subject's box",
         lambda c: (0, c.mask.max_border_cut))(_mask_stat("border_cut"))


# --- image quality ---------------------------------------------------------------------------

def _quality(stat: str) -> Callable[[Prepared, QaConfig], Values]:
    return lambda s, cfg: {v: m.quality[stat] for v, m in s.views.items()}


register("blurry", "sharpness: |Laplacian| / |gradient| of the strongest edges, 1 = crisp",
         lambda c: (c.quality.min_sharpness, 1))(_quality("sharpness"))
register("dark", "95th-percentile brightness / 255", lambda c: (c.quality.min_dark, 1))(_quality("dark"))
register("light", "1 - 5th-percentile brightness / 255", lambda c: (c.quality.min_light, 1))(_quality("light"))
register("low_information", "brightness entropy / 6 bits",
         lambda c: (c.quality.min_information, 1))(_quality("information"))


# --- duplicates (scored across samples by spotdiff.qa.duplicates) ----------------------------

register_cross("duplicate_exact",
               "views whose JPEG file is byte-identical to a view of this or an earlier sample", lambda c: (0, 0))
register_cross("near_duplicate_subject",
               "least perceptual-hash distance (fraction of 256 bits) to an earlier sample of the same subject, "
               "where below the bound (NaN: none that close)",
               lambda c: (c.duplicates.min_hash_distance, 1), nan_passes=True)
register_cross("near_duplicate_other",
               "least perceptual-hash distance (fraction of 256 bits) to an earlier sample of another subject, "
               "where below the bound (NaN: none that close)",
               lambda c: (c.duplicates.min_hash_distance, 1), nan_passes=True)


# --- identity ----------------------------------------------------------------------------------

def _cosine(s: Prepared, view: str) -> float:
    a, b = s.embedding.get("anchor"), s.embedding.get(view)
    if a is None or b is None or not np.any(a) or not np.any(b):
        return float("nan")  # no subject to describe: the mask checks say why
    return float(np.clip(np.dot(a, b), -1.0, 1.0))  # unit vectors: |cos| > 1 is rounding


@register("identity_bg", "encoder cosine, anchor vs bg subject crop", lambda c: (c.identity.bg_min, 1))
def _identity_bg(s: Prepared, cfg: QaConfig) -> Values:
    return {"bg": _cosine(s, "bg")}


@register("identity_pose", "encoder cosine, anchor vs pose subject crop", lambda c: c.identity.pose)
def _identity_pose(s: Prepared, cfg: QaConfig) -> Values:
    return {"pose": _cosine(s, "pose")}


# --- variation: bg view changes the background only, pose view the pose only -----------------

def _background_change(s: Prepared, view: str) -> float:
    a, b = s.views["anchor"], s.views[view]
    return measure.background_change(a.small, a.small_mask, b.small, b.small_mask)


def _aligned_iou(s: Prepared, view: str) -> float:
    """Aligned mask IoU of ``view`` with the anchor; 0 when either shows no subject."""
    a, b = s.views["anchor"], s.views[view]
    if a.box is None or b.box is None:
        return 0.0
    return measure.aligned_iou(a.mask, a.box, b.mask, b.box)


def _appearance_change(s: Prepared, view: str) -> float:
    """Aligned grey difference of ``view``'s subject from the anchor's; 1 when either shows none."""
    a, b = s.views["anchor"], s.views[view]
    if a.box is None or b.box is None:
        return 1.0
    return measure.appearance_change(a.image, a.mask, a.box, b.image, b.mask, b.box)


@register("bg_labels", "1 if the record's backgrounds B0 and B1 differ, 0 if equal", lambda c: (1, 1),
          nan_passes=True)
def _bg_labels(s: Prepared, cfg: QaConfig) -> Values:
    bg = s.record.get("background")
    if not isinstance(bg, dict) or "B0" not in bg or "B1" not in bg:
        return {"bg": float("nan")}
    return {"bg": float(bg["B0"] != bg["B1"])}


@register("bg_unchanged", "bg view: mean |RGB difference| / 255 from the anchor outside both subjects",
          lambda c: (c.variation.bg_min_change, 1))
def _bg_unchanged(s: Prepared, cfg: QaConfig) -> Values:
    return {"bg": _background_change(s, "bg")}


@register("bg_pose_changed", "bg view: subject mask IoU with the anchor's after aligning boxes",
          lambda c: (c.variation.bg_min_mask_iou, 1))
def _bg_pose_changed(s: Prepared, cfg: QaConfig) -> Values:
    return {"bg": _aligned_iou(s, "bg")}


@register("pose_labels", "pose change the record states, degrees (3D rotation; affine: flip = 180)",
          lambda c: (c.variation.pose_min_degrees, 180), nan_passes=True)
def _pose_labels(s: Prepared, cfg: QaConfig) -> Values:
    return {"pose": pose_label_degrees(s.record.get("pose"))}


@register("pose_unchanged", "pose view: max(1 - aligned mask IoU, 2 x aligned subject grey difference)",
          lambda c: (c.variation.pose_min_change, 1))
def _pose_unchanged(s: Prepared, cfg: QaConfig) -> Values:
    return {"pose": measure.pose_change(_aligned_iou(s, "pose"), _appearance_change(s, "pose"))}


@register("pose_bg_changed", "pose view: mean |RGB difference| / 255 from the anchor outside both subjects",
          lambda c: (0, c.variation.pose_max_bg_change))
def _pose_bg_changed(s: Prepared, cfg: QaConfig) -> Values:
    return {"pose": _background_change(s, "pose")}


# --- pose labels ------------------------------------------------------------------------------

def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rz(roll) @ Rx(pitch) @ Ry(yaw), degrees: the procedural renderer's convention."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def pose_label_degrees(pose: object) -> float:
    """How far the record says P1 is from P0, degrees; NaN for labels of an unknown kind.

    ``render``: angle of the 3D rotation taking P0 to P1. ``affine`` (P0 is the photo as
    is): 180 if P1 mirrors it (the other side shows), else |in-plane rotation| plus the
    perspective tilt, atan(2 x largest corner shift) (a 0.15 shift of a layer side tilts
    the plane by about 17 degrees). Scale is not pose and does not count.
    """
    if not isinstance(pose, dict):
        return float("nan")
    try:
        if pose.get("kind") == "render":
            r0 = _rotation(*(float(pose["P0"][k]) for k in ("yaw", "pitch", "roll")))
            r1 = _rotation(*(float(pose["P1"][k]) for k in ("yaw", "pitch", "roll")))
            cos = (np.trace(r1 @ r0.T) - 1) / 2
            return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))
        if pose.get("kind") == "affine":
            p1 = pose["P1"]
            if p1.get("flip"):
                return 180.0
            tilt = np.degrees(np.arctan(2 * max((abs(float(v)) for v in p1.get("perspective", [])), default=0.0)))
            return float(min(180.0, abs(float(p1.get("rotation", 0.0))) + tilt))
    except (KeyError, TypeError, ValueError):
        return float("nan")
    return float("nan")


def score_sample(s: Prepared, cfg: QaConfig) -> dict[str, Outcome | None]:
    """Outcome of every per-sample check; None where the group did not decode (only
    ``decode`` is judged then)."""
    out: dict[str, Outcome | None] = {}
    for name, check in CHECKS.items():
        if check.cross:
            continue
        if s.error is not None and name != "decode":
            out[name] = None
            continue
        out[name] = evaluate(check, check.score(s, cfg), cfg)
    return out


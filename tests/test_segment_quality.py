"""Issue 15: the mask-quality score, the multi-hypothesis ``grabcut`` backend, QA's ``mask_quality`` check and
the photo segmentation sheet.

Ground truth comes from composites made here: a procedural subject (its render's exact alpha) pasted on a
crop of a packaged photo (the background bank's ``photo`` kind), as ``bench/segment_data.py`` makes the
benchmark's composite set. Failures the issue saw are planted into those exact masks: a block of background
joined to the subject, the subject cut in half, a halo ring, a full-frame rectangle. The score must rank each
below the clean mask.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from spotdiff.common.images import Photo
from spotdiff.config import GenerateConfig
from spotdiff.config.qa import QaConfig
from spotdiff.generate import segment
from spotdiff.generate.background.bank import BackgroundBank
from spotdiff.generate.segment import grabcut, quality
from spotdiff.generate.sources.procedural import make_subject, render
from spotdiff.qa import checks

from helpers import ROOT

SIDE = 192


TEXTURES = ("brick", "grass", "gravel")
"""Packaged photos without a second subject in them (china's pagoda and flower's dahlia are subjects too)."""


def composite(i: int) -> tuple[np.ndarray, np.ndarray]:
    """(rgb, bool ground truth): procedural subject ``i`` at 55% of the side on a crop of a packaged texture
    photo (the background bank's ``photo`` kind)."""
    rng = np.random.default_rng([15, i])
    bg = BackgroundBank({"photo": 1.0}, SIDE).make(f"photo:{TEXTURES[i % 3]}:{1500 + i}")
    rgb, alpha = render(make_subject(int(rng.integers(1 << 30))), (float(rng.uniform(-60, 60)), 15.0, 0.0),
                        round(SIDE * 0.55))
    s = alpha.shape[0]
    x, y = int(rng.integers(8, SIDE - s - 8)), int(rng.integers(8, SIDE - s - 8))
    a = np.zeros((SIDE, SIDE), np.float32)
    a[y:y + s, x:x + s] = alpha
    fg = np.zeros((SIDE, SIDE, 3), np.float32)
    fg[y:y + s, x:x + s] = rgb
    img = (fg * a[..., None] + bg * (1 - a[..., None]) + 0.5).astype(np.uint8)
    return img, a >= 0.5


def plant(gt: np.ndarray, kind: str) -> np.ndarray:
    """The issue's failures, planted into a ground-truth mask."""
    m = gt.copy()
    ys, xs = np.nonzero(gt)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    if kind == "background block":  # a sill, a plank, a door-frame piece joined to the subject
        h = (y1 - y0) // 2
        m[max(0, y1 - h):min(SIDE, y1 + h), min(SIDE - 1, x1 - 2):min(SIDE, x1 + (x1 - x0) // 2)] = True
    elif kind == "cut in half":  # only one half of the subject
        m[:, (x0 + x1) // 2:] = False
    elif kind == "halo":  # a ring of the old background around the subject
        m = cv2.dilate(gt.astype(np.uint8), np.ones((11, 11), np.uint8)) > 0
    elif kind == "full frame":  # the packaged chelsea photo's failure
        m[:] = True
    return m


KINDS = ("background block", "cut in half", "halo", "full frame")


@pytest.fixture(scope="module")
def scenes():
    return [composite(i) for i in range(5)]


def test_planted_failures_score_below_the_clean_mask(scenes):
    for i, (rgb, gt) in enumerate(scenes):
        clean = quality.mask_quality(rgb, gt.astype(np.float32))
        assert 0.0 <= clean.score <= 1.0
        for kind in KINDS:
            bad = quality.mask_quality(rgb, plant(gt, kind).astype(np.float32))
            assert bad.score < clean.score, (f"scene {i}: {kind} scored {bad.score:.3f}, clean {clean.score:.3f}; "
                                             f"cues {bad.cues} vs {clean.cues}")


def test_score_is_the_same_function_for_every_backend(scenes):
    """``segment.segment`` puts the quality score in ``score`` whatever the backend; the backend's own
    confidence moves to ``extra['backend_score']``."""
    rgb, gt = scenes[0]
    alpha = (gt * 255).astype(np.uint8)
    photo = Photo(rgb, alpha, (SIDE, SIDE))
    seg = segment.segment("alpha", photo, "thing")
    assert seg.backend == "alpha" and seg.extra["backend_score"] == pytest.approx(1.0)
    assert seg.score == pytest.approx(quality.mask_quality(photo, seg.mask).score)
    seg = segment.segment("grabcut", Photo(rgb, None, (SIDE, SIDE)), "thing")
    assert seg.score == pytest.approx(quality.mask_quality(rgb, seg.mask).score)


def test_grabcut_picks_a_good_hypothesis_and_is_deterministic(scenes):
    ious = []
    for rgb, gt in scenes:
        photo = Photo(rgb, None, (SIDE, SIDE))
        a = segment.segment("grabcut", photo, "thing")
        b = segment.segment("grabcut", Photo(rgb.copy(), None, (SIDE, SIDE)), "thing")
        assert np.array_equal(a.mask, b.mask) and a.score == b.score
        names = [name for name, _ in grabcut.hypotheses(photo)]
        assert names and set(names) <= {"person map", "saliency GrabCut", "colour models"}, names
        pred = a.mask >= 0.5
        ious.append(np.count_nonzero(pred & gt) / np.count_nonzero(pred | gt))
    assert np.mean(ious) > 0.75, ious


def test_box_hint_is_a_hypothesis():
    rgb, _ = composite(0)
    names = [n for n, _ in grabcut.hypotheses(Photo(rgb, None, (SIDE, SIDE), (0.1, 0.1, 0.9, 0.9)))]
    assert "box" in names


class _Prepared:
    def __init__(self, record):
        self.record = record
        self.views = {"anchor": None, "bg": None, "pose": None}


def test_qa_mask_quality_check():
    cfg = QaConfig()
    check = checks.CHECKS["mask_quality"]
    low = checks.evaluate(check, check.score(_Prepared({"segment": {"backend": "grabcut", "score": 0.1}}), cfg), cfg)
    assert not low.passed and low.score == pytest.approx(0.1)
    ok = checks.evaluate(check, check.score(_Prepared({"segment": {"backend": "mediapipe", "score": 0.9}}), cfg), cfg)
    assert ok.passed
    exact = checks.evaluate(check, check.score(_Prepared({"segment": {"backend": "render", "score": 1.0}}), cfg), cfg)
    assert exact.passed and math.isnan(exact.score)


def test_photo_sheet_shows_photo_cutout_and_outline():
    from spotdiff.generate.photo_sheet import folder_items, photo_sheet, tiles

    folder = ROOT / "data/photos/dreambench-dev"
    items = [it for it in folder_items(folder) if it[1].startswith("teapot/")][:2]
    cfg = GenerateConfig(folder=str(folder), image_size=128)
    sheet, rows = photo_sheet(items, cfg)
    assert len(rows) == 2 and sheet.width > 0 and sheet.height > 0
    assert all(r.backend == "grabcut" and 0 <= r.score <= 1 and r.kept == (r.score >= cfg.min_segment_score)
               for r in rows)
    rgb, gt = composite(1)
    photo, cut, outline = tiles(rgb, gt.astype(np.float32))
    assert np.array_equal(photo, rgb)
    assert (cut[~gt] != rgb[~gt]).any(axis=-1).mean() > 0.9  # the background is replaced by the checkerboard
    red = (outline[..., 0] == 255) & (outline[..., 1] == 0) & (outline[..., 2] == 0)
    edge = cv2.dilate(gt.astype(np.uint8), np.ones((5, 5), np.uint8)) != cv2.erode(gt.astype(np.uint8),
                                                                                   np.ones((5, 5), np.uint8))
    assert red.any() and red[~edge].mean() < 0.05  # the outline follows the mask's edge

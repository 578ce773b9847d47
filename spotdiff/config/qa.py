"""``qa`` section of params.yaml: every threshold of the QA stage.

Scores follow one convention: a check passes when its score lies in ``[low, high]``
(bounds inclusive). Defaults were set on generated data (procedural + packaged photos at
96, 128 and 256 px, ~580 groups), with defects planted as in ``tests/test_qa.py``: each
check rejects at most ~2% of clean groups and sits clear of the defects it is for.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from spotdiff.config.base import Section, check_range
from spotdiff.config.embed import EmbedConfig

EncoderName = Literal["descriptor", "embed"]


class MaskQa(Section):
    """Subject mask of every view (binarised at 128 of 255)."""

    area: tuple[float, float] = (0.01, 0.64)
    """Subject pixels / image pixels, allowed range. Default [0.01, 0.64]: below, the subject
    is a speck or the mask is empty; above, there is too little background to vary."""
    min_largest_component: float = Field(0.9, ge=0, le=1)
    """Least share of the subject pixels in the largest 8-connected component. Default 0.9:
    a segmentation in pieces (a subject split, stray blobs) fails."""
    exact_backends: tuple[str, ...] = ("render", "alpha")
    """Mask backends (the record's ``segment.backend``) whose masks are exact: connectivity and
    mask quality are not judged for them, since a detached part is then the subject's geometry
    (a procedural mushroom with a second small mushroom beside it, a pair of sunglasses cut out by
    hand), not a segmentation error. Default ["render", "alpha"]: procedural renders, and photos
    whose own transparency is the mask (a user's cut-out)."""
    min_bbox_side: float = Field(0.04, ge=0, le=1)
    """Least shorter side of the subject's bounding box, as a fraction of the image side.
    Default 0.04 (5 px at 128 px): slivers and one-line masks fail."""
    min_quality: float = Field(0.25, ge=0, le=1)
    """Least mask-quality score of a photo group's subject mask (the record's ``segment.score``:
    ``spotdiff.generate.segment.quality``, the estimated probability that the mask's IoU with the subject
    is >= 0.8, the same function for every backend; calibration in docs/benchmarks.md). Groups with exact
    masks (``exact_backends``) are not judged. Default 0.25, the same as ``generate.min_segment_score``:
    QA catches groups generated with a lower bar, or by an older generator."""
    max_border_cut: float = Field(0.05, ge=0, le=1)
    """Most subject pixels on the image's outermost rows/columns, as a fraction of the
    perimeter of the subject's bounding box. Default 0.05: a subject may graze the edge; one
    with a whole side cut off (about 0.25) fails."""

    @field_validator("area")
    @classmethod
    def _area(cls, v: tuple[float, float]) -> tuple[float, float]:
        return check_range(v, 0, 1)


class QualityQa(Section):
    """Image quality of every view: cleanvision-style scores in [0, 1], low = issue present,
    measured on the view shrunk to ``qa.analysis_side``."""

    min_sharpness: float = Field(0.5, ge=0, le=1)
    """Least sharpness (Laplacian / gradient ratio of the strongest edges, 1 = crisp). Clean
    views scored >= 0.59; a Gaussian blur of sigma 1 px at 128 px scores about 0.35. Default 0.5."""
    min_dark: float = Field(0.1, ge=0, le=1)
    """Least 95th-percentile brightness (0 = black frame). Clean views >= 0.27. Default 0.1."""
    min_light: float = Field(0.1, ge=0, le=1)
    """Least 1 - 5th-percentile brightness (0 = white frame). Clean views >= 0.38. Default 0.1."""
    min_information: float = Field(0.2, ge=0, le=1)
    """Least entropy of the brightness histogram, / 6 bits (0 = one flat colour). Clean views
    >= 0.32. Default 0.2."""


class DuplicateQa(Section):
    """Duplicates between samples: byte-identical JPEG views, and near duplicates by a 256-bit
    perceptual hash."""

    min_hash_distance: float = Field(0.07, ge=0, le=1)
    """A view closer than this Hamming distance (fraction of the 256 hash bits) to a view of
    an earlier sample is a near duplicate. Default 0.07 (18 bits): re-encoding, resizing or
    a small brightness change moves a hash by <= 0.03; unrelated generated views stayed
    >= 0.15 apart. Views of one sample are meant to look alike: the variation checks judge
    those, and only exact copies among them count here. The search finds every pair closer than
    this, exactly, and no farther one: a view with none that close scores NaN (passes)."""


class IdentityQa(Section):
    """Same subject in every view: cosine between the subject crops' encoder vectors.

    Bounds belong to the encoder (each has its own cosine scale): recalibrate them when
    switching ``encoder``."""

    encoder: EncoderName = "descriptor"
    """``descriptor``: hue/saturation + gradient-orientation histograms of the solid subject
    pixels (no model, ~0.4 ms a crop). ``embed``: ``spotdiff.model.embed.ImageEncoder`` (CLIP
    architecture, needs torch). Default descriptor: on generated groups it separates a
    subject from other subjects with ROC AUC 0.993-0.996, the embedded seeded CLIP model
    (random weights) with 0.93-0.95 at 20x the cost. A trained CLIP (``embed.backend:
    clip``) is worth measuring where weights are at hand."""
    bg_min: float = Field(0.85, ge=-1, le=1)
    """Least cosine between the anchor's and the bg view's subject (same pixels by design:
    clean >= 0.89 with the descriptor, JPEG bleeding of the new background into thin parts
    accounting for the rest; 2.5% of other subjects reach 0.85). Default 0.85."""
    pose: tuple[float, float] = (0.75, 1.0)
    """Allowed cosine range between the anchor's and the pose view's subject. Low bound:
    identity kept (descriptor: 99% of clean pairs >= 0.75, 7% of pairs of different
    subjects reach it, mostly same class and colour). High bound: copy-paste "variation";
    0.98 suits a pose-aware encoder (embed), but the descriptor is pose-invariant by design
    (clean pairs reach 0.9999), so its default 1.0 leaves copies to ``pose_unchanged`` and
    ``duplicate_exact``, which see them in pixels. Default [0.75, 1.0]."""
    embed: EmbedConfig | None = None
    """Encoder ``embed`` only: the backbone when ``run_qa`` is not handed one (the stage hands it params.yaml's
    shared ``embed:`` section, so this is for library callers). Default None: ``EmbedConfig``'s defaults."""

    @field_validator("pose")
    @classmethod
    def _pose(cls, v: tuple[float, float]) -> tuple[float, float]:
        return check_range(v, -1, 1)


class VariationQa(Section):
    """Each view varies exactly one factor: ``bg`` the background, ``pose`` the pose."""

    bg_min_change: float = Field(0.03, ge=0, le=1)
    """bg view: least mean |RGB difference| / 255 from the anchor where neither shows the
    subject (clean >= 0.05; 0.03 = 7.7 grey levels). Default 0.03."""
    bg_min_mask_iou: float = Field(0.9, ge=0, le=1)
    """bg view: least IoU of its subject mask with the anchor's after aligning boxes (pose
    kept; clean = 1.0). Default 0.9."""
    pose_max_bg_change: float = Field(0.02, ge=0, le=1)
    """pose view: most mean |RGB difference| / 255 from the anchor where neither shows the
    subject (background kept; clean <= 0.005, JPEG noise). Default 0.02."""
    pose_min_change: float = Field(0.1, ge=0, le=1)
    """pose view: least pose change, max(1 - aligned mask IoU, 2 x aligned grey difference of
    the subject) (clean >= 0.11; the anchor with 1-2 px / 1 degree jitter scores ~0.04). Default 0.1."""
    pose_min_degrees: float = Field(10.0, ge=0, le=180)
    """Least pose change the labels record, degrees: 3D rotation angle between P0 and P1 for
    rendered subjects; for affine photo poses 180 if flipped, else |rotation| plus the
    perspective tilt atan(2 x largest corner shift). Default 10."""


class ReportQa(Section):
    """What the report shows."""

    worst_examples: int = Field(6, ge=1, le=50)
    """Rows in each check's contact sheet of worst examples."""


class QaConfig(Section):
    """``qa`` stage: score every generated group, quarantine failures with reasons, report."""

    analysis_side: int = Field(128, ge=32, le=1024)
    """Quality, background, hash and identity measurements run on views shrunk to this side,
    pixels, so thresholds mean the same at every image size. Default 128."""
    min_side: int = Field(64, ge=8)
    """Least image side, pixels (views must also all have the same size as their masks and
    as ``image_size`` in the record). Default 64."""
    aspect: tuple[float, float] = (0.99, 1.01)
    """Allowed width / height of every view. Default [0.99, 1.01] (square views)."""
    mask: MaskQa = MaskQa()
    quality: QualityQa = QualityQa()
    duplicates: DuplicateQa = DuplicateQa()
    identity: IdentityQa = IdentityQa()
    variation: VariationQa = VariationQa()
    report: ReportQa = ReportQa()
    workers: int = Field(0, ge=0, le=256)
    """Worker processes for the per-sample pass; 0 = one per CPU core. The ``embed`` encoder
    always runs in-process (one model, not one per worker)."""

    @field_validator("aspect")
    @classmethod
    def _aspect(cls, v: tuple[float, float]) -> tuple[float, float]:
        return check_range(v, 0.01, 100)

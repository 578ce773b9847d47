"""``generate`` section: sources, segmentation, pose, placement, backgrounds, diffusion backends."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from spotdiff.config.base import Section


SourceName = Literal["procedural", "packaged", "folder", "diffusion"]
SegmenterName = Literal["auto", "alpha", "grabcut", "mediapipe", "sam"]
BackgroundKind = Literal["noise", "gradient", "pattern", "horizon", "photo", "folder", "diffusion"]


class SamConfig(Section):
    """``generate.sam``: the segment-anything backend (used when ``generate.segment = sam``)."""

    model_type: Literal["vit_b", "vit_l", "vit_h"] = "vit_b"
    """SAM image-encoder size; must match the checkpoint."""
    checkpoint: str | None = None
    """Local path of the segment-anything checkpoint (a state dict saved by torch). Required to use
    the backend; relative paths are resolved from the working directory. Never downloaded."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where SAM runs. auto: CUDA when torch sees a GPU, else CPU."""
    points: int = Field(3, ge=0)
    """Positive prompt points placed inside the coarse mask, in addition to the box (at most this
    many: a small or thin coarse mask may yield fewer). 0 = box prompt only."""


class PoseConfig(Section):
    """How the ``pose`` view differs from the anchor."""

    photo: Literal["affine"] = "affine"
    """Pose variation for photo subjects (procedural subjects are always re-rendered)."""
    min_yaw_delta: float = Field(60.0, ge=0, le=180)
    """Procedural subjects: least |yaw(P1) - yaw(P0)|, degrees."""
    max_pitch: float = Field(25.0, ge=0, le=89)
    """Procedural subjects: pitch drawn in [-max_pitch, max_pitch], degrees."""
    max_roll: float = Field(10.0, ge=0, le=89)
    """Roll drawn in [-max_roll, max_roll], degrees (both sources)."""
    affine_scale: tuple[float, float] = (0.8, 1.1)
    """Photo subjects: scale factor range of the pose view."""
    affine_rotation: float = Field(20.0, ge=0, le=90)
    """Photo subjects: in-plane rotation drawn in [-x, x], degrees."""
    affine_perspective: float = Field(0.15, ge=0, le=0.4)
    """Photo subjects: corner displacement of the perspective warp, as a fraction of the layer size."""
    flip_probability: float = Field(0.5, ge=0, le=1)
    landmarks: bool = True
    """Detect 33 body landmarks on photos of people (class in ``spotdiff.generate.segment.PERSON_CLASSES``)
    and record them, moved with the pixels, for every view (``landmarks`` in the group's JSON)."""
    landmarks_model: str | None = None
    """Local path of a MediaPipe Tasks pose-landmarker asset (``.task``), used instead of the pose
    model bundled with mediapipe. Relative paths are resolved from the working directory. Never
    downloaded; a missing file is an error when generation starts."""

    @field_validator("affine_scale")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0.2 <= lo <= hi <= 3.0:
            raise ValueError(f"needs 0.2 <= low <= high <= 3.0, got [{lo}, {hi}]")
        return v


class PlacementConfig(Section):
    """Where the subject lands on the canvas (same placement for all three views)."""

    scale: tuple[float, float] = (0.55, 0.85)
    """Subject layer side as a fraction of the image side."""
    jitter: float = Field(0.1, ge=0, le=0.3)
    """Centre offset drawn in [-jitter, jitter] image sides, clipped so the subject stays inside."""

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0.1 <= lo <= hi <= 1.0:
            raise ValueError(f"needs 0.1 <= low <= high <= 1.0, got [{lo}, {hi}]")
        return v


class DiffusionConfig(Section):
    """``generate.diffusion``: Stable Diffusion subjects (source ``diffusion``), scene backgrounds
    (background kind ``diffusion``) and optional edge harmonisation by inpainting."""

    model: str | None = None
    """Text-to-image Stable Diffusion weights: a local pipeline folder (with model_index.json) or a hub id
    already in the local Hugging Face cache. Relative paths are resolved from the working directory.
    Required when the diffusion source or background kind has weight > 0. Never downloaded."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA (fp16) when torch sees a GPU, else CPU (fp32)."""
    steps: int = Field(25, ge=1, le=1000)
    """Denoising steps per image (scheduler steps, not seconds)."""
    guidance: float = Field(7.0, ge=0.0, le=50.0)
    """Classifier-free guidance scale; <= 1 switches guidance off (one UNet pass per step, not two)."""
    image_size: int = Field(512, ge=64, le=2048)
    """Side of every generated image, pixels (square; a multiple of 8). Subjects are cut out of it and
    backgrounds resized from it to ``generate.image_size``."""
    subject_templates: list[str] = Field(
        default_factory=lambda: ["a photo of a {attribute} {cls} on a plain white background, studio lighting, centered"],
        min_length=1)
    """Subject prompts; ``{attribute}`` and ``{cls}`` are filled from ``attributes`` and ``classes``. A plain
    backdrop keeps segmentation (GrabCut) reliable."""
    attributes: list[str] = Field(
        default_factory=lambda: ["red", "blue", "wooden", "shiny", "small", "vintage"], min_length=1)
    """Adjectives drawn per subject."""
    classes: list[str] = Field(
        default_factory=lambda: ["teapot", "backpack", "sneaker", "toy robot", "vase", "clock"], min_length=1)
    """Class nouns drawn per subject; the drawn noun is the group's class name."""
    scene_prompts: list[str] = Field(
        default_factory=lambda: ["a sunny beach", "a snowy street", "a forest clearing", "a modern kitchen",
                                 "a city park"], min_length=1)
    """Background prompts (background kind ``diffusion``); a background id names the prompt by its index
    here, so editing this list changes what existing ids regenerate."""
    inpaint: bool = False
    """Repaint a thin band around each pasted subject with ``inpaint_model`` to blend its edge."""
    inpaint_model: str | None = None
    """Stable Diffusion inpainting weights (UNet with 9 input channels), local folder or cached hub id.
    Required when ``inpaint`` is true. Never downloaded."""
    inpaint_band: int = Field(8, ge=1, le=128)
    """Half-width of the repainted band on each side of the subject's outline, pixels."""

    @field_validator("subject_templates")
    @classmethod
    def _templates(cls, v: list[str]) -> list[str]:
        for t in v:
            try:
                t.format(attribute="x", cls="y")
            except (KeyError, IndexError, ValueError) as err:
                raise ValueError(f"template {t!r}: only {{attribute}} and {{cls}} may be used ({err!r})") from None
        return v

    @field_validator("image_size")
    @classmethod
    def _multiple_of_8(cls, v: int) -> int:
        if v % 8:
            raise ValueError(f"must be a multiple of 8 (the autoencoder halves the side three times), got {v}")
        return v

    @model_validator(mode="after")
    def _inpaint_model(self) -> "DiffusionConfig":
        if self.inpaint and not self.inpaint_model:
            raise ValueError("inpaint = true but generate.diffusion.inpaint_model is not set (weights are never downloaded)")
        return self


class ProceduralConfig(Section):
    """``generate.procedural``: the procedural source's subjects."""

    markers: bool = False
    """Paint orientation markers on every procedural subject: a magenta ball on a stalk out of its front
    and a cyan one out of its back, so that absolute yaw is visible and means the same thing across
    identities. They are not part of the object: a dataset user gets cleaner subjects without them, and
    the evaluation must measure pose leakage without them. Recorded per group (``orientation_markers``
    in the group's JSON) and stated in the dataset card. Default false."""


class GenerateConfig(Section):
    """``generate`` stage: subject groups (anchor, bg, pose) from mixed sources."""

    seed: int = Field(1234, ge=0)
    n_groups: int = Field(300, ge=1, le=10_000_000)
    """Total subject groups. Split between sources by weight; photo sources (packaged,
    folder) cycle through their photos in sorted order, so a folder of N photos with
    n_groups = N uses each photo once."""
    image_size: int = Field(256, ge=32, le=4096)
    """Side of every output view, pixels (square)."""
    sources: dict[SourceName, float] = Field(default_factory=lambda: {"procedural": 0.9, "packaged": 0.1})
    """Source name -> weight. Groups are split between sources in proportion to the weights."""
    procedural: ProceduralConfig = ProceduralConfig()
    folder: str | None = None
    """Folder source root: one subfolder per subject, optional classes.csv (subject,class)."""
    segment: SegmenterName = "auto"
    """Segmentation of photos. auto: alpha if the photo has one, mediapipe for people, grabcut otherwise."""
    sam: SamConfig = SamConfig()
    """The ``sam`` segmentation backend (used when segment = sam): model_type, checkpoint, device, points."""
    diffusion: DiffusionConfig = DiffusionConfig()
    """Stable Diffusion subjects (source ``diffusion``), scene backgrounds (kind ``diffusion``) and edge harmonisation."""
    min_segment_score: float = Field(0.25, ge=0, le=1)
    """Photos whose mask-quality score is lower are rejected (reason ``segmentation_low_score``). The score
    (``spotdiff.generate.segment.quality``) is the same function of photo and mask for every backend: the
    estimated probability that the mask's IoU with the subject is >= 0.8. Default 0.25: on the ground-truth
    benchmark (docs/benchmarks.md) it loses <= 10% of good masks. A mask the photo carries (its transparency:
    backend ``alpha``) is the user's own and never rejected by it."""
    pose: PoseConfig = PoseConfig()
    placement: PlacementConfig = PlacementConfig()
    backgrounds: dict[BackgroundKind, float] = Field(
        default_factory=lambda: {"noise": 1.0, "gradient": 1.0, "pattern": 1.0, "horizon": 1.0, "photo": 1.0}
    )
    """Background kind -> weight."""
    background_folder: str | None = None
    supersample: int = Field(2, ge=1, le=4)
    """Rays per pixel side for procedural renders (exact soft masks)."""
    jpeg_quality: int = Field(92, ge=50, le=100)
    chunk_size: int = Field(16, ge=1, le=10_000)
    """Groups per work unit; chunks run in parallel."""
    workers: int = Field(0, ge=0, le=256)
    """Worker processes; 0 = one per CPU core."""
    max_pixels: int = Field(40_000_000, ge=1)
    """Photos above this many pixels are rejected unread (decompression bombs)."""
    min_side: int = Field(64, ge=8)
    """Photos with a shorter side are rejected."""

    @field_validator("sources", "backgrounds")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if w < 0}
        if bad:
            raise ValueError(f"weights must be >= 0, got {bad}")
        if not any(w > 0 for w in v.values()):
            raise ValueError(f"at least one weight must be > 0, got {dict(v)}")
        return v

    @model_validator(mode="after")
    def _folders(self) -> "GenerateConfig":
        if self.sources.get("folder", 0) > 0 and not self.folder:
            raise ValueError("sources.folder has weight > 0 but generate.folder is not set")
        if self.backgrounds.get("folder", 0) > 0 and not self.background_folder:
            raise ValueError("backgrounds.folder has weight > 0 but generate.background_folder is not set")
        if (self.sources.get("diffusion", 0) > 0 or self.backgrounds.get("diffusion", 0) > 0) and not self.diffusion.model:
            raise ValueError("diffusion source or background has weight > 0 but generate.diffusion.model is not set "
                             "(a local pipeline folder or a cached hub id; weights are never downloaded)")
        if self.segment == "sam" and not self.sam.checkpoint:
            raise ValueError("segment = sam but generate.sam.checkpoint is not set (weights are never downloaded)")
        return self

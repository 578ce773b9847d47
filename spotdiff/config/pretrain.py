"""``pretrain`` section: self-supervised pre-training of the embedded backbone (stage ``pretrain``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from spotdiff.config.base import Section, check_range


class AugmentConfig(Section):
    """``pretrain.augment``: how the two views of one pool image differ. None of them changes pose or background
    (no flips: a mirror image is another yaw; no large crops: they cut the background away), so the backbone
    learns to ignore colour, exposure, blur and small shifts, not the factors the encoder must find."""

    crop_scale: tuple[float, float] = (0.7, 1.0)
    """Random resized crop: the area kept, as a fraction of the image."""
    crop_ratio: tuple[float, float] = (0.85, 1.18)
    """Random resized crop: width / height of the cut (resized back to a square)."""
    brightness: float = Field(0.3, ge=0, le=1)
    contrast: float = Field(0.3, ge=0, le=1)
    saturation: float = Field(0.3, ge=0, le=1)
    """Colour jitter: each factor drawn from [1 - x, 1 + x]."""
    hue: float = Field(0.03, ge=0, le=0.5)
    """Colour jitter: the RGB cube turned about its grey axis by up to this fraction of a full turn."""
    blur: float = Field(0.3, ge=0, le=1)
    """Probability of a 3x3 box blur."""

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        return check_range(v, 0.05, 1.0)

    @field_validator("crop_ratio")
    @classmethod
    def _ratio(cls, v: tuple[float, float]) -> tuple[float, float]:
        return check_range(v, 0.25, 4.0)


class PretrainConfig(Section):
    """``pretrain``: SimCLR (NT-Xent) on a pool of procedural renders disjoint from generate's subjects.

    The pool has ``subjects`` identities (seeds derived from ``seed``, never from ``generate.seed``), each shown in
    2 x 2 scenes (two random poses x two random procedural backgrounds, one random light), so every batch holds
    scenes that differ only in pose or only in background: telling them apart is the contrastive task.
    Demo profile: ~2.5 CPU-minutes (4.5 minutes wall on 2 shared cores). ``full`` setting:
    ``spotdiff pretrain -S pretrain.subjects=4096 -S pretrain.steps=4000 -S pretrain.image_size=224`` (hours on a
    CPU). An opt-in stage: ``embed.embedded.weights`` stays null (the seeded random backbone) unless set."""

    seed: int = Field(0, ge=0)
    """Seeds the pool, the initial weights' draw order of batches and augmentations (the initial weights are
    ``embed.embedded``'s seeded ones)."""
    subjects: int = Field(192, ge=2, le=1_000_000)
    """Procedural identities in the pool; 4 scenes each."""
    render_size: int = Field(128, ge=32, le=1024)
    """Side of each pool image, pixels (resized to ``image_size`` by the crop)."""
    image_size: int = Field(112, ge=16, le=2048)
    """Training input side, pixels. Below ``embed.image_size`` the position embeddings are interpolated while
    training (4x cheaper at half the side); the saved weights keep ``embed.image_size``'s table."""
    steps: int = Field(150, ge=1, le=10_000_000)
    batch_size: int = Field(48, ge=8, le=65536)
    """Pool images per step (two views each); a multiple of 4 (whole subjects)."""
    lr: float = Field(0.001, gt=0, le=1)
    weight_decay: float = Field(0.05, ge=0, le=10)
    warmup: int = Field(10, ge=0)
    """Linear warm-up steps, then cosine decay to 0."""
    temperature: float = Field(0.2, gt=0, le=10)
    """NT-Xent temperature."""
    head_dim: int = Field(128, ge=8, le=4096)
    """Output of the projection head the loss reads (dropped after training, as in SimCLR)."""
    label_weight: float = Field(0.0, ge=0, le=100)
    """Weight of a second term that reads the renderer's own labels of each pool image linearly from the feature
    (sin and cos of the yaw, the background kind); 0 = SimCLR alone (self-supervised)."""
    augment: AugmentConfig = AugmentConfig()

    @field_validator("batch_size")
    @classmethod
    def _whole_subjects(cls, v: int) -> int:
        if v % 4:
            raise ValueError(f"must be a multiple of 4 (a subject's 4 scenes go together), got {v}")
        return v

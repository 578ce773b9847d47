"""``embed`` section: the image encoder (backbone) shared by QA, train and evaluate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from spotdiff.config.base import Section


class EmbeddedModelConfig(Section):
    """``embed.embedded``: sizes of the seeded CLIP-architecture vision model (backend ``embedded``)."""

    hidden_size: int = Field(128, ge=8, le=4096)
    """Width of the transformer (token features), channels."""
    num_hidden_layers: int = Field(4, ge=1, le=48)
    num_attention_heads: int = Field(4, ge=1, le=64)
    """Must divide ``hidden_size``."""
    intermediate_size: int = Field(256, ge=8, le=16384)
    """Width of each MLP block, channels."""
    patch_size: int = Field(16, ge=2, le=256)
    """Side of one image patch (one token), pixels."""
    projection_dim: int = Field(128, ge=8, le=4096)
    """Length of the embedding ``embed`` returns."""
    seed: int = Field(0, ge=0)
    """Seeds the weights: the same seed gives the same weights and embeddings on every run."""
    weights: str | None = None
    """Trained weights for this architecture (``data/pretrain/backbone.safetensors``, which the opt-in ``pretrain``
    stage writes), loaded over the seeded ones; null = the seeded random backbone (the default). Relative paths
    are resolved from the working directory. A missing file, or weights of another architecture, is an error.
    Like ``embed.model``, the file is not a dvc dep: the weights digest in the backbone's identity makes train's
    feature cache and checkpoint, and evaluate's check of the model's backbone, tell two files apart."""

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "EmbeddedModelConfig":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must divide "
                             f"hidden_size ({self.hidden_size})")
        return self


class EmbedConfig(Section):
    """``embed``: the image encoder shared by QA and training."""

    backend: Literal["embedded", "clip"] = "embedded"
    """embedded: seeded small CLIP-architecture model, no file needed. clip: trained weights from ``model``."""
    model: str | None = None
    """Backend ``clip``: a local model folder or a hub id already in the local Hugging Face cache.
    Relative paths are resolved from the working directory. Never downloaded."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA (fp16) when torch sees a GPU, else CPU (fp32)."""
    batch_size: int = Field(32, ge=1, le=65536)
    """Images per forward pass; results do not depend on it (up to float rounding)."""
    image_size: int = Field(224, ge=16, le=2048)
    """Side of the square model input, pixels: photos are resized (shorter side) and centre-cropped
    to it. Backend ``clip``: the checkpoint fixes it; setting a different value is an error."""
    embedded: EmbeddedModelConfig = EmbeddedModelConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "EmbedConfig":
        if self.backend == "clip" and not self.model:
            raise ValueError("backend 'clip' needs embed.model: a local model folder or a cached hub id")
        if self.backend == "embedded" and self.embedded.patch_size > self.image_size:
            raise ValueError(f"embedded.patch_size ({self.embedded.patch_size}) is larger than "
                             f"image_size ({self.image_size})")
        return self

"""Typed configuration loaded from ``params.yaml``.

One section per pipeline stage (``generate``, ``shard``, ...). Every section is
strict: an unknown key, a wrong type or an out-of-range value fails before any
work starts, with a message that names the key, the value and what is allowed.

``load_params(path, overrides)`` is the single entry point; overrides are
``"section.key=value"`` strings (YAML-parsed values), as ``dvc exp run -S`` uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spotdiff.qa.config import QaConfig


class ConfigError(ValueError):
    """A params.yaml problem, already phrased for the person who wrote the file."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


SourceName = Literal["procedural", "packaged", "folder", "diffusion"]
SegmenterName = Literal["auto", "alpha", "grabcut", "mediapipe", "sam"]
BackgroundKind = Literal["noise", "gradient", "pattern", "horizon", "photo", "folder", "diffusion"]


class SamConfig(_Section):
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


class PoseConfig(_Section):
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
    """Detect 33 body landmarks on photos of people (class in ``spotdiff.segment.PERSON_CLASSES``)
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


class PlacementConfig(_Section):
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


class DiffusionConfig(_Section):
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
            raise ValueError(f"inpaint = true but generate.diffusion.inpaint_model is not set (weights are never downloaded)")
        return self


class GenerateConfig(_Section):
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
    folder: str | None = None
    """Folder source root: one subfolder per subject, optional classes.csv (subject,class)."""
    segment: SegmenterName = "auto"
    """Segmentation of photos. auto: alpha if the photo has one, mediapipe for people, grabcut otherwise."""
    sam: SamConfig = SamConfig()
    """The ``sam`` segmentation backend (used when segment = sam): model_type, checkpoint, device, points."""
    diffusion: DiffusionConfig = DiffusionConfig()
    """Stable Diffusion subjects (source ``diffusion``), scene backgrounds (kind ``diffusion``) and edge harmonisation."""
    min_segment_score: float = Field(0.6, ge=0, le=1)
    """Photos whose segmentation confidence is lower are rejected (reason ``segmentation_low_score``)."""
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


class SplitConfig(_Section):
    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sum(self) -> "SplitConfig":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class EmbeddedModelConfig(_Section):
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

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "EmbeddedModelConfig":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must divide "
                             f"hidden_size ({self.hidden_size})")
        return self


class EmbedConfig(_Section):
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


class ShardConfig(_Section):
    """``shard`` stage: WebDataset tars split by subject."""

    split: SplitConfig = SplitConfig()
    split_seed: int = Field(0, ge=0)
    """Salt of the subject -> split hash; changing it reshuffles subjects between splits."""
    max_samples: int = Field(64, ge=1)
    """Most subject groups per tar."""
    max_bytes: int = Field(64_000_000, ge=10_000)
    """Most bytes per tar (a group larger than this gets a tar of its own)."""
    contact_sheet_groups: int = Field(12, ge=1, le=200)


class LossWeights(_Section):
    """``train.weights``: multipliers of the stage-1 loss terms (0 switches a term off)."""

    subject: float = Field(1.0, ge=0)
    """Supervised contrastive loss on subject features (same subject agree, others differ)."""
    pose: float = Field(1.0, ge=0)
    """Pose expert: anchor and bg views (same pose) agree, the pose view differs."""
    background: float = Field(1.0, ge=0)
    """Background expert: anchor and pose views (same background) agree, the bg view differs."""
    orthogonality: float = Field(1.0, ge=0)
    """Mean squared cosine between subject, pose and background features of the same image."""
    invariance: float = Field(10.0, ge=0)
    """Share of the subject feature's variance explained by the yaw bin, plus that explained by the
    background kind (``losses.factor_invariance``): the subject feature's mean must not depend on pose or
    background. 10: at 1 the yaw leakage did not move (issue 6, docs/evaluation.md)."""


class Stage2Config(_Section):
    """``train.stage2``: alignment module + decoupled cross-attention on a Stable Diffusion UNet."""

    model: str | None = None
    """Stable Diffusion pipeline (local folder or cached hub id). null = stage 2 off (the demo profile)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tokens: int = Field(4, ge=4, le=4)
    """Conditioning tokens the alignment module makes from one subject feature. Fixed at 4: diffusers'
    ``load_ip_adapter`` reads a plain image projection as exactly 4 tokens."""
    steps: int = Field(1000, ge=1)
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(4, ge=1)
    resolution: int = Field(512, ge=64, le=2048)
    """Training image side, pixels (a multiple of 8)."""


class TrainConfig(_Section):
    """``train`` stage: SpotDiff encoder (experts, subject head, orthogonality) on backbone features."""

    seed: int = Field(0, ge=0)
    """Seeds the heads' initial weights and the batch order: same seed, same loss curve."""
    backbone_trainable: bool = False
    """Fine-tune the backbone with the heads (only sensible for the small embedded encoder, which has
    no pre-training). False (the paper's setting): frozen, features computed once and cached."""
    hidden: int = Field(256, ge=8, le=16384)
    """Width of the experts' and subject head's hidden layer, channels."""
    feature_dim: int = Field(64, ge=4, le=4096)
    """Length of the subject, pose and background features."""
    project: bool = False
    """Also remove, per image, the subject feature's components along the pose and background features
    (an explicit projection on top of the orthogonality loss). Off by default so that the measured
    orthogonality is learned, not guaranteed by construction."""
    subject_window: float = Field(0.5, gt=0, le=1)
    """Side of the central window of the backbone feature's pooled patch grid that the subject head
    reads, as a fraction of the image side (rounded to whole cells, centred); 1 = the whole feature,
    image embedding included. The subject is centred in every view and the background surrounds it, so
    the central cells carry the subject; the pose and background experts always read everything."""
    shared_background_positives: bool = True
    """Count a group's anchor and pose views (same background B0, different pose) as a positive pair in
    the subject loss. True when the subject head reads a central window (``subject_window`` < 1): the
    pair then teaches pose invariance, and the background around the subject is out of the head's view.
    With the whole feature it rewarded encoding the shared background; set it False there."""
    epochs: int = Field(40, ge=1)
    """Passes over the training groups (an epoch = ceil(groups / batch_size) steps)."""
    batch_size: int = Field(64, ge=2)
    """Groups per optimiser step, summed over all processes (the global batch)."""
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    temperature: float = Field(0.1, gt=0, le=10)
    """Softmax temperature of the subject contrastive loss."""
    margin: float = Field(0.5, ge=0, le=2)
    """Cosine margin by which an expert's same-factor pair must beat its changed-factor pair."""
    weights: LossWeights = LossWeights()
    checkpoint_every: int = Field(100, ge=1)
    """Steps between checkpoints (the last step always writes one)."""
    cache_dir: str = ".cache/spotdiff/features"
    """Backbone feature cache, outside DVC outputs so reruns of the stage reuse it. Entries are keyed by
    the backbone identity and the shards' checksums; delete the folder to reclaim space."""
    stage2: Stage2Config = Stage2Config()


class EvaluateConfig(_Section):
    """``evaluate`` stage: orthogonality, invariance, retrieval and leakage of the subject feature."""

    seed: int = Field(0, ge=0)
    """Seeds the bootstrap resamples and the probes."""
    n_boot: int = Field(1000, ge=0, le=100000)
    """Bootstrap resamples per interval (0: point estimates only)."""
    photos: str | None = "../shared/data/dreambench-dev"
    """Folder of real photos, one subfolder per subject (several photos each), for cross-photo retrieval.
    Skipped (and said so in the report) when the folder does not exist; null = never."""


class PublishConfig(_Section):
    """``publish`` stage: the dataset release tarball."""

    version: str = "0.1.0"
    """Release version: MAJOR.MINOR.PATCH (optionally with a leading v) or a date YYYY.MM.DD."""
    folder_license: str | None = None
    """Licence of the photos in a ``generate.folder`` source, for the dataset card (null: unknown)."""
    max_regression: float = Field(0.02, ge=0, le=1)
    """Scheduled retraining publishes only if no headline score of the subject feature is worse than the
    last release's by more than this (absolute, on 0-1 scores)."""


class OrchestrateConfig(_Section):
    """``orchestrate``: how Prefect runs the pipeline's tasks (results never depend on it)."""

    task_runner: Literal["threads", "processes", "dask"] = "threads"
    """threads: Prefect's thread pool (default); processes: a local process pool; dask: a Dask cluster
    (prefect-dask), local unless ``dask_address`` is set."""
    workers: int = Field(2, ge=1, le=1024)
    """Threads, processes or local Dask workers."""
    dask_address: str | None = None
    """Scheduler address of an existing Dask cluster (e.g. tcp://10.0.0.5:8786); null = start a local one."""
    retries: int = Field(2, ge=0, le=20)
    """Retries of a task that failed with a transient error (I/O, a lost worker)."""


class Params(_Section):
    generate: GenerateConfig = GenerateConfig()
    qa: QaConfig = QaConfig()
    shard: ShardConfig = ShardConfig()
    embed: EmbedConfig = EmbedConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    publish: PublishConfig = PublishConfig()
    orchestrate: OrchestrateConfig = OrchestrateConfig()


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {p} is not a section")
    node[last] = value


def _describe(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: {err.error_count()} invalid value(s)"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (value {e['input']!r})")
        elif isinstance(e["input"], dict):  # a rule across a whole section: the rule says it all
            lines.append(f"  {key}: {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  {key} = {e['input']!r}: {e['msg']}")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any] | None, origin: str = "params") -> Params:
    """Validate a parsed params tree; raises ConfigError naming every bad key."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise ConfigError(_describe(err, origin)) from None


def load_params(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """Read, override and validate ``path``. Overrides look like ``generate.n_groups=50``."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) if path.exists() else {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    raw = dict(raw or {})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        _set_dotted(raw, key.strip(), yaml.safe_load(value))
    return parse_params(raw, str(path))

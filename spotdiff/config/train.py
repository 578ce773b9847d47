"""``train`` section: the SpotDiff encoder (stage 1) and the alignment module (stage 2)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spotdiff.config.base import Section


class LossWeights(Section):
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


class EarlyStopping(Section):
    """``train.early_stopping``: the number of epochs is chosen on the validation split. After every epoch the
    loss terms are computed on the whole val split (``val.csv``); training stops once ``patience`` epochs in a
    row brought no new best of the ``monitor`` term, and the saved model is the best epoch's weights (not the
    last step's). ``train.epochs`` is then the most it may train. ``summary.json`` records the chosen epoch and
    step (``best``) and why training stopped (``stopped``)."""

    patience: int = Field(5, ge=0)
    """Epochs (one validation evaluation each) without a new best ``monitor`` value before training stops.
    0 = off: train all ``epochs`` and save the last step's weights (the behaviour before issue 18)."""
    monitor: Literal["total", "subject", "pose", "background", "orthogonality", "invariance"] = "total"
    """The validation loss term that picks the epoch: ``total`` is the weighted sum training minimises."""
    min_delta: float = Field(0.0, ge=0)
    """A validation value counts as a new best only when it is lower than the best so far by more than this
    (loss units, those of ``val.csv``)."""


class Stage2Config(Section):
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


class TrainConfig(Section):
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
    """Most passes over the training groups (an epoch = floor(groups / batch_size) steps, the last partial
    batch dropped); ``early_stopping`` stops sooner when the validation loss stops improving."""
    early_stopping: EarlyStopping = EarlyStopping()
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

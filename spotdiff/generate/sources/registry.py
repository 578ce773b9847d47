"""Subject sources: where subjects come from, and how each yields its two subject layers.

A source turns a share of ``generate.n_groups`` into ``Job``s (``plan``), then builds
each job's anchor layer and pose layer (``layers``). Compositing onto backgrounds is
common to every source and lives in ``spotdiff.generate.run``. Sources register by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from spotdiff.generate.background.composite import Layer
from spotdiff.config import GenerateConfig


@dataclass(frozen=True)
class Job:
    """One subject group to build. Everything random in it follows from ``seed``."""

    index: int
    source: str
    item: str
    """What the source draws from: a procedural seed, a packaged photo name, a file path."""
    subject_id: str
    class_name: str
    key: str
    seed: int


@dataclass
class SubjectLayers:
    """A source's answer for one job: the subject in pose P0 and P1, and what describes them."""

    anchor: Layer
    pose: Layer
    pose_scale: float
    """Size of the pose layer relative to the anchor's on the canvas (1 = same pixel scale)."""
    caption: str
    meta: dict[str, Any] = field(default_factory=dict)
    """Source-specific factor labels: pose parameters, segmentation backend and score, ..."""


class Source(Protocol):
    name: str

    def plan(self, cfg: GenerateConfig, count: int, start: int) -> list[Job]:
        """``count`` jobs with global indices from ``start``."""

    def layers(self, job: Job, cfg: GenerateConfig, rng: np.random.Generator, side: int) -> SubjectLayers:
        """Build both layers; raise ``spotdiff.common.images.BadInput`` for unusable input.

        ``side`` is the subject's target size on the canvas, pixels: renderers draw at it,
        photo sources may ignore it (their layers are rescaled to fit).
        """

    # Optional: ``inventory(cfg) -> list[dict]``, reject rows (key, subject_id, source, item, reason, detail)
    # for inputs the source found but can never use (a photo folder's FIFOs, dangling links), listed once
    # each before any job runs (``spotdiff.generate.run.inventory``).


_REGISTRY: dict[str, Source] = {}


def register(source: Source) -> Source:
    _REGISTRY[source.name] = source
    return source


def get(name: str) -> Source:
    if name not in _REGISTRY:
        raise KeyError(f"unknown source {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]

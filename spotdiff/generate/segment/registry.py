"""Subject segmentation of photos: a registry of backends, each ``photo -> Segmentation``.

Backends register themselves by name (``alpha``, ``grabcut``, ``mediapipe``); ``auto``
picks one per photo. Adding a backend is one module and one ``register`` call, never
an if/elif over names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from spotdiff.common.images import BadInput, Photo

PERSON_CLASSES = frozenset({"person", "man", "woman", "child", "astronaut", "people", "boy", "girl"})
GIVEN_MASKS = frozenset({"alpha"})
"""Backends that read a mask the photo itself carries (its transparency, a user's own cut-out): ground truth by
the user's word, so ``generate.min_segment_score`` does not reject them and QA counts them as exact masks
(``qa.mask.exact_backends``). Their mask-quality score is still recorded: on the benchmark's hand-made masks it
is below 0.25 for 5% of the Weizmann photos and 21% of the composites (docs/benchmarks.md), which is why a score
is no reason to drop a mask the user drew."""


@dataclass
class Segmentation:
    mask: np.ndarray
    """float32 (H, W) in [0, 1], same size as the photo; 1 = subject."""
    score: float
    """Confidence in [0, 1]. From ``segment``: the mask-quality score (``quality.mask_quality``: the estimated
    probability that the mask's IoU with the subject is >= 0.8, the same function for every backend); from a
    backend called directly: the backend's own confidence (meaning per backend, see its docstring), which
    ``segment`` moves to ``extra["backend_score"]``."""
    backend: str
    extra: dict = field(default_factory=dict)
    """Backend-specific scores recorded with the group (e.g. SAM's predicted IoU and stability)."""


class Segmenter(Protocol):
    def __call__(self, photo: Photo, class_name: str) -> Segmentation: ...


_REGISTRY: dict[str, Callable[[], Segmenter]] = {}


def register(name: str, factory: Callable[[], Segmenter]) -> None:
    """Make ``factory()`` (called lazily, once per process) the backend for ``name``."""
    _REGISTRY[name] = factory


_instances: dict[str, Segmenter] = {}


def get(name: str) -> Segmenter:
    """The backend instance for ``name`` (created on first use in this process)."""
    if name not in _instances:
        if name not in _REGISTRY:
            raise KeyError(f"unknown segmenter {name!r}; known: {sorted(_REGISTRY)}")
        _instances[name] = _REGISTRY[name]()
    return _instances[name]


def choose(name: str, photo: Photo, class_name: str) -> str:
    """Resolve ``auto``: the photo's own alpha, MediaPipe for people, GrabCut otherwise."""
    if name != "auto":
        return name
    if photo.alpha is not None:
        return "alpha"
    if class_name in PERSON_CLASSES:
        return "mediapipe"
    return "grabcut"


_SCORER: list[Callable[[Photo, np.ndarray], float]] = []
"""The mask-quality score ``segment`` gives every mask: set by ``spotdiff.generate.segment.quality`` when it is
imported (importing this package imports it), so this module imports no scorer itself."""


def set_scorer(scorer: Callable[[Photo, np.ndarray], float]) -> None:
    """Make ``scorer(photo, mask) -> float in [0, 1]`` the score of every mask ``segment`` returns."""
    _SCORER[:] = [scorer]


def passes(seg: Segmentation, min_score: float) -> bool:
    """Whether ``generate.min_segment_score`` = ``min_score`` keeps ``seg``: a given mask (``GIVEN_MASKS``)
    always, an estimated one when its score reaches the bar."""
    return seg.backend in GIVEN_MASKS or seg.score >= min_score


def segment(name: str, photo: Photo, class_name: str) -> Segmentation:
    """Segment ``photo`` with backend ``name`` (or ``auto``); empty results raise ``BadInput``.

    The result's ``score`` is the mask-quality score (``set_scorer``), whatever the backend; the backend's
    own score is kept in ``extra["backend_score"]``."""
    seg = get(choose(name, photo, class_name))(photo, class_name)
    if float(seg.mask.max(initial=0.0)) < 0.5:
        raise BadInput("segmentation_empty", f"{seg.backend} found no subject")
    if not _SCORER:
        raise RuntimeError("no mask-quality scorer: import spotdiff.generate.segment, not its registry alone")
    return Segmentation(seg.mask, float(_SCORER[0](photo, seg.mask)), seg.backend,
                        {"backend_score": seg.score, **seg.extra})

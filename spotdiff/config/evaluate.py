"""``evaluate`` section: the held-out evaluation."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from spotdiff.config.base import Section


class EvaluateConfig(Section):
    """``evaluate`` stage: orthogonality, invariance, retrieval and leakage of the subject feature.

    The real photos for cross-photo retrieval are no param: they are the stage's ``photos`` input
    (``spotdiff.stages``; default ``data/photos/dreambench-dev``, in the repository), a DVC dep like any
    other input, so the release cannot depend on whether a folder outside the repository exists."""

    seed: int = Field(0, ge=0)
    """Seeds the bootstrap resamples and the probes."""
    n_boot: int = Field(1000, ge=0, le=100000)
    """Bootstrap resamples per interval (0: point estimates only)."""

    @model_validator(mode="before")
    @classmethod
    def _photos_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "photos" in data:
            raise ValueError("evaluate.photos is no longer a param: the real photos are the evaluate stage's "
                             "`photos` input (default data/photos/dreambench-dev, a DVC dep; `spotdiff evaluate "
                             "--photos PATH` for another folder); remove the key")
        return data

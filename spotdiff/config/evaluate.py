"""``evaluate`` section: the held-out evaluation."""

from __future__ import annotations


from pydantic import Field

from spotdiff.config.base import Section


class EvaluateConfig(Section):
    """``evaluate`` stage: orthogonality, invariance, retrieval and leakage of the subject feature."""

    seed: int = Field(0, ge=0)
    """Seeds the bootstrap resamples and the probes."""
    n_boot: int = Field(1000, ge=0, le=100000)
    """Bootstrap resamples per interval (0: point estimates only)."""
    photos: str | None = "../shared/data/dreambench-dev"
    """Folder of real photos, one subfolder per subject (several photos each), for cross-photo retrieval.
    Skipped (and said so in the report) when the folder does not exist; null = never."""

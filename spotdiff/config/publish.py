"""``publish`` section: the release."""

from __future__ import annotations


from pydantic import Field

from spotdiff.config.base import Section


class PublishConfig(Section):
    """``publish`` stage: the dataset release tarball."""

    version: str = "0.1.0"
    """Release version: MAJOR.MINOR.PATCH (optionally with a leading v) or a date YYYY.MM.DD."""
    folder_license: str | None = None
    """Licence of the photos in a ``generate.folder`` source, for the dataset card (null: unknown)."""
    max_regression: float = Field(0.02, ge=0, le=1)
    """Scheduled retraining publishes only if no headline score of the subject feature is worse than the
    last release's by more than this (absolute, on 0-1 scores)."""

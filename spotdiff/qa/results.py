"""What QA decides: one ``SampleResult`` per group and the stage's ``QaStats``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spotdiff.qa import checks


@dataclass
class SampleResult:
    """Everything the parent keeps of one sample (small and picklable)."""

    key: str
    index: int
    """Position in records.parquet: generate order, the order duplicates are judged in."""
    subject_id: str = ""
    source: str = ""
    class_name: str = ""
    outcomes: dict[str, checks.Outcome | None] = field(default_factory=dict)
    """Check name -> outcome; None where the check was not judged (the group did not decode)."""
    phash: np.ndarray | None = None
    """(3, 256) uint8 perceptual-hash bits of the views, for the duplicate search."""
    digests: list[bytes] | None = None
    """Digests of the three JPEG members."""
    sha256: dict[str, str] = field(default_factory=dict)
    """Member name -> sha256 of the bytes QA read."""
    error: str | None = None
    """Why the group did not decode (None if it did)."""

    @property
    def reasons(self) -> list[str]:
        """Failed checks, in registry order."""
        return [n for n in checks.CHECKS if (o := self.outcomes.get(n)) is not None and not o.passed]


@dataclass
class QaStats:
    samples_in: int
    accepted: int
    rejected: int
    rejected_by_reason: dict[str, int]
    rejected_by_first_reason: dict[str, int]
    pass_rate: dict[str, float | None]
    """Check -> passed / judged (None when no sample was judged)."""
    seconds: float
    """Wall time of the whole stage, report included (not written to any output: outputs
    depend only on the inputs and params)."""
    out_dir: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        return (f"qa: {self.samples_in} groups in, {self.accepted} accepted, {self.rejected} rejected "
                f"{self.rejected_by_reason or ''} in {self.seconds:.1f} s -> {self.out_dir}/report.md")

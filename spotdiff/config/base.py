"""What every params section shares: strict validation and one error type (``spotdiff.errors.ConfigError``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from spotdiff.errors import ConfigError

__all__ = ["ConfigError", "Section", "check_range"]


class Section(BaseModel):
    """Strict like every params section: an unknown key, a wrong type or an out-of-range value is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def check_range(v: tuple[float, float], lo_min: float, hi_max: float) -> tuple[float, float]:
    """``v`` if it is a ``(low, high)`` pair inside ``[lo_min, hi_max]``; ValueError otherwise."""
    lo, hi = v
    if not lo_min <= lo <= hi <= hi_max:
        raise ValueError(f"needs {lo_min} <= low <= high <= {hi_max}, got [{lo}, {hi}]")
    return v

"""``shard`` section: the split by subject and the tar size bounds."""

from __future__ import annotations


from pydantic import Field, model_validator

from spotdiff.config.base import Section


class SplitConfig(Section):
    train: float = Field(0.8, ge=0, le=1)
    val: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sum(self) -> "SplitConfig":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class ShardConfig(Section):
    """``shard`` stage: WebDataset tars split by subject."""

    split: SplitConfig = SplitConfig()
    split_seed: int = Field(0, ge=0)
    """Salt of the subject -> split hash; changing it reshuffles subjects between splits."""
    max_samples: int = Field(64, ge=1)
    """Most subject groups per tar."""
    max_bytes: int = Field(64_000_000, ge=10_000)
    """Most bytes per tar (a group larger than this gets a tar of its own)."""
    contact_sheet_groups: int = Field(12, ge=1, le=200)

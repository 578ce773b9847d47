"""Typed configuration loaded from ``params.yaml``.

One section per pipeline stage (``generate``, ``shard``, ...). Every section is
strict: an unknown key, a wrong type or an out-of-range value fails before any
work starts, with a message that names the key, the value and what is allowed.

``load_params(path, overrides)`` is the single entry point; overrides are
``"section.key=value"`` strings (YAML-parsed values), as ``dvc exp run -S`` uses.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from spotdiff.config.base import ConfigError, Section
from spotdiff.config.embed import EmbedConfig, EmbeddedModelConfig
from spotdiff.config.evaluate import EvaluateConfig
from spotdiff.config.generate import (BackgroundKind, DiffusionConfig, GenerateConfig, PlacementConfig, PoseConfig,
                                      SamConfig, SegmenterName, SourceName)
from spotdiff.config.orchestrate import OrchestrateConfig
from spotdiff.config.pretrain import AugmentConfig, PretrainConfig
from spotdiff.config.publish import PublishConfig
from spotdiff.config.qa import QaConfig
from spotdiff.config.shard import ShardConfig, SplitConfig
from spotdiff.config.train import LossWeights, Stage2Config, TrainConfig

__all__ = ["AugmentConfig", "BackgroundKind", "ConfigError", "DiffusionConfig", "EmbedConfig", "EmbeddedModelConfig", "EvaluateConfig",
           "GenerateConfig", "LossWeights", "OrchestrateConfig", "Params", "PlacementConfig", "PoseConfig", "PretrainConfig",
           "PublishConfig", "QaConfig", "SamConfig", "SegmenterName", "ShardConfig", "SourceName", "SplitConfig",
           "Stage2Config", "TrainConfig", "load_params", "parse_params"]


class Params(Section):
    generate: GenerateConfig = GenerateConfig()
    qa: QaConfig = QaConfig()
    shard: ShardConfig = ShardConfig()
    pretrain: PretrainConfig = PretrainConfig()
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


def _known_keys(loc: tuple) -> list[str]:
    """Field names of the section that holds the key at ``loc`` (empty when it is no model's field)."""
    model: Any = Params
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def _describe(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: {err.error_count()} invalid value(s)"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(e["loc"][-1]), _known_keys(tuple(e["loc"])), n=1)
            hint = f"; did you mean {'.'.join([*map(str, e['loc'][:-1]), close[0]])}?" if close else ""
            lines.append(f"  {key}: unknown key (value {e['input']!r}){hint}")
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
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (pass -p/--params, or run from the repository root)")
    try:
        raw = yaml.safe_load(path.read_text())
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

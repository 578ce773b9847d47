"""The pipeline's stages: one registry that every entry point reads.

Each stage is a package ``spotdiff/<name>/`` whose ``run`` module has the same entry::

    run(params: Params, paths: Mapping[str, Path], *, progress: bool = True, **options) -> Stats

``paths`` maps the stage's roles (``STAGES[name].inputs`` and ``.outputs``) to files or folders;
``Stats`` has ``as_dict()`` (JSON-able counts) and ``summary()`` (one line for a person). The CLI,
the Prefect flows, the whole-pipeline flow and the check of ``dvc.yaml`` (``tests/test_stages.py``)
all read this table; nothing else names a stage's paths.

Paths are relative to the repository root. Every file a stage reads is a dvc.yaml dep: one of its inputs, in
the repository (the real photos of ``evaluate``, ``data/photos/dreambench-dev`` in git; the params file and
environment lock whose content ``publish`` records), or a folder a param names (``param_paths``: generate's
photo and background folders, wherever the user keeps them). ``paths_under(stage, root)`` moves the stage
outputs under ``data/`` and ``metrics/`` under another root (the Prefect ``pipeline`` deployment builds beside
``data/``); source inputs stay where the repository has them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Option:
    """A run-time option of one stage (not a param: it does not change what the stage builds)."""

    help: str
    type: type = str
    default: Any = None


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    """One line: what the stage does (the CLI's help)."""
    params: tuple[str, ...]
    """params.yaml sections the stage reads (dvc.yaml lists exactly these)."""
    inputs: Mapping[str, str]
    """Role -> default path of what the stage reads."""
    outputs: Mapping[str, str]
    """Role -> default path of what the stage writes. Folders are emptied first (written through when
    they are links), files replaced."""
    metrics: tuple[str, ...] = ()
    """Output roles that are small JSON metrics files (dvc ``metrics``, not cached)."""
    persist: tuple[str, ...] = ()
    """Output roles kept across reruns (dvc ``persist``): the train checkpoint."""
    options: Mapping[str, Option] = field(default_factory=dict)
    about: Mapping[str, str] = field(default_factory=dict)
    """Role -> what that path holds, for a person (the CLI's help)."""
    param_paths: tuple[str, ...] = ()
    """params.yaml keys (dotted) that name a file or folder the stage reads: a user's photo folder. dvc.yaml lists
    each as a ``${key}`` dep, which DVC fills in from params.yaml, so adding a photo there reruns the stage. Their
    values in params.yaml must be paths, never null (``check_param_paths``): the empty ``data/photos/own`` and
    ``data/photos/backgrounds`` stand in when the folder source or background kind is off."""
    in_pipeline: bool = True
    """False: an opt-in stage, run by hand (``spotdiff <name>``); not in dvc.yaml, not walked by the flows
    (``PIPELINE``), because nothing the pipeline builds reads its output by default."""

    @property
    def entry(self) -> str:
        """Module holding the stage's ``run``."""
        return f"spotdiff.{self.name}.run"

    def load(self) -> Callable[..., Any]:
        """The stage's ``run`` function (imports the stage's code on first use)."""
        return importlib.import_module(self.entry).run

    def paths(self, **given: str | Path | None) -> dict[str, Path]:
        """Role -> path: the defaults, with every non-None ``given`` role replacing its default."""
        unknown = set(given) - set(self.inputs) - set(self.outputs)
        if unknown:
            raise ValueError(f"stage {self.name} has no path role {sorted(unknown)}; roles: "
                             f"{sorted({**self.inputs, **self.outputs})}")
        return {role: Path(given.get(role) or default) for role, default in {**self.inputs, **self.outputs}.items()}


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("pretrain", "pre-train the embedded backbone self-supervised (SimCLR) on procedural renders of identities "
                      "generate never draws",
          params=("pretrain", "embed"),
          inputs={},
          outputs={"out": "data/pretrain"},
          in_pipeline=False,
          about={"out": "backbone.safetensors (embed.embedded.weights loads it), config.json, loss.csv, summary.json"}),
    Stage("generate", "build subject groups (anchor, bg, pose + masks) into chunk tars",
          params=("generate",),
          inputs={},
          outputs={"out": "data/generated"},
          param_paths=("generate.folder", "generate.background_folder"),
          options={"no_resume": Option("build every chunk, even those an interrupted run finished (kept in "
                                       "<out>.partial/ until the stage completes)", bool, False)},
          about={"out": "chunk tars, records.parquet, rejects.parquet, stats.json"}),
    Stage("qa", "score generated groups, quarantine failures with reasons, write a report",
          params=("qa", "embed"),
          inputs={"generated": "data/generated"},
          outputs={"out": "data/qa", "metrics": "metrics/qa.json"},
          metrics=("metrics",),
          about={"generated": "generate's output", "out": "scores, quarantine, accepted.txt, report.md",
                 "metrics": "counts and pass rates for `dvc metrics`"}),
    Stage("shard", "pack QA-accepted groups into WebDataset tars split by subject",
          params=("shard",),
          inputs={"generated": "data/generated", "accepted": "data/qa/accepted.txt"},
          outputs={"out": "data/shards"},
          about={"generated": "generate's output", "accepted": "QA's accepted keys, one a line",
                 "out": "WebDataset tars, index.parquet, SHA256SUMS, contact_sheet.png"}),
    Stage("train", "train the SpotDiff encoder (experts, subject head, orthogonality) on the shards",
          params=("train", "embed"),
          inputs={"shards": "data/shards"},
          outputs={"out": "data/train", "checkpoint": "data/checkpoints/train.safetensors"},
          persist=("checkpoint",),
          options={"no_resume": Option("start afresh even if a matching checkpoint exists", bool, False),
                   "max_steps": Option("stop after this many steps in total (checkpointed)", int, None)},
          about={"shards": "shard's output", "out": "model.safetensors, config.json, loss curves",
                 "checkpoint": "weights + optimiser state, resumed when params, data and code match"}),
    Stage("evaluate", "measure whether the subject feature keeps identity and drops pose and background, "
                      "against baselines that see the same input untrained (95% paired bootstrap intervals)",
          params=("evaluate", "embed"),
          inputs={"shards": "data/shards", "model": "data/train", "photos": "data/photos/dreambench-dev"},
          outputs={"out": "data/eval", "metrics": "metrics/eval.json"},
          metrics=("metrics",),
          about={"shards": "shard's output", "model": "train's output",
                 "photos": "real photos, a subfolder per subject (several each), for cross-photo retrieval",
                 "out": "metrics.json, report.md (the verdict: subject feature vs the best baseline per check, 95% "
                        "intervals over test subjects), figures",
                 "metrics": "the headline numbers for `dvc metrics`"}),
    Stage("publish", "pack shards, dataset card, model and metrics into a byte-identical release tar",
          params=("publish",),
          inputs={"shards": "data/shards", "qa": "data/qa", "model": "data/train", "eval": "data/eval",
                  "params_file": "params.yaml", "requirements": "requirements.lock"},
          outputs={"out": "data/release"},
          options={"version": Option("release version (default: params publish.version)", str, None),
                   "sign": Option("sign the release's SHA256SUMS with this Ed25519 private key file (PEM or OpenSSH; "
                                  "`spotdiff keygen` makes one): ships SHA256SUMS.sig", str, None)},
          about={"shards": "shard's output", "qa": "QA's output (its metrics.json)", "model": "train's output",
                 "eval": "evaluate's output (its metrics.json)",
                 "params_file": "packed canonically (validated, sorted keys, portable paths)",
                 "requirements": "the locked environment; the card records its sha256",
                 "out": "spotdiff10k-<version>.tar + .sha256"}),
)}
"""Every stage, in pipeline order."""

PIPELINE: dict[str, Stage] = {name: s for name, s in STAGES.items() if s.in_pipeline}
"""The stages dvc.yaml declares and the flows walk: every stage but the opt-in ones (``pretrain``)."""


def produced(path: str) -> bool:
    """Whether ``path`` is (inside) some stage's output, as opposed to a source input such as params.yaml,
    requirements.lock or the photos in ``data/photos/``, which the repository holds."""
    outs = [p for s in STAGES.values() for p in s.outputs.values()]
    return any(path == o or path.startswith(o.rstrip("/") + "/") for o in outs)


def paths_under(stage: Stage, root: str | Path) -> dict[str, Path]:
    """``stage``'s default paths with the stage outputs under ``data/`` and ``metrics/`` moved under ``root``
    (``root/metrics/``); source inputs (params.yaml, requirements.lock, data/photos/...) stay as they are."""
    root = Path(root)
    out = {}
    for role, default in {**stage.inputs, **stage.outputs}.items():
        head, _, rest = default.partition("/")
        if not produced(default):
            out[role] = Path(default)
        else:
            out[role] = root / rest if head == "data" else root / default if head == "metrics" else Path(default)
    return out


def check_param_paths(params: Mapping[str, Any], stages: Mapping[str, Stage] | None = None) -> None:
    """``ConfigError`` naming the key when a ``param_paths`` value of a pipeline stage is not a path (null, or
    missing): DVC fills dvc.yaml's deps from them and stops with "unexpected error" on a null."""
    from spotdiff.config import ConfigError

    for stage in (stages or PIPELINE).values():
        for key in stage.param_paths:
            value: Any = params
            for part in key.split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            if not isinstance(value, str) or not value:
                raise ConfigError(f"params.yaml {key} = {value!r}: dvc.yaml lists it as a dep of {stage.name}, so it "
                                  f"must name a folder (data/photos/own and data/photos/backgrounds are the empty "
                                  "defaults for an unused one)")

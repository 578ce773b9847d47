"""QA stage: score every generated subject group, quarantine failures with reasons, report.

    run_qa(gen_dir, out_dir, QaConfig(), progress=True) -> QaStats

Modules: ``config`` (the ``qa`` params section), ``measure`` (pure measurements on arrays),
``prepare`` (decode and measure one group), ``identity`` (subject-crop encoders),
``checks`` (the registry of checks), ``duplicates`` (cross-sample checks), ``run`` (the
stage and its outputs), ``report`` (markdown, histograms, contact sheets).

Importing the package is cheap (pydantic only): ``spotdiff.config`` imports ``QaConfig``
for every command, so the stage itself (OpenCV, pyarrow, webdataset) loads on first use.
"""

from typing import Any

from spotdiff.qa.config import QaConfig

__all__ = ["QaConfig", "QaStats", "run_qa"]


def __getattr__(name: str) -> Any:
    if name in ("run_qa", "QaStats"):
        from spotdiff.qa import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

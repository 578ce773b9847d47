"""``orchestrate`` section: how Prefect runs tasks (read by ``flows/`` only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spotdiff.config.base import Section


class OrchestrateConfig(Section):
    """``orchestrate``: how Prefect runs the pipeline's tasks (results never depend on it)."""

    task_runner: Literal["threads", "processes", "dask"] = "threads"
    """threads: Prefect's thread pool (default); processes: a local process pool; dask: a Dask cluster
    (prefect-dask), local unless ``dask_address`` is set."""
    workers: int = Field(2, ge=1, le=1024)
    """Threads, processes or local Dask workers."""
    dask_address: str | None = None
    """Scheduler address of an existing Dask cluster (e.g. tcp://10.0.0.5:8786); null = start a local one."""
    retries: int = Field(2, ge=0, le=20)
    """Retries of a task that failed with a transient error (I/O, a lost worker)."""

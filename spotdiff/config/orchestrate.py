"""``orchestrate`` section: how Prefect runs tasks (read by ``flows/`` only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

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
    chunk_resources: dict[str, float] = Field(default_factory=dict)
    """Dask worker resources each generate chunk holds while it runs, e.g. ``{GPU: 1}`` for a real-weights
    generate (Stable Diffusion backgrounds, SAM masks): chunks then run only on workers started with
    ``dask worker ADDRESS --resources GPU=1``, one chunk per GPU at a time, and CPU-only workers of the same
    cluster take none. Needs ``task_runner: dask`` and ``dask_address``; a cluster with no worker that
    offers them is an error before any chunk is sent. Empty (default): any worker."""

    @model_validator(mode="after")
    def _resources_need_a_cluster(self) -> "OrchestrateConfig":
        if self.chunk_resources and (self.task_runner != "dask" or not self.dask_address):
            raise ValueError("chunk_resources (Dask worker resources, e.g. {GPU: 1}) needs task_runner: dask and a "
                             "dask_address: a cluster whose workers were started with `dask worker ... --resources "
                             "GPU=1`; a local cluster's workers offer no resources")
        bad = {k: v for k, v in self.chunk_resources.items() if not v > 0}
        if bad:
            raise ValueError(f"chunk_resources: amounts must be > 0, got {bad}")
        return self

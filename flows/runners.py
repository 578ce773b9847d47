"""The Prefect task runner that params' ``orchestrate`` section asks for, and retry rules.

threads (default) and processes are Prefect's own pools; dask is prefect-dask's ``DaskTaskRunner``,
on a local cluster of ``orchestrate.workers`` single-threaded worker processes or, with
``orchestrate.dask_address``, an existing cluster (every worker needs this package installed).

Retries (``orchestrate.retries``) run inside the task's own engine, so they cover errors a task raises
(``TRANSIENT``: I/O, a broken pipe to a lost peer), never a bad config or a bug. A worker process that
dies takes its task's engine with it, and what happens then depends on the runner (checked with a task
that kills its process once, prefect 3.9.1, prefect-dask 0.3.7): on dask the scheduler reruns the task on
another worker (distributed's ``allowed-failures``, default 3) and the flow completes; on processes
the pool is broken (``BrokenProcessPool``) and the flow run fails: rerun it, the outputs are
deterministic.
"""

from __future__ import annotations

from typing import Any

from spotdiff.config import OrchestrateConfig
from spotdiff.errors import SpotdiffError

TRANSIENT = (OSError, EOFError, TimeoutError, ConnectionError)
"""Errors worth a retry (I/O, a lost worker's broken pipe); anything else fails at once."""


def task_runner(cfg: OrchestrateConfig) -> Any:
    """A fresh task runner for one flow run."""
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    if cfg.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    if cfg.task_runner == "processes":
        return ProcessPoolTaskRunner(max_workers=cfg.workers)
    from prefect_dask import DaskTaskRunner

    if cfg.dask_address:
        return DaskTaskRunner(address=cfg.dask_address)
    # One thread per worker process: each chunk is CPU-bound Python/OpenCV work.
    return DaskTaskRunner(cluster_kwargs={"n_workers": cfg.workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only ``TRANSIENT`` errors, never a bad config or bad code."""
    try:
        state.result()
    except SpotdiffError:  # a missing input or an output that cannot be written stays so (some are OSErrors)
        return False
    except TRANSIENT:
        return True
    except Exception:  # noqa: BLE001 -- everything else is permanent
        return False
    return False

"""Any pipeline stage as a Prefect flow run: the stage's ``run`` from ``spotdiff.stages`` in one task.

``generate`` is the one stage whose work is spread over tasks: one task per chunk on the task runner
of params ``orchestrate.task_runner`` (threads, processes or Dask), results consumed in chunk order so
the output bytes are the library's own.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any, Mapping

for _k, _v in {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(_k, _v)

from prefect import flow, task  # noqa: E402
from prefect.artifacts import create_progress_artifact, update_progress_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from flows.runners import retry_transient, task_runner  # noqa: E402
from spotdiff.common.pool import worker_count, worker_pool  # noqa: E402
from spotdiff.config import OrchestrateConfig, Params, load_params  # noqa: E402
from spotdiff.errors import InputError  # noqa: E402
from spotdiff.generate import run as gen  # noqa: E402
from spotdiff.stages import STAGES  # noqa: E402


class PoolStopped(RuntimeError):
    """The worker pool a task was waiting on was stopped (Ctrl-C, SIGTERM, an error in the flow)."""


class StoppablePool:
    """The library's worker pool as task threads use it. ``apply`` returns the chunk, or raises ``PoolStopped``
    once ``stop()`` was called: a thread blocked in ``Pool.apply`` after the pool was terminated would wait
    forever for a result no worker will send, and the task runner's exit would wait forever for the thread."""

    def __init__(self, pool: multiprocessing.pool.Pool):
        self.pool, self.stopped = pool, threading.Event()

    def apply(self, fn, args: tuple):
        pending = self.pool.apply_async(fn, args)
        while True:
            try:
                return pending.get(timeout=0.2)
            except multiprocessing.TimeoutError:
                if self.stopped.is_set():
                    raise PoolStopped("the worker pool was stopped before this chunk was built") from None

    def stop(self) -> None:
        self.stopped.set()


@task(name="build-chunk", retry_condition_fn=retry_transient, cache_policy=NO_CACHE)
def build_chunk(args: tuple, pool: StoppablePool | None = None) -> gen.ChunkResult:
    """One chunk of groups (``spotdiff.generate.run.build_chunk``), on the flow's task runner, or in ``pool``'s
    worker processes when one is given (the thread runner's tasks would otherwise share one GIL)."""
    return pool.apply(gen.build_chunk, (args,)) if pool is not None else gen.build_chunk(args)


def chunk_annotations(cfg: OrchestrateConfig) -> contextlib.AbstractContextManager:
    """Dask annotations for the chunks submitted inside it: ``orchestrate.chunk_resources`` as worker
    resources (the Dask client merges ``dask.annotate`` into every submit made in this thread). Checks
    first that some worker of the cluster offers every resource in that amount: the scheduler would hold
    the chunks forever otherwise."""
    if not cfg.chunk_resources:
        return contextlib.nullcontext()
    import dask
    from distributed import Client

    with Client(cfg.dask_address, timeout=60) as client:
        offered = {w.get("name", a): w.get("resources", {}) for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
    if not any(all(res.get(k, 0) >= v for k, v in cfg.chunk_resources.items()) for res in offered.values()):
        raise InputError(f"orchestrate.chunk_resources {dict(cfg.chunk_resources)}: no worker of the Dask cluster at "
                         f"{cfg.dask_address} offers them (workers and their resources: {offered or 'none'}); start "
                         "one with `dask worker ADDRESS --resources GPU=1`")
    return dask.annotate(resources=dict(cfg.chunk_resources))


def _generate_hooks(p: Params) -> dict[str, Any]:
    """``run`` keywords that spread generate's chunks over Prefect tasks and report progress."""
    chunk = build_chunk.with_options(retries=p.orchestrate.retries)
    bar = create_progress_artifact(0.0, key="generate-progress", description="groups built (%)")

    def mapper(fn, tasks):
        # Results are consumed in task order, so outputs are byte-identical to the library's own process
        # pool whatever runner computed them. At most `window` chunks are in flight or waiting: a future
        # holds its chunk's encoded images until the parent has written them, and holding every chunk of
        # a 10k-group run at once would take gigabytes.
        window = max(2, 2 * p.orchestrate.workers)
        # Thread-runner tasks hand the CPU work to the library's worker processes (measured on the demo:
        # the stage took 1.78x the library's own time with the chunks on the threads themselves, which
        # share one GIL, and 1.12x with the pool); process and Dask runners already run each task in a
        # worker process of their own.
        threads = p.orchestrate.task_runner == "threads"
        pool_ctx = worker_pool(worker_count(p.generate.workers), len(tasks)) if threads else contextlib.nullcontext()
        with pool_ctx as raw, chunk_annotations(p.orchestrate):
            pool = StoppablePool(raw) if raw is not None else None
            try:
                queue = iter(tasks)
                pending = collections.deque(chunk.submit(t, pool) for t in itertools.islice(queue, window))
                while pending:
                    result = pending.popleft().result()
                    pending.extend(chunk.submit(t, pool) for t in itertools.islice(queue, 1))
                    yield result
            finally:  # on any exit: tasks still waiting on the pool give up instead of waiting forever
                if pool is not None:
                    pool.stop()

    def on_chunk(done: int, total: int) -> None:
        update_progress_artifact(bar, 100.0 * done / max(1, total))

    return {"mapper": mapper, "on_chunk": on_chunk}


@task(name="run-stage", cache_policy=NO_CACHE)
def _run_stage(name: str, p: Params, paths: Mapping[str, Path], progress: bool, options: Mapping[str, Any]) -> dict:
    stats = STAGES[name].load()(p, paths, progress=progress, **options)
    return {**stats.as_dict(), "summary": stats.summary()}


@flow(log_prints=True)
def _stage_flow(name: str, params: str, overrides: tuple[str, ...], paths: Mapping[str, Path], progress: bool,
                options: Mapping[str, Any]) -> dict:
    p = load_params(params, overrides)
    if name == "generate":
        stats = STAGES[name].load()(p, paths, progress=progress, **options, **_generate_hooks(p))
        return {**stats.as_dict(), "summary": stats.summary()}
    return _run_stage(name, p, paths, progress, options)


def stage_flow(name: str, params: str = "params.yaml", overrides: tuple[str, ...] = (),
               paths: Mapping[str, Path] | None = None, progress: bool = True,
               options: Mapping[str, Any] | None = None) -> dict:
    """Run stage ``name`` as a flow run named after it, on paths ``paths`` (default: the registry's);
    returns the stage's stats as a dict with its one-line ``summary``."""
    stage = STAGES[name]
    runner = task_runner(load_params(params, overrides).orchestrate)
    run = _stage_flow.with_options(name=name, task_runner=runner)
    return run(name, params, tuple(overrides), dict(paths or stage.paths()), progress, dict(options or {}))

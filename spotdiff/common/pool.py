"""Worker processes for CPU-bound stage work (generate's chunks, QA's scoring).

Every pool is spawned and single-threaded per worker; results come back in task order, so a
stage's output never depends on the worker count.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.pool
import os
from typing import Callable, Iterator


def worker_count(requested: int) -> int:
    """``requested`` workers, or one per usable CPU core when 0."""
    if requested:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _single_threaded() -> None:
    """Pool initializer: one thread per worker, since the workers already fill the cores.

    OpenCV and BLAS otherwise start a thread per core in every worker; on 2 cores that
    oversubscription made 2 workers slower than 1.
    """
    import cv2

    cv2.setNumThreads(1)


@contextlib.contextmanager
def worker_pool(workers: int, n_tasks: int) -> Iterator[mp.pool.Pool | None]:
    """A pool of ``min(workers, n_tasks)`` spawned, single-threaded worker processes; None when that is
    one (work then runs in the caller's process).

    Spawn, not fork: the caller may hold threads (Prefect's API client, an event loop)
    that a forked child would inherit half-locked.
    """
    if workers <= 1 or n_tasks <= 1:
        yield None
        return
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: "1" for k in _THREAD_VARS})  # read by the children's BLAS at import
    try:
        pool = mp.get_context("spawn").Pool(min(workers, n_tasks), initializer=_single_threaded)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    with pool:
        yield pool


def run_parallel(fn: Callable, tasks: list, workers: int) -> Iterator:
    """``map(fn, tasks)`` in order, on a ``worker_pool`` of ``workers`` processes (in-process when 1)."""
    with worker_pool(workers, len(tasks)) as pool:
        yield from (pool.imap(fn, tasks) if pool else map(fn, tasks))

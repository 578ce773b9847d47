"""Worker processes for CPU-bound stage work (generate's chunks, QA's scoring).

Every pool is spawned and single-threaded per worker; results come back in task order, so a
stage's output never depends on the worker count.

Signals: the parent owns its workers. Workers ignore SIGINT (a Ctrl-C reaches the whole process
group; the parent, not each worker, decides what happens), die on SIGTERM (``Pool.terminate``), and
die with the parent if it is killed outright (Linux ``PR_SET_PDEATHSIG``), so none outlives it. The
pool is terminated when its ``with`` block is left by any exception, Ctrl-C included; multiprocessing's
resource tracker then sees its last user gone and exits too.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import multiprocessing.pool
import os
import signal
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


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit now if it already has."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's terminate() is the only guard
        return
    if os.getppid() != parent:
        os._exit(1)


def _worker_init(parent: int) -> None:
    """Pool initializer: signals as the module docstring says, then one thread per worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked while the pool was started
    _die_with_parent(parent)
    _single_threaded()


def _single_threaded() -> None:
    """One thread per worker, since the workers already fill the cores.

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
    # SIGINT stays blocked in the workers (the mask is inherited) until their initializer ignores it, so a
    # Ctrl-C while they start prints no KeyboardInterrupt from each; in this thread it waits, pending, or
    # goes to the main thread.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pool = mp.get_context("spawn").Pool(min(workers, n_tasks), initializer=_worker_init,
                                            initargs=(os.getpid(),))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    with pool:  # leaving it, normally or not, terminates the workers
        yield pool


def run_parallel(fn: Callable, tasks: list, workers: int) -> Iterator:
    """``map(fn, tasks)`` in order, on a ``worker_pool`` of ``workers`` processes (in-process when 1)."""
    with worker_pool(workers, len(tasks)) as pool:
        yield from (pool.imap(fn, tasks) if pool else map(fn, tasks))
    # Callers close this generator (``contextlib.closing``) when they stop early, which ends the pool at once.

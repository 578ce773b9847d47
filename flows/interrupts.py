"""Ctrl-C and SIGTERM: every process a command started stops within seconds, and the command says so.

``handle_signals()`` (the ``spotdiff`` command wraps every command in it) turns the first SIGINT or
SIGTERM into ``spotdiff.errors.Interrupted`` in the main thread. It unwinds the stage like any exception:
worker pools are terminated and temporary files removed by their ``with`` blocks (``spotdiff.common``),
the Prefect server is stopped (``flows.server``). Later signals are ignored while that cleanup runs, so
a second Ctrl-C cannot break it half-way; a watchdog ends the process if the cleanup hangs.

``run_child()`` runs a command (``dvc repro``) in a process group of its own and, when interrupted,
passes the signal on to that whole group (dvc and the stage it runs, with the stage's workers), waits
for every process of it to exit, and kills what is left after a grace period. Its own group, because a
signal sent to this process alone (``kill -INT``) must reach those processes too, and a Ctrl-C in a
terminal must reach them once, through this process, not twice. dvc ignores SIGINT while its stage runs
and fails when the stage does; on SIGTERM dvc itself exits at once and the stage (in the same group)
cleans up on its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from typing import Iterator

from spotdiff.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE = 15.0
"""Seconds a child process group gets to exit after the signal is passed on, before SIGKILL."""
WATCHDOG = 30.0
"""Seconds after the first signal after which the process exits even if its cleanup hangs."""

_lock = threading.Lock()
_children: dict[int, tuple[subprocess.Popen, str]] = {}
_state: dict[str, object] = {"signum": None, "watchdog": None, "stopped": []}


def _force_exit(signum: int) -> None:
    """The watchdog: cleanup hung. Kill what is left of our children and leave."""
    for pgid in list(_children):
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    os.write(2, f"spotdiff: cleanup after {signal.Signals(signum).name} took over {WATCHDOG:.0f} s; "
                "exiting now\n".encode())
    os._exit(128 + signum)


def _handler(signum: int, frame: object) -> None:
    if _state["signum"] is not None:
        return  # already stopping: a second signal must not break the cleanup the first one started
    _state["signum"] = signum
    timer = threading.Timer(WATCHDOG, _force_exit, (signum,))
    timer.daemon = True
    timer.start()
    _state["watchdog"] = timer
    raise Interrupted(signum)


@contextlib.contextmanager
def handle_signals(keep_watchdog: bool = False) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise ``Interrupted`` once (main thread only; elsewhere a
    no-op). The previous handlers come back afterwards. ``keep_watchdog``: after an interruption the
    watchdog keeps running past the block, to cover the interpreter's own exit (for a process that
    is about to end, not for a caller such as a test)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.update(signum=None, watchdog=None, stopped=[])
    old = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        timer = _state["watchdog"]
        if timer is not None and not keep_watchdog:
            timer.cancel()


def stopping() -> int | None:
    """The signal being handled, or None."""
    return _state["signum"]  # type: ignore[return-value]


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs (zombies waiting to be reaped do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    import psutil

    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError):
            continue
    return False


def stop_group(proc: subprocess.Popen, signum: int, grace: float = GRACE) -> None:
    """Send ``signum`` to ``proc``'s process group, wait up to ``grace`` s for all of it to exit, then
    SIGKILL whatever is left. ``proc`` is reaped."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signum)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()
        if not _group_alive(proc.pid):
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stop_children(signum: int) -> None:
    """Stop every group ``run_child`` is still running (from any thread)."""
    with _lock:
        running = list(_children.values())
    for proc, label in running:
        _state["stopped"].append(label)  # type: ignore[union-attr]
        stop_group(proc, signum)


def stopped() -> list[str]:
    """Labels of the commands that were stopped by a signal since ``handle_signals`` began."""
    return list(_state["stopped"])  # type: ignore[call-overload]


def _signal_of(exc: BaseException) -> int | None:
    """The signal behind ``exc``: ``Interrupted``'s, SIGINT for a bare KeyboardInterrupt, Prefect's
    ``TerminationSignal`` (its flow engine turns SIGTERM into one during a flow run); None for others."""
    if isinstance(exc, KeyboardInterrupt):
        return getattr(exc, "signum", signal.SIGINT)
    signum = getattr(exc, "signal", None)
    return signum if isinstance(signum, int) and not isinstance(exc, Exception) else None


def run_child(cmd: list[str], *, label: str | None = None, capture: bool = False,
              **popen: object) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group, stdin from /dev/null; its output passed through, or captured
    as text with ``capture``. On any exception while it runs (``Interrupted`` above all) its whole group
    gets the same signal (SIGTERM for other exceptions), then SIGKILL after ``GRACE`` s; the exception
    propagates."""
    if capture:
        popen.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen(cmd, process_group=0, stdin=subprocess.DEVNULL, **popen)
    with _lock:
        _children[proc.pid] = (proc, label or " ".join(cmd))
    try:
        out, err = proc.communicate()
    except BaseException as exc:
        signum = _signal_of(exc)
        if signum is not None:
            _state["stopped"].append(label or " ".join(cmd))  # type: ignore[union-attr]
        stop_group(proc, signum or signal.SIGTERM)
        raise
    finally:
        with _lock:
            _children.pop(proc.pid, None)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

"""One local Prefect API server for a whole pipeline run.

Prefect 3 needs an API for every flow run. Without ``PREFECT_API_URL`` each process
starts a temporary server (7-18 s), which ``dvc repro`` would pay once per stage.
``local_server()`` starts ``prefect server start`` once, exports its URL so every stage
subprocess connects to it (~1 s), and stops it afterwards. An already-set
``PREFECT_API_URL`` (a team server, a worker's environment) is used as is.

Prefect reads its settings once, at import: in a process that has already imported ``prefect`` the
exported variable alone would be ignored (flows would start a temporary server of their own, and so
would the threads of a process-pool runner), so the process-global settings are then re-read from the
environment on entry and on exit, and the current context gets the URL too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from spotdiff.errors import SpotdiffError

OFFLINE_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_UI_ENABLED": "false",
    "PREFECT_UI_URL": "",  # no UI is served, so flow runs print no "View at http://..." links to one
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as r:  # loopback only
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def _in_process_settings(url: str) -> Iterator[None]:
    """Point this process's Prefect at ``url`` (already in the environment) if Prefect is already imported.

    The global settings serve threads that do not copy the caller's context (process-pool message
    forwarding); ``temporary_settings`` serves the current context, which may hold settings of its own.
    """
    if "prefect" not in sys.modules:  # importing it here would cost `spotdiff run` ~2 s for nothing
        yield
        return
    from prefect.context import refresh_global_settings_context
    from prefect.settings import PREFECT_API_URL, temporary_settings

    refresh_global_settings_context()
    with temporary_settings(updates={PREFECT_API_URL: url}):
        try:
            yield
        finally:
            _drain_log_and_event_workers()


def _drain_log_and_event_workers() -> None:
    """Send the logs and events still queued in this process while the server is up (as Prefect's own
    test harness does): later they would fail to connect, or start a temporary server to land in."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        try:
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        except RuntimeError:  # no log worker was started
            pass
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())


@contextlib.contextmanager
def local_server(home: str | Path = ".prefect", timeout: float = 60.0) -> Iterator[str]:
    """Yield an API URL, starting a loopback server under ``home`` if none is configured."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, **OFFLINE_ENV, "PREFECT_HOME": str(home)}
    log = open(home / "server.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if proc.poll() is not None:
                raise SpotdiffError(f"prefect server exited with {proc.returncode}; see {home / 'server.log'}")
            if time.monotonic() > deadline:
                raise SpotdiffError(f"prefect server not healthy after {timeout:.0f} s; see {home / 'server.log'}")
            time.sleep(0.25)
        old = {k: os.environ.get(k) for k in ("PREFECT_API_URL", *OFFLINE_ENV)}
        os.environ.update(OFFLINE_ENV, PREFECT_API_URL=url)
        try:
            with _in_process_settings(url):
                yield url
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            if "prefect.context" in sys.modules:
                from prefect.context import refresh_global_settings_context

                refresh_global_settings_context()
    finally:
        # The server's background services drain slowly on SIGTERM; nothing of ours is lost by
        # not waiting for them (flow runs are finished and persisted by now).
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()

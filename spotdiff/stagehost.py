"""A warm process that runs pipeline stages by forking: heavy imports once per pipeline, not per stage.

``dvc repro`` starts every stage as a new process, and each would import torch, transformers and
Prefect again: 4-9 s a stage on 2 cores, more than some stages' own work. ``spotdiff run`` starts one
*stage host* that imports them once. A stage command that finds ``SPOTDIFF_STAGE_HOST`` (a Unix socket
path) in its environment hands its argv, working directory, environment and its stdin/stdout/stderr
file descriptors to the host, which forks a child to run the command and sends back the child's pid
and then its exit code. The command's output, exit code and files are exactly what running it in its
own process gives; only the start-up is skipped.

Why forking is safe here: the host only imports; it never runs a stage, a torch op or a Prefect flow,
so at fork time it has one thread, no torch thread pool and no open client (``serve`` checks the thread
count after preloading and refuses to serve otherwise). Without the variable -- plain ``dvc repro``,
tests, another OS -- stages run in their own process as usual, and a stage whose host is gone falls back
to that with a warning.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

ENV = "SPOTDIFF_STAGE_HOST"
"""Environment variable holding the host's socket path; set by ``spotdiff run`` for ``dvc repro``."""

ENTRY = "spotdiff.cli:main"
"""What a forked child runs: ``main(argv) -> exit code``."""

_INT = struct.Struct("!i")


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        part = conn.recv(n - len(buf))
        if not part:
            return None
        buf += part
    return buf


def _child(conn: socket.socket, listener: socket.socket, fds: list[int], request: dict, entry: Callable) -> None:
    """Run one command in a freshly forked child, as if it were its own process; never returns."""
    rc = 1
    try:
        conn.sendall(_INT.pack(os.getpid()))  # first the pid (the client forwards SIGTERM to it), the exit code last
        listener.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.pop(ENV, None)  # the child runs the command itself, never forwards it again
        if "prefect.context" in sys.modules:  # Prefect read its settings at import, from the host's environment
            from prefect.context import refresh_global_settings_context

            refresh_global_settings_context()
        sys.argv = ["spotdiff", *request["argv"]]
        try:
            rc = int(entry(request["argv"]) or 0)
        except SystemExit as exit_:  # as the interpreter does: None is 0, a message is printed and is 1
            rc = exit_.code or 0
            if not isinstance(rc, int):
                print(rc, file=sys.stderr)
                rc = 1
        except BaseException:  # noqa: BLE001 -- report like an uncaught exception in a normal process
            import traceback

            traceback.print_exc()
            rc = 130 if sys.exc_info()[0] is KeyboardInterrupt else 1
    finally:
        # Exit as a normal process would: atexit handlers run (Prefect drains its queued logs and events
        # there), buffers are flushed; then os._exit, so nothing of the host's own shutdown runs here.
        with contextlib.suppress(Exception):
            import atexit

            atexit._run_exitfuncs()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            conn.sendall(_INT.pack(rc))
        os._exit(rc)


def serve(path: str | Path, preload: list[str], entry: str = ENTRY, log=sys.stderr) -> None:
    """Bind ``path``, import ``preload`` and ``entry``'s module, then fork a child per request until SIGTERM.

    The socket is bound before the imports, so stage commands started meanwhile queue instead of
    failing. Requests are served concurrently (each child is independent).
    """
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the children (foreground group); the owner stops us
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    t0 = time.perf_counter()
    module, _, name = entry.partition(":")
    for mod in [*preload, module]:
        importlib.import_module(mod)
    fn = getattr(sys.modules[module], name)
    if threading.active_count() != 1:
        # A fork copies only the calling thread; a lock held by another thread would stay held forever.
        raise RuntimeError(f"stage host: preloading {preload} started threads "
                           f"{[t.name for t in threading.enumerate()]}; refusing to fork")
    print(f"stage host: imported {len(preload) + 1} modules in {time.perf_counter() - t0:.1f} s, "
          f"serving on {path}", file=log, flush=True)
    listener.settimeout(1.0)  # wake up to reap finished children
    try:
        while True:
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            conn.settimeout(None)
            with conn:
                head, fds, _, _ = socket.recv_fds(conn, _INT.size, 3)
                size = _INT.unpack(head)[0] if len(head) == _INT.size else -1
                body = _recv_exact(conn, size) if size >= 0 else None
                if body is None or len(fds) != 3:
                    for fd in fds:
                        os.close(fd)
                    continue
                request = json.loads(body)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    _child(conn, listener, fds, request, fn)
                for fd in fds:
                    os.close(fd)
                print(f"stage host: pid {pid} runs spotdiff {' '.join(request['argv'])}", file=log, flush=True)
    finally:
        listener.close()


def forward(argv: list[str], path: str) -> int | None:
    """Run ``argv`` on the host at ``path``; its exit code, or None when no host answers there.

    SIGTERM sent to this process (dvc stopping a stage) is passed on to the child; Ctrl-C reaches
    the child directly (it is in the terminal's foreground process group).
    """
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None
    with conn:
        body = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        sys.stdout.flush()
        sys.stderr.flush()
        socket.send_fds(conn, [_INT.pack(len(body))], [0, 1, 2])
        conn.sendall(body)
        head = _recv_exact(conn, _INT.size)
        if head is None:
            return None  # the host dropped the request before forking
        pid = _INT.unpack(head)[0]
        previous = signal.signal(signal.SIGTERM, lambda sig, _frame: os.kill(pid, sig))
        try:
            tail = _recv_exact(conn, _INT.size)
        finally:
            signal.signal(signal.SIGTERM, previous)
    if tail is None:
        print(f"spotdiff: the stage host's child (pid {pid}) died without an exit code", file=sys.stderr)
        return 1
    return _INT.unpack(tail)[0]


@contextlib.contextmanager
def stage_host(preload: list[str], entry: str = ENTRY, log: str | Path | None = None) -> Iterator[str]:
    """Start a host (``python -m spotdiff.stagehost``) and yield its socket path; stop it on exit.

    Returns at once: the host binds its socket first and imports afterwards, so the first stage's
    request waits in the queue while it imports. ``log`` receives the host's own messages (default: the
    caller's stderr).
    """
    folder = tempfile.mkdtemp(prefix="spotdiff-host-")
    path = os.path.join(folder, "socket")
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab") if log else None
    proc = subprocess.Popen([sys.executable, "-m", "spotdiff.stagehost", "--socket", path, "--entry", entry,
                             *[a for mod in preload for a in ("--preload", mod)]], stderr=out)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(path):  # bound within a second of start; the imports come after
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"stage host did not start (exit code {proc.poll()})")
            time.sleep(0.02)
        yield path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if out:
            out.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
            os.rmdir(folder)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m spotdiff.stagehost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", required=True, help="Unix socket path to bind (must not exist)")
    ap.add_argument("--preload", action="append", default=[], help="module to import before serving (repeatable)")
    ap.add_argument("--entry", default=ENTRY, help="module:function run in each child (default: %(default)s)")
    args = ap.parse_args(argv)
    serve(args.socket, args.preload, args.entry)


if __name__ == "__main__":
    main()

"""Native libraries' routine log lines kept off the terminal.

MediaPipe's C++ (TFLite, absl, glog-style) writes straight to file descriptor 2: "Created TensorFlow
Lite XNNPACK delegate", "All log messages before absl::InitializeLog()", and per-thread feedback-manager
and landmark-projection warnings, a dozen lines per run that ``-q`` cannot reach. No switch silences
them (``GLOG_minloglevel``, ``TF_CPP_MIN_LOG_LEVEL`` and ``ABSL_MIN_LOG_LEVEL`` were tried with
mediapipe 0.10.21), so ``quiet_native()`` points fd 2 at a temporary file for the block, then drops the
lines that are known routine INFO/WARNING noise (``NOISE``) and writes everything else back to stderr
as it came: native errors, and Python's own stderr output of the block, are never lost.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from typing import IO, Callable, Iterator

NOISE = re.compile(rb"^(INFO: Created TensorFlow Lite XNNPACK delegate"
                   rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                   rb"|[IW]\d{4} [\d:.]+ +\d+ [\w.]+\.cc:\d+\] )")
"""Lines dropped: TFLite's delegate notice, absl's pre-init notice, and absl/glog INFO (I) and WARNING (W)
lines; E and F (error, fatal) lines pass."""

_lock = threading.RLock()
_depth = 0
_sink: IO[bytes] | None = None
dropped = 0
"""Routine native lines dropped in this process so far."""


@contextlib.contextmanager
def quiet_native(keep: Callable[[bytes], bool] | None = None, kept: list[bytes] | None = None) -> Iterator[None]:
    """Run the block with fd 2 captured; afterwards pass on all but ``NOISE`` lines. Re-entrant (an inner
    block's lines are handled by the outermost); other threads' stderr output during the block is
    captured and passed on too (later, not lost). ``keep``/``kept``: lines for which ``keep(line)`` holds
    are appended to ``kept`` instead of passed on (a decoder's warnings, which the caller judges)."""
    global _depth, _sink
    with _lock:
        if _depth:
            _depth += 1
            try:
                yield
            finally:
                _depth -= 1
            return
        sys.stderr.flush()
        saved = os.dup(2)
        _sink = _sink or tempfile.TemporaryFile()
        os.dup2(_sink.fileno(), 2)
        _depth = 1
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            _depth = 0
            _pass_on(_sink, keep, kept)


def _pass_on(sink: IO[bytes], keep: Callable[[bytes], bool] | None, kept: list[bytes] | None) -> None:
    global dropped
    if not sink.tell():  # nothing written: the common case costs no read
        return
    sink.seek(0)
    out = []
    for line in sink.read().splitlines(keepends=True):
        if NOISE.match(line):
            dropped += 1
        elif keep is not None and kept is not None and keep(line):
            kept.append(line.rstrip(b"\n"))
        else:
            out.append(line)
    sink.seek(0)
    sink.truncate()
    if out:
        os.write(2, b"".join(out))

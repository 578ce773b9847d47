"""Progress of long stage work: a live bar on a terminal, plain lines in a log.

On a terminal, ``progress_bar`` is a tqdm bar. When stderr is not a terminal (``dvc repro`` piped to a
file, a Prefect worker, CI), tqdm would still redraw its line with carriage returns, which a log shows
as one line of thousands of characters; there the bar prints one ordinary line at most every
``LOG_EVERY`` seconds and one when it closes.
"""

from __future__ import annotations

import sys
import time
from typing import Any

LOG_EVERY = 30.0
"""Seconds between two progress lines in a log."""


class _LogLines:
    """The part of tqdm's interface the stages use, printing ``desc: n/total unit (p%), r unit/s`` lines."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self._start = self._last = time.monotonic()
        self._start_n = initial

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= LOG_EVERY:
            self._line()

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def _line(self) -> None:
        self._last = time.monotonic()
        rate = (self.n - self._start_n) / max(self._last - self._start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        print(f"{self.desc}: {self.n}{of} {self.unit}{pct}, {rate:.1f} {self.unit}/s", file=sys.stderr, flush=True)

    def close(self) -> None:
        self._line()

    def __enter__(self) -> _LogLines:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(total: int | None = None, *, desc: str, unit: str, enabled: bool = True, initial: int = 0) -> Any:
    """A progress bar over ``total`` items (None: unknown), or one that shows nothing when not ``enabled``."""
    from tqdm import tqdm

    if enabled and not sys.stderr.isatty():
        return _LogLines(total, desc, unit, initial)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, mininterval=1.0)

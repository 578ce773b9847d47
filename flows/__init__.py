"""Thin Prefect flows over the ``spotdiff`` library: one flow per stage, no logic of their own."""

import os
import sys


def _one_line_interrupt_while_starting() -> None:
    """In the ``spotdiff`` command only (``spotdiff ...``, ``python -m flows ...``): a Ctrl-C that arrives while
    the command is still importing, before ``flows.interrupts`` handles signals, prints one line instead of
    an import traceback (nothing was started yet). Other programs that import ``flows`` are left alone."""
    if not sys.argv or not (os.path.basename(sys.argv[0]) == "spotdiff" or sys.argv[0] == "-m"):
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            sys.stderr.write("spotdiff: interrupted by SIGINT while starting; nothing had started: rerun the same command\n")
            return
        previous(kind, value, tb)

    sys.excepthook = hook


_one_line_interrupt_while_starting()

"""The errors a run can end with, and the one exception that ends it on a signal.

Every expected failure is a ``SpotdiffError``: its message is already phrased for the person running
the command (what is wrong, the path or params key, what to do), so ``spotdiff`` prints it as one
line, without a traceback, and exits non-zero. Anything else is a bug and gets a full traceback.
Each kind also subclasses the builtin it replaced, so older ``except ValueError`` /
``except FileNotFoundError`` callers still catch it::

    SpotdiffError
    ├── ConfigError         params.yaml, an override or an option (ValueError; exit 2)
    ├── InputError          an input that exists but cannot be used: a model of another backbone,
    │   │                   shards that do not match their index, an argument's value (ValueError)
    │   └── ReleaseError    a release that cannot be written or does not verify; lists every problem
    ├── MissingInputError   an input that is not there: an upstream stage did not run (FileNotFoundError)
    └── OutputError         an output path that cannot be written as asked (OSError)
        └── OutputExistsError   ... because something is already there (FileExistsError)

Not run errors:

* ``spotdiff.common.images.BadInput`` is one input sample's reject (a broken photo): it is counted
  in ``rejects.parquet`` with its reason and the run goes on.
* ``Interrupted`` (SIGINT, SIGTERM) derives from ``KeyboardInterrupt``, not ``Exception``, so no
  ``except Exception`` in the library swallows it: it unwinds every ``with``/``finally`` (worker
  pools terminated, temporary files removed) up to the command, which prints one line and exits
  128 + the signal number.
"""

from __future__ import annotations

import signal


class SpotdiffError(Exception):
    """An expected failure with a message for a person; the CLI prints it without a traceback."""

    exit_code = 1


class ConfigError(SpotdiffError, ValueError):
    """A params.yaml problem (or an option's), already phrased for the person who wrote the file."""

    exit_code = 2


class InputError(SpotdiffError, ValueError):
    """An input (a file, a folder, an argument's value) that cannot be used: damaged, inconsistent, out of
    range, or made for something else."""


class ReleaseError(InputError):
    """A release that cannot be written or does not verify; ``problems`` lists every problem found."""

    def __init__(self, where: str, problems: list[str]):
        self.where, self.problems = where, list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{where}: {len(self.problems)} problem(s):\n{lines}")

    def __reduce__(self):  # picklable (Prefect and worker processes send exceptions across processes)
        return type(self), (self.where, self.problems)


class MissingInputError(SpotdiffError, FileNotFoundError):
    """An input that is not there (an upstream stage did not finish, a file the user named)."""


class OutputError(SpotdiffError, OSError):
    """An output path that cannot be written as asked (a link to a file where a folder is needed)."""


class OutputExistsError(OutputError, FileExistsError):
    """An output that would replace something already there, which the command never does."""


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread on SIGINT or SIGTERM (``signum``) once a command installs its handlers."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process killed by it (130 SIGINT, 143 SIGTERM)."""
        return 128 + self.signum

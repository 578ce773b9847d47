"""Output folders and files, written so that an interrupted run never leaves something a rerun trips on.

* ``reset_dir(path)`` empties a stage's output folder before the stage writes it. The folder itself is
  kept: a symbolic link to a folder on another disk, or a mount point, is emptied and written
  through, never removed or replaced.
* ``atomic_write(path)`` yields a temporary name beside ``path`` (``.<name>.<pid>.tmp``) and renames
  it into place only when the block finishes; on any exception, Ctrl-C included, the temporary file
  is removed, so a file under its final name is always complete (and an OSError without a file name,
  such as a full disk's, is given ``path``'s).
* ``clean_stale_tmp(folder)`` removes the temporary files that a killed run (SIGKILL, power loss)
  could not remove itself: those whose writing process is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

from spotdiff.errors import OutputError

_TMP = re.compile(r"^\..+\.(\d+)\.tmp$")


def tmp_name(path: str | Path) -> Path:
    """The temporary name ``atomic_write`` uses for ``path`` in this process."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block ends, remove it if the
    block raises (KeyboardInterrupt included)."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and err.filename is None:  # a failed write names no file: name this one
            err.filename = str(path)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's process
        return True
    return True


def clean_stale_tmp(folder: str | Path) -> list[Path]:
    """Remove ``atomic_write``'s temporary files in ``folder`` whose process no longer runs; returns them.
    Those of a live process (a concurrent writer) are left alone."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TMP.match(entry.name)
        if m and int(m[1]) != os.getpid() and not _pid_alive(int(m[1])) and not entry.is_dir():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def _remove(entry: Path) -> None:
    if entry.is_symlink() or not entry.is_dir():
        entry.unlink()
    elif os.path.ismount(entry):
        reset_dir(entry)  # another file system mounted inside the output: empty it, keep the mount
    else:
        shutil.rmtree(entry)


def reset_dir(path: str | Path) -> Path:
    """Make ``path`` an empty folder and return it. An existing folder is emptied, not replaced, so a
    symbolic link to a folder or a mount point stays what it is and is written through. A missing
    folder is created with its parents. Raises ``OutputError`` for a link to nothing or a non-folder."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise OutputError(f"{path} is a symbolic link to {os.readlink(path)!r}, which does not exist: "
                          "create that folder (or remove the link) and run again")
    if path.exists() and not path.is_dir():
        what = f"a symbolic link to {os.readlink(path)!r}, which" if path.is_symlink() else "it"
        raise OutputError(f"{path} must be a folder, but {what} is a file: remove it or choose another path")
    if path.is_dir():
        for entry in path.iterdir():
            _remove(entry)
    else:
        path.mkdir(parents=True)
    return path

"""Finished chunks of an interrupted generate run, picked up by the next run with the same inputs.

Where: ``<out>.partial/<key>/``, beside the output folder. Not inside it, because every run empties the
output folder first; and not a DVC output, because ``dvc repro`` deletes a stage's outputs before it runs
(train's checkpoint is a ``persist`` output instead; chunks need no DVC copy).

``key`` names what the chunks belong to: the generate params (less ``workers``, which changes no byte),
the code generate runs (``spotdiff.common.fingerprint``) and the name, size and mtime of every file under
the configured photo and background folders. Chunks of any other key are removed when a run starts.

Each finished chunk is its tar plus ``chunk-NNNNNN.json`` (its records and rejects), written after the tar:
the JSON marks the chunk complete, so a chunk cut off mid-write is built again. When the run completes,
the tars move into the output folder (a rename on one filesystem) and the store is removed, so a finished
run keeps no second copy. Output bytes are the same whether a run resumed or not (tests/test_resume.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from spotdiff.common.fingerprint import code_digest
from spotdiff.common.outputs import atomic_write, clean_stale_tmp
from spotdiff.common.tars import write_samples
from spotdiff.config import GenerateConfig


def _folder_stamp(h: Any, folder: str | None) -> None:
    """Names, sizes and mtimes of every file under ``folder``: a photo replaced under the same name is
    other input. Cheap (no file is read)."""
    if not folder or not Path(folder).is_dir():
        return
    for path in sorted(Path(folder).rglob("*")):
        try:
            st = path.stat()
        except OSError:
            continue  # a dangling link: the inventory reports it
        if path.is_file():
            h.update(f"{path.relative_to(folder).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())


def run_key(cfg: GenerateConfig) -> str:
    """What a run's chunks belong to (see the module doc)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps(cfg.model_dump(mode="json", exclude={"workers"}), sort_keys=True).encode())
    h.update(code_digest("spotdiff.generate.run").encode())
    _folder_stamp(h, cfg.folder)
    _folder_stamp(h, cfg.background_folder)
    return h.hexdigest()


class ChunkStore:
    """The finished chunks of runs of ``cfg`` into ``out``. ``fresh=True`` discards what is there."""

    def __init__(self, out: str | Path, cfg: GenerateConfig, fresh: bool = False):
        self.root = Path(os.fspath(out).rstrip("/\\") + ".partial")
        self.dir = self.root / run_key(cfg)
        if self.root.is_dir():
            for other in self.root.iterdir():
                if fresh or other != self.dir:
                    _remove(other)
        self.dir.mkdir(parents=True, exist_ok=True)
        clean_stale_tmp(self.dir)

    def _tar(self, index: int) -> Path:
        return self.dir / f"chunk-{index:06d}.tar"

    def _meta(self, index: int) -> Path:
        return self.dir / f"chunk-{index:06d}.json"

    def finished(self) -> dict[int, dict[str, Any]]:
        """Chunk index -> ``{"records", "rejects", "seconds"}`` of every complete chunk."""
        out = {}
        for meta in sorted(self.dir.glob("chunk-*.json")):
            index = int(meta.stem.split("-")[1])
            if not self._tar(index).is_file():
                continue
            try:
                out[index] = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue  # unreadable: built again
        return out

    def save(self, index: int, samples: list, records: list, rejects: list, seconds: float) -> None:
        """Keep one built chunk: its tar, then the JSON that marks it complete."""
        write_samples(self._tar(index), samples)
        with atomic_write(self._meta(index)) as tmp:
            tmp.write_text(json.dumps({"records": records, "rejects": rejects, "seconds": seconds}))

    def finish(self, chunks: Path) -> None:
        """Move every chunk tar into ``chunks`` and remove the store."""
        for tar in sorted(self.dir.glob("chunk-*.tar")):
            shutil.move(tar, chunks / tar.name)  # a rename on one filesystem
        _remove(self.root)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

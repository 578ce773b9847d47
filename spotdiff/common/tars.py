"""Deterministic WebDataset tar I/O.

``write_samples`` uses webdataset's ``TarWriter`` with everything that would vary pinned:
member mtime (0), owner and group names, mode, member order (sorted suffixes, samples
in the order given). It writes to a temporary name (``spotdiff.common.outputs.atomic_write``) and
renames only when the tar is complete, so a crash never leaves a truncated shard under the final name,
and an interrupted write removes its temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

from spotdiff.common.outputs import atomic_write

MTIME = 0
"""Member modification time: fixed so rebuilding gives byte-identical tars."""


def write_samples(path: str | Path, samples: Iterable[tuple[str, dict[str, bytes]]]) -> int:
    """Write ``(key, {suffix: bytes})`` samples to ``path`` atomically; returns bytes of payload."""
    # Imported here: webdataset imports torch (~2.5 s), which worker processes never need.
    import webdataset as wds

    total = 0
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        writer = wds.TarWriter(f, user="spotdiff", group="spotdiff", mode=0o444, mtime=MTIME, encoder=False)
        try:
            for key, members in samples:
                total += writer.write({"__key__": key, **members})
        except BaseException:
            # Close the tar stream while its file is open (a full disk fails again here: ignored, the first
            # error is the one to report); left to the garbage collector it writes to a closed file.
            with contextlib.suppress(Exception):
                writer.close()
            raise
        writer.close()
    return total


def read_samples(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Samples of a tar written by ``write_samples``, in file order, as (key, {suffix: bytes}).

    Members are grouped by the WebDataset rule: key = name up to the first dot of the
    basename, suffix = the rest.
    """
    key, members = None, {}
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            base = info.name.rsplit("/", 1)[-1]
            k, _, suffix = base.partition(".")
            if k != key and key is not None:
                yield key, members
                members = {}
            key = k
            members[suffix] = tar.extractfile(info).read()
    if key is not None:
        yield key, members


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def samples_with_keys(chunk_dir: Path, keys: set[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, members) of every sample named in ``keys`` from ``chunk_dir``'s ``chunk-*.tar``, in chunk
    order, each key once."""
    seen: set[str] = set()
    for chunk in sorted(Path(chunk_dir).glob("chunk-*.tar")):
        for key, members in read_samples(chunk):
            if key in keys and key not in seen:
                seen.add(key)
                yield key, members


def member_digests(members: dict[str, bytes]) -> dict[str, str]:
    """Member name -> sha256 hex of its bytes, in name order: what generate records per group, and what
    QA and shard check, so that damage to a chunk tar after generate is caught without DVC."""
    return {name: sha256_bytes(members[name]) for name in sorted(members)}


def digest_mismatch(expected: dict[str, str] | None, got: dict[str, str]) -> str | None:
    """Why members with digests ``got`` (``member_digests``) are not those recorded as ``expected``, or None
    when they are the same bytes. ``expected`` None: the group was never recorded."""
    if expected is None:
        return "not in records.parquet"
    for name in sorted(set(expected) | set(got)):
        if expected.get(name) != got.get(name):
            what = ("is missing" if name not in got else "was not written by generate" if name not in expected
                    else "differs from the sha256 generate recorded (damaged since)")
            return f"{name} {what}"
    return None

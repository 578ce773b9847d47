"""``spotdiff gc``: remove feature-cache entries (``train.cache_dir``) that the current shards never read.

An entry is ``<split>-<key>.safetensors``, where ``key`` digests the backbone's identity, the split's shard
checksums and ``cache.FEATURE_VERSION`` (``cache.cache_key``). Entries are never deleted by train or
evaluate, so every rebuild of the shards (a new generate, QA or shard param) leaves ~60 MB per 600 demo
groups behind, ~1 GB per 10k groups. An entry is kept when its own identity (in its header) with the
current shard folder's checksums gives its name back, i.e. train or evaluate would read it now, whatever
backbone ``embed`` names; everything else is removed: entries of shard sets that are gone, of an older
feature format, unreadable ones, and the temporary files of writers that were killed. Going back to older
shards (a ``git checkout`` of an earlier dataset) then encodes them once again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from spotdiff.common.outputs import clean_stale_tmp
from spotdiff.common.shardset import split_tars
from spotdiff.errors import MissingInputError
from spotdiff.model.cache import cache_key

ENTRY = re.compile(r"^(?P<split>[a-z]+)-(?P<key>[0-9a-f]+)\.safetensors$")


@dataclass
class PruneResult:
    kept: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    """Entries removed (or, with ``dry_run``, that would be), and stale temporary files."""
    freed: int = 0
    """Bytes of ``removed``."""
    dry_run: bool = False

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (f"gc: {verb} {len(self.removed)} files ({self.freed / 1e6:.1f} MB), kept {len(self.kept)} "
                "feature-cache entries of the current shards")


def entry_identity(path: Path) -> str | None:
    """The backbone identity recorded in an entry's safetensors header; None when unreadable."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= 100 << 20:
                return None
            meta = json.loads(f.read(n)).get("__metadata__") or {}
    except (OSError, ValueError, AttributeError):
        return None
    identity = meta.get("identity")
    return identity if isinstance(identity, str) else None


def _current(path: Path, shard_dir: Path) -> bool:
    m = ENTRY.match(path.name)
    identity = entry_identity(path) if m else None
    if identity is None:
        return False
    try:
        tars = split_tars(shard_dir, m["split"])
    except MissingInputError:  # the split has no shards now
        return False
    return cache_key(identity, tars) == m["key"]


def prune_features(cache_dir: str | Path, shard_dir: str | Path | None, *, dry_run: bool = False) -> PruneResult:
    """Remove the entries of ``cache_dir`` that ``shard_dir`` would not read (see the module docstring);
    ``shard_dir`` None: remove every entry. ``dry_run``: only say what would go."""
    folder = Path(cache_dir)
    result = PruneResult(dry_run=dry_run)
    if not folder.is_dir():
        return result
    if shard_dir is not None and not (Path(shard_dir) / "SHA256SUMS").is_file():
        raise MissingInputError(f"{shard_dir}/SHA256SUMS not found: gc keeps the entries of the current shards, "
                                "so it needs them (or --all to remove every entry)")
    for path in sorted(folder.glob("*.safetensors")):
        if shard_dir is not None and _current(path, Path(shard_dir)):
            result.kept.append(path)
            continue
        result.freed += path.stat().st_size
        result.removed.append(path)
        if not dry_run:
            path.unlink(missing_ok=True)
    if not dry_run:
        result.removed += clean_stale_tmp(folder)
    return result

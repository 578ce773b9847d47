"""A shard folder as the shard stage leaves it: ``{split}-NNNNNN.tar``, ``SHA256SUMS``, ``index.parquet``,
``README.md`` (a Hugging Face card: ``datasets.load_dataset`` on the folder).

Read by train, evaluate and publish, and by ``spotdiff verify-shards``.

``scan_shard`` reads a shard tar once and returns everything the checks need: the file's sha256 and,
per sample, each member's size and sha256. A tar up to ``READ_LIMIT`` bytes (a shard is at most
``shard.max_bytes``, 64 MB by default) is read into memory in one piece and its plain ustar headers are
parsed from there (about 3x faster than ``tarfile`` per member); anything else (a larger file, a header
``tarfile`` would have to interpret: pax, GNU, links, folders, a bad checksum) goes through ``tarfile``.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable

import pyarrow.parquet as pq

from spotdiff.common.record import KEY_RE
from spotdiff.errors import InputError, MissingInputError

SPLITS = ("train", "val", "test")
HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}
"""Each split's name in Hugging Face dataset cards (``configs``, ``dataset_info``): ``val`` is ``validation`` there,
as ``datasets`` names it; the tars (``val-NNNNNN.tar``), ``index.parquet`` and the stages keep the short name."""


def hf_configs(splits: Iterable[str], folder: str = "") -> list[dict[str, Any]]:
    """A card's ``configs``: one ``default`` config whose data files are ``{folder}{split}-*.tar`` per split, under
    the split's Hugging Face name; this is how ``datasets.load_dataset`` on the folder finds the shards."""
    return [{"config_name": "default",
             "data_files": [{"split": HF_SPLITS[s], "path": f"{folder}{s}-*.tar"} for s in splits]}]


def split_tars(shard_dir: str | Path, split: str) -> list[tuple[Path, str]]:
    """(tar path, sha256) of ``split``'s shards, from ``SHA256SUMS``, in name order."""
    shard_dir = Path(shard_dir)
    sums = shard_dir / "SHA256SUMS"
    if not sums.is_file():
        raise MissingInputError(f"{sums} not found: run `spotdiff shard` first")
    tars = []
    for line in sums.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        if name.startswith(f"{split}-") and name.endswith(".tar"):
            tars.append((shard_dir / name, digest))
    if not tars:
        raise MissingInputError(f"{shard_dir}: SHA256SUMS lists no {split}-*.tar shards")
    return sorted(tars)


def member_problem(name: str) -> str | None:
    """Why a shard member's full name is not a flat ``KEY.SUFFIX`` (a tar extracts it where its name says:
    ``../../x.anchor.jpg`` would land outside the folder); None when it is one."""
    if "/" in name or "\\" in name or "\x00" in name:
        return "a path, not a flat KEY.SUFFIX name (no separators allowed)"
    key, dot, suffix = name.partition(".")
    if not KEY_RE.match(key):
        return f"key {key!r} does not match {KEY_RE.pattern}"
    if not dot or "" in suffix.split("."):
        return "an empty part in its suffix (no '..', no trailing dot)"
    return None


READ_LIMIT = 256 << 20
"""Largest shard ``scan_shard`` holds in memory; a larger one is read twice (hash, then members)."""
_BLOCK = 512
_ZERO = bytes(_BLOCK)


@dataclass
class ShardScan:
    """One shard tar as read: its sha256, its samples in file order, and what is wrong with its members."""

    sha256: str
    samples: list[tuple[str, dict[str, tuple[int, str]]]] = field(default_factory=list)
    """(key, {suffix: (bytes, sha256)}) per sample, consecutive members of a key grouped."""
    problems: list[str] = field(default_factory=list)
    """Members that are no regular file or no flat ``KEY.SUFFIX`` name, samples split in pieces."""
    data: bytes | None = None
    """The file's bytes, when it was read into memory (for a caller that writes them on)."""


_NUMBERS = ((100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (148, 156), (329, 337), (337, 345))
"""Octal fields of a ustar header (mode, uid, gid, size, mtime, checksum, device numbers): ``tarfile``
parses every one, and a header where one does not parse ends the archive there."""


def _ustar_members(data: memoryview) -> list[tuple[str, int, int]] | None:
    """(name, data offset, size) of every member of a tar in memory whose headers are plain ustar regular
    files, read exactly as ``tarfile`` reads them; None when any header is anything else (or the tar is
    under one block), for ``tarfile`` to judge."""
    out = []
    pos, end = 0, len(data)
    if end < _BLOCK:
        return None
    while pos + _BLOCK <= end:
        head = bytes(data[pos:pos + _BLOCK])
        if head == _ZERO:
            break  # end of archive, as tarfile stops
        if (head[156:157] not in (b"0", b"\0") or head[257:263] != b"ustar\x00"
                or any(head[a] & 0x80 for a, _ in _NUMBERS)):  # base-256 numbers: tarfile's to parse
            return None
        try:
            numbers = {a: int(head[a:b].split(b"\0", 1)[0].strip() or b"0", 8) for a, b in _NUMBERS}
        except ValueError:
            return None
        size = numbers[124]
        if numbers[148] != sum(head[:148]) + 256 + sum(head[156:]):
            return None  # tarfile also accepts signed sums: it decides
        name = head[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        prefix = head[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if prefix:
            name = f"{prefix}/{name}"
        following = pos + _BLOCK + -(-size // _BLOCK) * _BLOCK
        if name.endswith("/") or following > end:
            return None  # a folder in V7 style, a truncated member: tarfile's own words
        out.append((name, pos + _BLOCK, size))
        pos = following
    return out


def _group(scan: ShardScan, members) -> ShardScan:
    """Fill ``scan`` from (name, regular file?, bytes or None) triples in file order."""
    current = None
    groups: dict[str, dict[str, tuple[int, str]]] = {}
    for name, regular, data in members:
        if not regular:
            scan.problems.append(f"member {name!r} is not a regular file")
            continue
        bad = member_problem(name)  # the full name: a basename check let '../../x.anchor.jpg' pass
        if bad:
            scan.problems.append(f"member {name!r}: {bad}")
            continue
        key, _, suffix = name.partition(".")
        if key != current:  # WebDataset readers group consecutive members by key
            if key in groups:
                scan.problems.append(f"sample {key!r} is split into non-adjacent members")
            else:
                groups[key] = {}
                scan.samples.append((key, groups[key]))
            current = key
        groups[key][suffix] = (len(data), hashlib.sha256(data).hexdigest())
    return scan


def _tarfile_members(f: IO[bytes]):
    with tarfile.open(fileobj=f, mode="r:") as tar:
        for info in tar:
            yield info.name, info.isreg(), tar.extractfile(info).read() if info.isreg() else None


def scan_stream(f: IO[bytes], sha256: str) -> ShardScan:
    """``scan_shard`` of a tar read from ``f`` by ``tarfile`` (its digest ``sha256`` already known), for a
    tar too large to hold in memory. Raises as ``scan_bytes``."""
    return _group(ShardScan(sha256), _tarfile_members(f))


def scan_bytes(data: bytes | memoryview, sha256: str | None = None) -> ShardScan:
    """``scan_shard`` of a tar already in memory (``sha256``: its digest, when already known; else it is
    computed on a second thread while this one reads the members: hashlib lets go of the GIL, so the two
    hashes of the same bytes take the time of about one on two cores). Raises ``tarfile.TarError`` (or
    ``EOFError``) when ``tarfile`` cannot read it."""
    view = memoryview(data)
    digest: list[str] = [sha256] if sha256 else []
    thread = None
    if not digest:
        thread = threading.Thread(target=lambda: digest.append(hashlib.sha256(view).hexdigest()))
        thread.start()
    try:
        scan = ShardScan("")
        fast = _ustar_members(view)
        if fast is None:
            _group(scan, _tarfile_members(io.BytesIO(view)))
        else:
            _group(scan, ((name, True, view[off:off + size]) for name, off, size in fast))
    finally:
        if thread is not None:
            thread.join()
    scan.sha256 = digest[0]
    return scan


def scan_shard(path: str | Path, keep: bool = False) -> ShardScan:
    """Read the shard tar at ``path`` once (see the module docstring); ``keep``: return its bytes too
    (``ShardScan.data``; not for a file over ``READ_LIMIT``, which is read twice instead)."""
    with open(path, "rb") as f:
        size = f.seek(0, io.SEEK_END)
        f.seek(0)
        if size > READ_LIMIT:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            f.seek(0)
            return scan_stream(f, digest)
        data = f.read()
    scan = scan_bytes(data)
    if keep:
        scan.data = data
    return scan


def index_problem(scan: ShardScan, shard: str, index: dict[str, dict]) -> str | None:
    """The first way the samples of ``scan`` (the shard named ``shard``) disagree with ``index``
    (``index.parquet``'s rows by key), or None."""
    for key, members in scan.samples:
        row = index.get(key)
        if row is None:
            return f"{shard}: sample {key} not in index.parquet"
        if row["shard"] != shard:
            return f"{key}: index says shard {row['shard']}, found in {shard}"
        if {m["name"]: (m["bytes"], m["sha256"]) for m in row["members"]} != members:
            return f"{shard}/{key}: members differ from index.parquet"
    return None


def read_index(out_dir: str | Path) -> list[dict]:
    """``index.parquet``'s rows (``ParquetFile``: ``read_table`` imports pyarrow's dataset layer and
    pandas, ~0.25 s)."""
    return pq.ParquetFile(Path(out_dir) / "index.parquet").read().to_pylist()


def verify_shards(out_dir: str | Path) -> int:
    """Re-read every tar once, check SHA256SUMS and every member against ``index.parquet``.

    Every member must be a regular file with a flat ``KEY.SUFFIX`` name (``member_problem``). Returns the number
    of samples checked; raises ``InputError`` (a ValueError) naming the first mismatch.
    """
    out = Path(out_dir)
    listed = {}
    for line in (out / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        listed[name] = digest
    index = {r["key"]: r for r in read_index(out)}
    seen = 0
    for name in sorted(set(listed) | {p.name for p in out.glob("*.tar")}):
        try:
            scan = scan_shard(out / name)
        except (tarfile.TarError, EOFError) as e:
            raise InputError(f"{out / name}: does not read as a tar: {e}") from None
        if name in listed and scan.sha256 != listed[name]:
            raise InputError(f"{out / name}: sha256 differs from SHA256SUMS")
        if scan.problems:
            raise InputError(f"{name}: {scan.problems[0]}")
        problem = index_problem(scan, name, index)
        if problem:
            raise InputError(problem)
        seen += len(scan.samples)
    if seen != len(index):
        raise InputError(f"index.parquet lists {len(index)} samples, tars hold {seen}")
    return seen

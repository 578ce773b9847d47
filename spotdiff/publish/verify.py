"""Checking a release tar without trusting it: ``verify`` and ``safe_extract``.

``verify`` re-checks a release tar without extracting it and raises ``ReleaseError`` listing every
problem it finds; ``safe_extract`` extracts only a release that passes the member checks. With a
public key both also require ``SHA256SUMS.sig`` to be that key's signature of ``SHA256SUMS``
(``spotdiff.publish.sign``): checksums alone vouch for nothing, anyone can recompute them.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import mmap
import os
import re
import shutil
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from spotdiff.common.shardset import READ_LIMIT, ShardScan, scan_bytes, scan_stream
from spotdiff.errors import OutputExistsError, ReleaseError
from spotdiff.publish import card
from spotdiff.publish import sign as signing
from spotdiff.publish.run import (MAX_LISTED, MAX_TEXT, PREFIX, REQUIRED, SHARD_RE, SUM_LINE, check_version,
                                  safetensors_summary)


@dataclass
class VerifyReport:
    """What ``verify`` checked in a release that passed."""

    path: str
    version: str
    files: int
    """File members checked against SHA256SUMS (SHA256SUMS itself not counted)."""
    bytes: int
    """Bytes of those files."""
    samples: int
    splits: dict[str, int] = field(default_factory=dict)
    """Samples per split (from the shards, equal to index.parquet and the card)."""
    shards: int = 0
    model: list[str] = field(default_factory=list)
    """Packaged model files (``model/...``), empty when none."""
    signature: str = "unsigned"
    """``unsigned``, ``not checked`` (signed, no key given) or ``key <id>`` (the signature was checked)."""


def check_members(members: list[tarfile.TarInfo]) -> tuple[str | None, list[str]]:
    """(top folder, problems) of a release's member list: every member must be a regular file or a
    folder under one top folder ``spotdiff10k-<version>``, with a relative, canonical name (no ``..``,
    no absolute path, no backslash, no empty or ``.`` part), no special mode bits, no duplicate."""
    problems: list[str] = []
    if not members:
        return None, ["the tar has no members"]
    tops = Counter()
    seen: set[str] = set()
    for m in members:
        name = m.name
        parts = name.split("/")
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
            problems.append(f"{name!r}: absolute path")
        if ".." in parts:
            problems.append(f"{name!r}: path traversal ('..')")
        if "\\" in name or "\x00" in name:
            problems.append(f"{name!r}: backslash or NUL in the name")
        elif any(p in ("", ".") for p in parts) and not name.startswith("/"):
            problems.append(f"{name!r}: non-canonical path (empty or '.' part)")
        if m.issym():
            problems.append(f"{name!r}: symbolic link to {m.linkname!r} (links are not allowed)")
        elif m.islnk():
            problems.append(f"{name!r}: hard link to {m.linkname!r} (links are not allowed)")
        elif m.ischr() or m.isblk():
            problems.append(f"{name!r}: device file (not allowed)")
        elif m.isfifo():
            problems.append(f"{name!r}: FIFO (not allowed)")
        elif not (m.isdir() or m.type in (tarfile.REGTYPE, tarfile.AREGTYPE)):
            problems.append(f"{name!r}: unsupported member type {m.type!r}")
        if m.mode & 0o7000:
            problems.append(f"{name!r}: setuid/setgid/sticky mode {oct(m.mode)}")
        if name in seen:
            problems.append(f"{name!r}: appears more than once")
        seen.add(name)
        tops[parts[0]] += 1
    top = tops.most_common(1)[0][0]
    outside = sorted(m.name for m in members if m.name.split("/")[0] != top)
    if outside:
        problems.append(f"members outside the top folder {top!r}: {outside}")
    if not top.startswith(PREFIX):
        problems.append(f"top folder {top!r} is not named {PREFIX}<version>")
    else:
        try:
            check_version(top[len(PREFIX):])
        except ValueError as e:
            problems.append(f"top folder {top!r}: {e}")
    return top, problems


def _read(tar: tarfile.TarFile, m: tarfile.TarInfo, limit: int = MAX_TEXT) -> bytes:
    if m.size > limit:
        raise ValueError(f"{m.name}: {m.size} bytes, more than the {limit} read for metadata")
    return tar.extractfile(m).read()


def _hash_member(tar: tarfile.TarFile, m: tarfile.TarInfo) -> str:
    h = hashlib.sha256()
    f = tar.extractfile(m)
    while chunk := f.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


def _open_release(path: Path) -> tuple[tarfile.TarFile, list[tarfile.TarInfo]]:
    """The release tar at ``path``, open, and its member list; ``ReleaseError`` when it is no readable
    uncompressed tar."""
    try:
        tar = tarfile.open(path, "r:")
        return tar, tar.getmembers()
    except (OSError, tarfile.TarError) as e:
        raise ReleaseError(str(path), [f"not a readable (uncompressed) tar: {e}"]) from None


def verify(release_tar: str | Path, key: str | Path | None = None) -> VerifyReport:
    """Check a release tar without extracting it; raises ``ReleaseError`` listing every problem. ``key``: an
    Ed25519 public key file; the release must then carry that key's signature of its ``SHA256SUMS``.

    Checks: member names and types (``check_members``); every file in SHA256SUMS exists with that
    sha256 and no other file exists; the required files are there; ``shards/SHA256SUMS`` matches the
    shard tars; the card's YAML header parses, its version is the top folder's, and its splits
    (samples, bytes), data files and features match ``index.parquet`` and ``sizes.json``; each shard
    re-reads, holds only regular files with flat ``KEY.SUFFIX`` names, and its samples (keys, member
    names, sizes, sha256) match the index; model safetensors headers fit their files; metrics.json and
    params.yaml parse.
    """
    public_key = signing.load_public_key(key) if key is not None else None  # a bad key file fails first
    path = Path(release_tar)
    tar, members = _open_release(path)
    with tar:
        top, problems = check_members(members)
        prefix = f"{top}/"
        files = {m.name[len(prefix):]: m for m in members
                 if m.name.startswith(prefix) and m.type in (tarfile.REGTYPE, tarfile.AREGTYPE)}
        digests, scans = _read_files(path, tar, files)
        problems += _check_sums(tar, files, digests)
        signature, probs = _check_signature(tar, files, public_key)
        problems += probs
        for need in REQUIRED:
            if need not in files:
                problems.append(f"{need}: missing")
        index_rows = sizes = None
        try:
            if "shards/index.parquet" in files:
                raw = tar.extractfile(files["shards/index.parquet"]).read()
                index_rows = pq.ParquetFile(io.BytesIO(raw)).read().to_pylist()  # read_table imports pandas
        except Exception as e:  # any pyarrow error: the index is unreadable, which is the problem to report
            problems.append(f"shards/index.parquet: unreadable: {e}")
        try:
            if "shards/sizes.json" in files:
                sizes = json.loads(_read(tar, files["shards/sizes.json"]))
        except ValueError as e:
            problems.append(f"shards/sizes.json: {e}")
        shard_names = sorted(n[len("shards/"):] for n in files if n.startswith("shards/") and n.endswith(".tar"))
        problems += [f"shards/{n}: not a shard name ({SHARD_RE.pattern})" for n in shard_names if not SHARD_RE.match(n)]
        shard_names = [n for n in shard_names if SHARD_RE.match(n)]
        if not shard_names:
            problems.append("shards/: no shard tars")
        problems += _check_shard_sums(tar, files, digests, shard_names)
        counts: dict[str, int] = {}
        if index_rows is not None:
            for n in shard_names:
                counts[n], probs = _check_shard(tar, files[f"shards/{n}"], n, index_rows, scans.get(n))
                problems += probs
            present = set(shard_names)
            missing = sorted({r["shard"] for r in index_rows} - present)
            if missing:
                problems.append(f"index.parquet lists samples in shards not in the release: {missing}")
        version = top[len(PREFIX):] if top and top.startswith(PREFIX) else ""
        if "README.md" in files and index_rows is not None and isinstance(sizes, dict):
            problems += _check_card(tar, files, index_rows, sizes, shard_names, version)
        for name, m in sorted(files.items()):
            try:
                if name.startswith("model/") and name.endswith(".safetensors"):
                    safetensors_summary(tar.extractfile(m), m.size, name)
                elif name.endswith(".json"):
                    json.loads(_read(tar, m))
                elif name.endswith((".yaml", ".lock")):
                    yaml.safe_load(_read(tar, m))
            except (ValueError, yaml.YAMLError) as e:
                problems.append(f"{name}: does not parse: {e}")
    if problems:
        raise ReleaseError(str(path), problems)
    splits = dict(sorted(Counter(r["split"] for r in index_rows).items()))
    checked = {n: m for n, m in files.items() if n not in ("SHA256SUMS", signing.SIG_NAME)}
    return VerifyReport(str(path), version, len(checked), sum(m.size for m in checked.values()), len(index_rows),
                        splits, len(shard_names), sorted(n for n in files if n.startswith("model/")), signature)


def _check_signature(tar: tarfile.TarFile, files: dict[str, tarfile.TarInfo], public_key) -> tuple[str, list[str]]:
    """(what ``VerifyReport.signature`` says, problems): with ``public_key`` the signature must be there and match."""
    sig_member = files.get(signing.SIG_NAME)
    if public_key is None:
        return ("not checked" if sig_member is not None else "unsigned"), []
    if sig_member is None:
        return "unsigned", [f"{signing.SIG_NAME}: missing: the release is not signed, and a key was given to check it"]
    if "SHA256SUMS" not in files:
        return "unsigned", []  # reported as missing
    try:
        problem = signing.check(_read(tar, files["SHA256SUMS"]), _read(tar, sig_member, 4096), public_key)
    except ValueError as e:
        problem = f"{signing.SIG_NAME}: {e}"
    return (f"key {signing.key_id(public_key)}", []) if problem is None else ("bad", [problem])


def _check_sums(tar: tarfile.TarFile, files: dict[str, tarfile.TarInfo], digests: dict[str, str]) -> list[str]:
    if "SHA256SUMS" not in files:
        return []  # reported as missing by the caller
    problems: list[str] = []
    try:
        text = _read(tar, files["SHA256SUMS"]).decode()
    except (ValueError, UnicodeDecodeError) as e:
        return [f"SHA256SUMS: unreadable: {e}"]
    listed: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        m = SUM_LINE.match(line)
        if not m:
            problems.append(f"SHA256SUMS line {i}: not '<sha256>  <path>': {line[:120]!r}")
            continue
        digest, name = m[1], m[2]
        if name in listed:
            problems.append(f"SHA256SUMS lists {name!r} twice")
        listed[name] = digest
    for name, digest in sorted(listed.items()):
        if name not in files:
            problems.append(f"{name}: listed in SHA256SUMS but not in the release")
        elif digests[name] != digest:
            problems.append(f"{name}: sha256 {digests[name][:16]}... differs from SHA256SUMS {digest[:16]}... "
                            "(file changed or corrupted)")
    extra = sorted(set(files) - set(listed) - {"SHA256SUMS", signing.SIG_NAME})
    problems += [f"{name}: not listed in SHA256SUMS (unexpected file)" for name in extra]
    return problems


def _check_shard_sums(tar: tarfile.TarFile, files: dict[str, tarfile.TarInfo], digests: dict[str, str],
                      shard_names: list[str]) -> list[str]:
    if "shards/SHA256SUMS" not in files:
        return []
    problems = []
    listed = {}
    for line in _read(tar, files["shards/SHA256SUMS"]).decode(errors="replace").splitlines():
        m = SUM_LINE.match(line)
        if not m:
            problems.append(f"shards/SHA256SUMS: malformed line {line[:120]!r}")
            continue
        listed[m[2]] = m[1]
    if sorted(listed) != shard_names:
        problems.append(f"shards/SHA256SUMS lists {sorted(listed)}, the release holds {shard_names}")
    for name, digest in sorted(listed.items()):
        got = digests.get(f"shards/{name}")
        if got is not None and got != digest:
            problems.append(f"shards/{name}: sha256 differs from shards/SHA256SUMS")
    return problems


def _read_files(path: Path, tar: tarfile.TarFile, files: dict[str, tarfile.TarInfo],
                ) -> tuple[dict[str, str], dict[str, ShardScan | Exception]]:
    """(sha256 of every file member, scans of the shard tars): one read of the release, in file order,
    through a memory map (no copies). Each shard tar is hashed and its members read from the same bytes
    (``scan_bytes``). Where the file cannot be mapped, members are read with ``tarfile`` instead (a shard
    over ``READ_LIMIT`` then has its members read again later)."""
    digests: dict[str, str] = {}
    scans: dict[str, ShardScan | Exception] = {}
    try:
        with open(path, "rb") as f:
            mapped = memoryview(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ,
                                          flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)))
    except (OSError, ValueError):  # an empty file, a file system without mmap
        mapped = None
    for name, m in sorted(files.items(), key=lambda kv: kv[1].offset_data):
        shard = name.removeprefix("shards/")
        end = m.offset_data + m.size
        data = mapped[m.offset_data:end] if mapped is not None and end <= len(mapped) else None
        if name.startswith("shards/") and SHARD_RE.match(shard) and (data is not None or m.size <= READ_LIMIT):
            if data is None:
                data = tar.extractfile(m).read()
            try:
                scans[shard] = scan_bytes(data)  # its sha256 too
                digests[name] = scans[shard].sha256
            except (OSError, tarfile.TarError, EOFError) as e:
                scans[shard] = e.with_traceback(None)  # no frame keeps the mapped bytes
                digests[name] = hashlib.sha256(data).hexdigest()
        elif data is not None:
            digests[name] = hashlib.sha256(data).hexdigest()
        else:
            digests[name] = _hash_member(tar, m)
    return digests, scans


def _check_shard(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, index_rows: list[dict[str, Any]],
                 scan: ShardScan | Exception | None = None) -> tuple[int, list[str]]:
    """(samples read, problems) of one shard tar inside the release, against the index; ``scan``: what
    ``_read_files`` read of it (None: read it now)."""
    expect = {r["key"]: r for r in index_rows if r["shard"] == name}
    try:
        if scan is None:
            scan = scan_stream(tar.extractfile(member), "")
        if isinstance(scan, Exception):
            raise scan
    except (OSError, tarfile.TarError, EOFError) as e:
        return 0, [f"shards/{name}: does not re-read as a tar: {e}"]
    problems = [f"shards/{name}: {p}" for p in scan.problems]
    groups = dict(scan.samples)
    order = [key for key, _ in scan.samples]
    for key in order:
        row = expect.get(key)
        if row is None:
            problems.append(f"shards/{name}: sample {key!r} is not in index.parquet for this shard")
        else:
            want = {m["name"]: (m["bytes"], m["sha256"]) for m in row["members"]}
            differ = sorted(n for n in set(want) | set(groups[key]) if want.get(n) != groups[key].get(n))
            if differ:
                problems.append(f"shards/{name}: sample {key!r}: members {differ} differ from index.parquet "
                                "(missing, extra, or other bytes)")
    if len(order) != len(expect):
        problems.append(f"shards/{name}: holds {len(order)} samples, index.parquet lists {len(expect)}")
    if len(problems) > MAX_LISTED:
        problems = problems[:MAX_LISTED] + [f"shards/{name}: ... and {len(problems) - MAX_LISTED} more problems"]
    return len(order), problems


def _check_card(tar: tarfile.TarFile, files: dict[str, tarfile.TarInfo], index_rows: list[dict[str, Any]],
                sizes: dict[str, Any], shard_names: list[str], version: str) -> list[str]:
    try:
        header = card.parse_header(_read(tar, files["README.md"]).decode())
    except (ValueError, UnicodeDecodeError) as e:
        return [str(e)]
    problems = []
    meta = header.get("spotdiff") if isinstance(header.get("spotdiff"), dict) else {}
    if str(meta.get("version")) != version:
        problems.append(f"README.md: spotdiff.version {meta.get('version')!r} != release version {version!r}")
    counts = Counter(r["split"] for r in index_rows)
    tar_bytes = Counter()
    for n in shard_names:
        tar_bytes[n.split("-")[0]] += files[f"shards/{n}"].size
    for split, info in sorted(sizes.items()):
        if not isinstance(info, dict):
            problems.append(f"shards/sizes.json: {split}: not an object")
            continue
        if info.get("samples") != counts.get(split, 0):
            problems.append(f"shards/sizes.json: {split} has {info.get('samples')} samples, "
                            f"index.parquet {counts.get(split, 0)}")
        if info.get("bytes") != tar_bytes.get(split, 0):
            problems.append(f"shards/sizes.json: {split} has {info.get('bytes')} bytes, "
                            f"its shard tars {tar_bytes.get(split, 0)}")
    ds = header.get("dataset_info") if isinstance(header.get("dataset_info"), dict) else {}
    try:
        card_splits = {s["name"]: (s["num_examples"], s["num_bytes"]) for s in ds.get("splits") or []}
        card_feats = [f["name"] for f in ds.get("features") or []]
        card_files = {d["split"] for c in header.get("configs") or [] for d in c.get("data_files") or []}
    except (KeyError, TypeError, AttributeError) as e:
        return problems + [f"README.md: malformed dataset_info/configs in the YAML header: {e!r}"]
    # the card names splits as Hugging Face does (val -> validation)
    want = {card.hf_split(s): (n, int(sizes.get(s, {}).get("bytes", -1)) if isinstance(sizes.get(s), dict) else -1)
            for s, n in sorted(counts.items())}
    if card_splits != want:
        problems.append(f"README.md: dataset_info.splits (samples, bytes) {card_splits} "
                        f"!= index.parquet/sizes.json {want}")
    if card_files != set(want):
        problems.append(f"README.md: configs data_files splits {sorted(card_files)} "
                        f"!= index.parquet splits {sorted(want)}")
    feats = card.feature_names(index_rows)
    if sorted(card_feats) != sorted(feats):
        problems.append(f"README.md: dataset_info.features {card_feats} != members in index.parquet {feats}")
    return problems


# ------------------------------------------------------------------------------------------ safe_extract


def _plain_member(m: tarfile.TarInfo) -> tarfile.TarInfo:
    """``m`` as tarfile's "data" filter would leave it: no set-id or sticky bits, no group or other write,
    owned by whoever extracts (for Pythons before 3.11.4, whose tarfile has no filters)."""
    m = copy.copy(m)  # TarInfo.replace is 3.11.4+ too
    m.mode = (m.mode & 0o755) | (0o700 if m.isdir() else 0o600)
    m.uid, m.gid, m.uname, m.gname = os.getuid(), os.getgid(), "", ""
    return m


def safe_extract(release_tar: str | Path, dest: str | Path, *, check_contents: bool = True,
                 key: str | Path | None = None) -> Path:
    """Extract a release into ``dest``; returns ``dest/spotdiff10k-<version>``.

    Refuses (``ReleaseError``) a tar whose members fail ``check_members`` (absolute paths, ``..``,
    links, devices, FIFOs, anything outside the one top folder) and, with ``check_contents``, any tar
    that fails ``verify``. Extraction uses tarfile's ``filter="data"`` as a second guard, goes to a
    temporary folder inside ``dest`` and is renamed into place, so a failure leaves nothing under the
    final name. Refuses to overwrite an existing ``dest/spotdiff10k-<version>`` (``OutputExistsError``, a
    FileExistsError). ``key`` as in ``verify`` (with ``check_contents``).
    """
    path = Path(release_tar)
    if check_contents:
        verify(path, key=key)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    tar, members = _open_release(path)
    with tar:
        top, problems = check_members(members)
        if problems:
            raise ReleaseError(str(path), problems)
        final = root / top
        if final.exists():
            raise OutputExistsError(f"{final} already exists: remove it or extract into another folder")
        staging = Path(tempfile.mkdtemp(prefix=".spotdiff-extract-", dir=root))
        try:
            for m in members:  # belt and braces: every target must resolve inside the staging folder
                if not (staging / m.name).resolve().is_relative_to(staging):
                    raise ReleaseError(str(path), [f"{m.name!r}: would be written outside {dest}"])
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the stdlib's own checks on top of ours
                tar.extractall(staging, members=members, filter="data")
            else:  # Debian 12's 3.11.2: check_members and the loop above refused paths, links and devices;
                # what is left of "data" is its mode and owner clean-up, done here
                tar.extractall(staging, members=[_plain_member(m) for m in members])
            os.replace(staging / top, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final

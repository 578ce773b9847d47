"""A shard folder as the shard stage leaves it: ``{split}-NNNNNN.tar``, ``SHA256SUMS``, ``index.parquet``,
``README.md`` (a Hugging Face card: ``datasets.load_dataset`` on the folder).

Read by train, evaluate and publish, and by ``spotdiff verify-shards``.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any, Iterable

import pyarrow.parquet as pq

from spotdiff.common.record import KEY_RE
from spotdiff.common.tars import read_samples, sha256_bytes, sha256_file
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


def verify_shards(out_dir: str | Path) -> int:
    """Re-read every tar, check SHA256SUMS and every member against ``index.parquet``.

    Every member must be a regular file with a flat ``KEY.SUFFIX`` name (``member_problem``). Returns the number
    of samples checked; raises ``InputError`` (a ValueError) naming the first mismatch.
    """
    out = Path(out_dir)
    for line in (out / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        if sha256_file(out / name) != digest:
            raise InputError(f"{out / name}: sha256 differs from SHA256SUMS")
    index = {r["key"]: r for r in pq.read_table(out / "index.parquet").to_pylist()}
    seen = 0
    for tar in sorted(out.glob("*.tar")):
        with tarfile.open(tar, "r:") as t:
            for info in t:
                problem = member_problem(info.name) if info.isreg() else "not a regular file"
                if problem:
                    raise InputError(f"{tar.name}: member {info.name!r}: {problem}")
        for key, members in read_samples(tar):
            row = index.get(key)
            if row is None:
                raise InputError(f"{tar.name}: sample {key} not in index.parquet")
            if row["shard"] != tar.name:
                raise InputError(f"{key}: index says shard {row['shard']}, found in {tar.name}")
            expect = {m["name"]: (m["bytes"], m["sha256"]) for m in row["members"]}
            got = {n: (len(v), sha256_bytes(v)) for n, v in members.items()}
            if expect != got:
                raise InputError(f"{tar.name}/{key}: members differ from index.parquet")
            seen += 1
    if seen != len(index):
        raise InputError(f"index.parquet lists {len(index)} samples, tars hold {seen}")
    return seen

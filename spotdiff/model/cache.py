"""Backbone features computed once per (backbone, shard set) and reused by every epoch and rerun.

With a frozen backbone, stage-1 training only ever sees the backbone's features, so images are
decoded and encoded once. An entry is keyed by the backbone's exact identity
(``ImageEncoder.identity``: backend, weights digest, preprocessing), the split's shard checksums
(from the shard folder's ``SHA256SUMS``) and ``FEATURE_VERSION``; anything else (a different seed,
learning rate, epoch count) reuses it. Entries are safetensors files, written to a temporary name and
renamed, so an interrupted build never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spotdiff.common.outputs import atomic_write, clean_stale_tmp
from spotdiff.common.record import VIEWS
from spotdiff.common.shardset import split_tars
from spotdiff.common.tars import read_samples

log = logging.getLogger(__name__)

FEATURE_VERSION = "features-v3-grid8"
"""Bump when ``ImageEncoder.features`` or this module changes what a cached vector means."""


@dataclass
class FeatureSet:
    """Backbone features of one split's groups, in shard order."""

    keys: list[str]
    subject_ids: list[str]
    records: list[dict[str, Any]]
    """Each group's JSON record (factor labels: pose angles, background ids, source, ...)."""
    features: np.ndarray
    """float32 (N, 3, F): views in ``sample.VIEWS`` order."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Groups left out, by reason (``corrupt_image``, ``missing_member``, ``bad_json``)."""

    def __len__(self) -> int:
        return len(self.keys)

    def subject_labels(self) -> np.ndarray:
        """Integer label per group: groups of one subject share it (first-seen order)."""
        index: dict[str, int] = {}
        return np.array([index.setdefault(s, len(index)) for s in self.subject_ids], dtype=np.int64)


def cache_key(identity: str, tars: list[tuple[Path, str]]) -> str:
    """Digest naming one cache entry: backbone identity + shard checksums + feature version."""
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{FEATURE_VERSION}\n{identity}\n".encode())
    for path, digest in tars:
        h.update(f"{path.name} {digest}\n".encode())
    return h.hexdigest()


def decode_group(members: dict[str, bytes]) -> tuple[dict[str, Any], list[np.ndarray]]:
    """(record, [RGB uint8 per view]) of one sample; ValueError("reason: detail") if unusable."""
    try:
        record = json.loads(members["json"])
    except KeyError:
        raise ValueError("missing_member: json") from None
    except ValueError as err:
        raise ValueError(f"bad_json: {err}") from None
    images = []
    for view in VIEWS:
        data = members.get(f"{view}.jpg")
        if data is None:
            raise ValueError(f"missing_member: {view}.jpg")
        try:
            with Image.open(io.BytesIO(data)) as im:
                images.append(np.asarray(im.convert("RGB")))
        except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for truncated / non-image bytes
            raise ValueError(f"corrupt_image: {view}.jpg: {err}") from None
    return record, images


def iter_groups(tars: list[tuple[Path, str]], skipped: Counter) -> Iterator[tuple[str, dict[str, Any], list[np.ndarray]]]:
    """(key, record, [RGB per view]) of every usable group in ``tars``; unusable ones are counted in
    ``skipped`` by reason and logged once per reason."""
    for path, _ in tars:
        for key, members in read_samples(path):
            try:
                record, images = decode_group(members)
            except ValueError as err:
                reason = str(err).split(":", 1)[0]
                if reason not in skipped:
                    log.warning("skipping %s/%s: %s (further %s samples counted, not logged)",
                                path.name, key, err, reason)
                skipped[reason] += 1
                continue
            yield key, record, images


def build(tars: list[tuple[Path, str]], encoder: Any, *, progress: bool = False) -> FeatureSet:
    """Decode every group of ``tars`` and compute ``encoder.features`` for its three views."""
    from spotdiff.common.progress import progress_bar

    skipped: Counter = Counter()
    keys, subjects, records, feats = [], [], [], []
    batch: list[np.ndarray] = []
    per_batch = max(1, encoder.batch_size // len(VIEWS))
    bar = progress_bar(desc="backbone features", unit="group", enabled=progress)

    def flush() -> None:
        if batch:
            feats.append(encoder.features(batch).reshape(-1, len(VIEWS), encoder.feature_dim))
            bar.update(len(batch) // len(VIEWS))
            batch.clear()

    for key, record, images in iter_groups(tars, skipped):
        keys.append(key)
        subjects.append(record.get("subject_id", key))
        records.append(record)
        batch.extend(images)
        if len(batch) >= per_batch * len(VIEWS):
            flush()
    flush()
    bar.close()
    # One copy of the features at a time besides the batches: join them, drop the batches, convert in place
    # when they are float32 already (astype's default copy held a third copy at the peak).
    features = np.concatenate(feats) if feats else np.zeros((0, len(VIEWS), encoder.feature_dim), np.float32)
    feats.clear()
    return FeatureSet(keys, subjects, records, features.astype(np.float32, copy=False), dict(skipped))


def save(path: Path, fs: FeatureSet, identity: str) -> None:
    from safetensors.numpy import save_file

    meta = {"identity": identity, "version": FEATURE_VERSION, "keys": json.dumps(fs.keys),
            "subject_ids": json.dumps(fs.subject_ids), "records": json.dumps(fs.records, sort_keys=True),
            "skipped": json.dumps(fs.skipped, sort_keys=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(path.parent)  # what a killed run left
    with atomic_write(path) as tmp:
        save_file({"features": np.ascontiguousarray(fs.features)}, str(tmp), metadata=meta)


def load(path: Path) -> FeatureSet:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
        features = f.get_tensor("features")
    return FeatureSet(json.loads(meta["keys"]), json.loads(meta["subject_ids"]), json.loads(meta["records"]),
                      features, json.loads(meta["skipped"]))


def load_or_build(shard_dir: str | Path, split: str, encoder: Any, cache_dir: str | Path | None, *,
                  progress: bool = False) -> tuple[FeatureSet, bool]:
    """``split``'s backbone features and whether they came from the cache (``cache_dir`` None: never
    cached). A cache entry that cannot be read is rebuilt, with a warning."""
    tars = split_tars(shard_dir, split)
    if cache_dir is None:
        return build(tars, encoder, progress=progress), False
    path = Path(cache_dir) / f"{split}-{cache_key(encoder.identity, tars)}.safetensors"
    if path.is_file():
        try:
            return load(path), True
        except Exception as err:  # noqa: BLE001 -- a damaged entry is rebuilt, never trusted
            log.warning("feature cache %s unreadable (%s); rebuilding it", path, err)
    fs = build(tars, encoder, progress=progress)
    save(path, fs, encoder.identity)
    return fs, False

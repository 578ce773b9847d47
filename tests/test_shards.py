"""Shard writing on synthetic groups: byte-identical rebuilds, size bounds, split rule, read-back."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from spotdiff.config import ShardConfig
from spotdiff.common.record import VIEWS, SubjectGroup, View, decode_members, member_names
from spotdiff.common.shardset import verify_shards
from spotdiff.shard.run import split_of, write_shards
from spotdiff.common.tars import read_samples, write_samples


def synthetic(n_subjects=30, per_subject=2, size=48):
    rng = np.random.default_rng(0)
    out = []
    for s in range(n_subjects):
        for g in range(per_subject):
            views = {v: View(rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
                             rng.integers(0, 255, (size, size), dtype=np.uint8)) for v in VIEWS}
            grp = SubjectGroup(f"s{s:03d}-g{g}", f"subj:{s}", "thing", f"a thing {s}", views, {"source": "test"})
            out.append((grp.key, grp.encode(90)))
    return out


def test_group_roundtrip():
    key, members = synthetic(1, 1)[0]
    assert list(members) == member_names()
    grp = decode_members(members)
    assert grp.key == key and grp.subject_id == "subj:0" and grp.views["pose"].mask.shape == (48, 48)


def test_bad_key_rejected():
    with pytest.raises(ValueError, match="sample key"):
        SubjectGroup("has.dot", "s", "c", "x", {v: None for v in VIEWS})


def test_tars_are_byte_identical_and_atomic(tmp_path):
    samples = synthetic(3, 1)
    write_samples(tmp_path / "a.tar", samples)
    write_samples(tmp_path / "b.tar", samples)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert not list(tmp_path.glob("*.tmp"))
    back = list(read_samples(tmp_path / "a.tar"))
    assert [k for k, _ in back] == [k for k, _ in samples]
    assert back[0][1] == samples[0][1]


def test_shards_deterministic_bounded_and_split_by_subject(tmp_path):
    cfg = ShardConfig(max_samples=7, contact_sheet_groups=4)
    samples = synthetic()
    a = write_shards(samples, tmp_path / "a", cfg)
    write_shards(samples, tmp_path / "b", cfg)
    assert (tmp_path / "a/SHA256SUMS").read_text() == (tmp_path / "b/SHA256SUMS").read_text()
    assert a.samples == len(samples)
    index = pq.read_table(tmp_path / "a/index.parquet").to_pylist()
    assert len(index) == len(samples)
    splits_of_subject = {}
    for row in index:
        splits_of_subject.setdefault(row["subject_id"], set()).add(row["split"])
        assert row["split"] == split_of(row["subject_id"], cfg.split, cfg.split_seed)
    assert all(len(s) == 1 for s in splits_of_subject.values()), "a subject is in two splits"
    counts = {}
    for tar in (tmp_path / "a").glob("*.tar"):
        n = sum(1 for _ in read_samples(tar))
        assert 1 <= n <= 7
        counts[tar.name.split("-")[0]] = counts.get(tar.name.split("-")[0], 0) + n
    assert sum(counts.values()) == len(samples)
    assert verify_shards(tmp_path / "a") == len(samples)
    sizes = json.loads((tmp_path / "a/sizes.json").read_text())
    assert sum(v["samples"] for v in sizes.values()) == len(samples)
    assert Image.open(tmp_path / "a/contact_sheet.png").size[1] > 128


def test_byte_bound(tmp_path):
    samples = synthetic(4, 2)
    one = sum(512 + -(-len(v) // 512) * 512 for v in samples[0][1].values())
    cfg = ShardConfig(max_bytes=int(one * 2.5), split={"train": 1.0, "val": 0.0, "test": 0.0})
    write_shards(samples, tmp_path, cfg, contact_sheet=False)
    tars = sorted(tmp_path.glob("train-*.tar"))
    assert len(tars) == 4
    assert all(t.stat().st_size <= cfg.max_bytes + 10240 for t in tars)


def test_verify_catches_tampering(tmp_path):
    write_shards(synthetic(5, 1), tmp_path, ShardConfig(split={"train": 1.0, "val": 0.0, "test": 0.0}),
                 contact_sheet=False)
    tar = next(tmp_path.glob("*.tar"))
    data = bytearray(tar.read_bytes())
    data[2000] ^= 0xFF
    tar.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        verify_shards(tmp_path)


def test_webdataset_reads_shards_without_custom_code(tmp_path):
    write_shards(synthetic(4, 1), tmp_path, ShardConfig(split={"train": 1.0, "val": 0.0, "test": 0.0}),
                 contact_sheet=False)
    urls = [str(p) for p in sorted(tmp_path.glob("*.tar"))]
    ds = wds.WebDataset(urls, shardshuffle=False).decode("pil")
    items = list(ds)
    assert len(items) == 4
    first = items[0]
    assert isinstance(first["anchor.jpg"], Image.Image) and first["anchor.mask.png"].size == (48, 48)
    assert isinstance(first["json"], dict) and first["json"]["subject_id"].startswith("subj:")
    assert first["txt"].startswith("a thing")

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


def _tar_of(members, fmt=None):
    """A tar in memory of (name, bytes or a TarInfo type) members."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt or tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, bytes):
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type, info.linkname = data, "elsewhere"
                tar.addfile(info)
    return buf.getvalue()


def _header_field(data: bytes, member: int, start: int, value: bytes) -> bytes:
    """``data`` with a field of the ``member``-th header (each member here is 1 block of data) replaced,
    its checksum made right again."""
    out = bytearray(data)
    at = member * 1024
    out[at + start:at + start + len(value)] = value
    out[at + 148:at + 156] = b" " * 8
    out[at + 148:at + 156] = b"%06o\0 " % sum(out[at:at + 512])
    return bytes(out)


def test_shard_scan_reads_what_tarfile_reads(tmp_path):
    """The fast ustar reading gives exactly tarfile's samples and problems, or leaves the tar to tarfile."""
    import hashlib
    import io
    import tarfile

    from spotdiff.common import shardset

    write_samples(tmp_path / "s.tar", synthetic(4, 1))
    plain = [(f"k{i}.{s}", bytes([i]) * 100) for i in range(3) for s in ("a.jpg", "json")]
    cases = {
        "written by the shard stage": (tmp_path / "s.tar").read_bytes(),
        "plain": _tar_of(plain),
        "gnu": _tar_of(plain, tarfile.GNU_FORMAT),
        "long name (pax header)": _tar_of([("k" * 120 + ".a.jpg", b"x")]),
        "path": _tar_of([("../../k0.a.jpg", b"x"), ("k1.a.jpg", b"y")]),
        "split sample": _tar_of([("a.x", b"1"), ("b.x", b"2"), ("a.y", b"3")]),
        "link and folder": _tar_of([("k0.a", b"1"), ("k0.b", tarfile.SYMTYPE), ("d", tarfile.DIRTYPE)]),
        "bad checksum": _tar_of(plain)[:1024] + b"\1" + _tar_of(plain)[1025:],
        "garbage mtime": _header_field(_tar_of(plain), 2, 136, b"zzzzzzzzzzz\0"),
        "base-256 size": _header_field(_tar_of(plain), 1, 124, b"\x80" + bytes(11)),
        "truncated": _tar_of(plain)[:3000],
        "zero block inside": _tar_of(plain)[:2048] + bytes(512) + _tar_of(plain)[2048:],
        "under a block": b"k0.a.jpg",
        "empty": b"",
    }
    fast = 0
    for case, data in cases.items():
        try:
            want = shardset.scan_stream(io.BytesIO(data), hashlib.sha256(data).hexdigest())
        except (tarfile.TarError, EOFError) as e:
            with pytest.raises(type(e)):
                shardset.scan_bytes(data)
            continue
        got = shardset.scan_bytes(data)
        assert (got.sha256, got.samples, got.problems) == (want.sha256, want.samples, want.problems), case
        fast += shardset._ustar_members(memoryview(data)) is not None
    assert fast >= 5, "the fast reading was taken for the ordinary tars"
    scan = shardset.scan_bytes(cases["path"])
    assert scan.problems == ["member '../../k0.a.jpg': a path, not a flat KEY.SUFFIX name (no separators allowed)"]
    assert [k for k, _ in shardset.scan_bytes(cases["split sample"]).samples] == ["a", "b"]


def test_verify_shards_reads_each_tar_once(tmp_path, monkeypatch):
    import builtins

    samples = synthetic(6, 2)
    write_shards(samples, tmp_path, ShardConfig(max_samples=5))
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1])
    assert verify_shards(tmp_path) == len(samples)
    tars = [f for f in opened if f.endswith(".tar")]
    assert tars and len(tars) == len(set(tars)) == len(list(tmp_path.glob("*.tar")))

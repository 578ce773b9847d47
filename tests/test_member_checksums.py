"""Generate records each member's sha256; QA and shard catch a chunk tar damaged after generate wrote it
(a flipped bit in a JPEG decodes quietly, so only the checksum sees it)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from spotdiff.common.tars import member_digests, read_samples, write_samples
from spotdiff.config import parse_params
from spotdiff.generate.run import generate
from spotdiff.qa.run import run_qa
from spotdiff.shard.run import shard


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    p = parse_params({"generate": {"n_groups": 6, "image_size": 64, "workers": 1, "chunk_size": 3,
                                   "sources": {"procedural": 1}}})
    generate(p.generate, out, progress=False)
    return out, p


def _damaged_copy(src, dst, member: str = "bg.jpg"):
    """A copy of generate's output with one bit flipped in the middle of the first group's ``member``."""
    import shutil

    shutil.copytree(src, dst)
    chunk = sorted((dst / "chunks").glob("chunk-*.tar"))[0]
    samples = list(read_samples(chunk))
    key, members = samples[0]
    data = bytearray(members[member])
    data[len(data) // 2] ^= 0x10
    samples[0] = (key, {**members, member: bytes(data)})
    write_samples(chunk, samples)
    return key


def test_generate_records_every_members_sha256(generated):
    gen, _ = generated
    table = pq.read_table(gen / "records.parquet").to_pylist()
    by_key = {r["key"]: {m["name"]: m["sha256"] for m in r["members"]} for r in table}
    chunks = [(k, m) for c in sorted((gen / "chunks").glob("*.tar")) for k, m in read_samples(c)]
    assert len(chunks) == len(by_key) == 6
    for key, members in chunks:
        assert by_key[key] == member_digests(members) and len(by_key[key]) == 8


def test_qa_rejects_and_shard_refuses_a_member_damaged_after_generate(generated, tmp_path):
    gen, p = generated
    key = _damaged_copy(gen, tmp_path / "gen")
    stats = run_qa(tmp_path / "gen", tmp_path / "qa", p.qa, progress=False)
    assert stats.samples_in == 6 and stats.rejected_by_reason.get("decode") == 1
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "qa/scores.parquet").to_pylist()}
    assert not rows[key]["accepted"] and "bg.jpg differs from the sha256 generate recorded" in rows[key]["error"]
    assert key not in (tmp_path / "qa/accepted.txt").read_text().split()
    # QA's accepted keys shard fine; shipping every kept group reaches the damaged one and stops, naming it
    shard(tmp_path / "gen", tmp_path / "ok", p.shard, tmp_path / "qa/accepted.txt")
    with pytest.raises(ValueError, match=rf"group {key}: bg.jpg differs from the sha256 generate recorded"):
        shard(tmp_path / "gen", tmp_path / "bad", p.shard)

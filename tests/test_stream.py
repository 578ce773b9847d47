"""Streaming subject groups from real shards: epochs, rank/worker splits, resampling, bad samples."""

import logging
from collections import Counter

import numpy as np
import pytest
import torch

from spotdiff.config import ShardConfig
from spotdiff.model.data import (GroupStream, collate_groups, group_loader, node_shards, shard_urls,
                                 stream_groups)
from spotdiff.sample import VIEWS, SubjectGroup, View
from spotdiff.shards import write_shards
from spotdiff.tars import read_samples, write_samples

N_GROUPS = 24
SIZE = 32


def groups(n, prefix="g", size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        views = {v: View(rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
                         rng.integers(0, 255, (size, size), dtype=np.uint8)) for v in VIEWS}
        key = f"{prefix}{i:03d}"
        g = SubjectGroup(key, f"subj:{key}", "thing", f"a thing {i}", views, {"source": "test"})
        out.append((g.key, g.encode(90)))
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """24 groups, every one in train, 4 per shard: 6 train tars written by the shard stage."""
    out = tmp_path_factory.mktemp("shards")
    cfg = ShardConfig(max_samples=4, split={"train": 1.0, "val": 0.0, "test": 0.0})
    write_shards(groups(N_GROUPS), out, cfg, contact_sheet=False)
    urls = shard_urls(out, "train")
    keys = [k for u in urls for k, _ in read_samples(u)]
    return urls, keys


@pytest.fixture(scope="module")
def bad_shards(tmp_path_factory):
    """A shard with a truncated JPEG, a group without json and one with unparsable json among 5 good
    groups; a tar cut off inside its third group; a shard path that does not exist.
    Returns (urls, keys that must be read)."""
    out = tmp_path_factory.mktemp("bad")
    good = groups(8, prefix="ok", seed=1)
    broken = groups(3, prefix="bad", seed=2)
    broken[0][1]["anchor.jpg"] = broken[0][1]["anchor.jpg"][:300]
    del broken[1][1]["json"]
    broken[2][1]["json"] = b'{"subject_id": '
    write_samples(out / "train-000000.tar", good[:2] + broken[:2] + good[2:4] + broken[2:] + good[4:5])
    write_samples(out / "whole.tar", good[5:])
    data = (out / "whole.tar").read_bytes()
    third = data.index(b"ok007.anchor.jpg")  # header of the third group's first member
    (out / "train-000001.tar").write_bytes(data[:third + 4000])  # ends inside its anchor.jpg
    (out / "whole.tar").unlink()
    urls = [str(out / "train-000000.tar"), str(out / "train-000001.tar"), str(out / "train-000002.tar")]
    return urls, [k for k, _ in good[:7]]


def keys_of(stream):
    return [item["key"] for item in stream]


def test_shard_urls_in_order_and_clear_error(shards, tmp_path):
    urls, _ = shards
    assert len(urls) == 6 and urls == sorted(urls) and all(u.endswith(".tar") for u in urls)
    with pytest.raises(FileNotFoundError, match=r"SHA256SUMS not found"):
        shard_urls(tmp_path, "train")
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  train-000000.tar\n")
    (tmp_path / "val-000000.tar").write_bytes(b"")  # a tar the manifest does not list is not a shard
    with pytest.raises(FileNotFoundError, match=r"no val-\*\.tar shards"):
        shard_urls(tmp_path, "val")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        shard_urls(tmp_path / "nowhere", "train")


def test_plain_epoch_reads_every_group_once(shards):
    urls, keys = shards
    assert keys_of(GroupStream(urls)) == keys  # no shuffle: file order
    a = GroupStream(urls, seed=5, shuffle_buffer=8)
    first = keys_of(a)
    assert sorted(first) == sorted(keys) and first != keys
    assert keys_of(GroupStream(urls, seed=5, shuffle_buffer=8)) == first  # same seed, same order
    a.set_epoch(1)
    second = keys_of(a)
    assert sorted(second) == sorted(keys) and second != first


def test_item_contents_and_collate(shards):
    urls, keys = shards
    items = list(GroupStream(urls[:1], decode_size=24, masks=True, views=("pose", "anchor")))
    it = items[0]
    assert it["key"] == keys[0] and it["subject_id"] == f"subj:{keys[0]}" and it["class"] == "thing"
    assert it["caption"] == "a thing 0" and it["record"]["source"] == "test" and it["shard"] == "train-000000.tar"
    assert list(it["images"]) == ["pose", "anchor"] and it["images"]["pose"].shape == (24, 24, 3)
    assert it["images"]["pose"].dtype == np.uint8 and it["masks"]["anchor"].shape == (24, 24)
    batch = collate_groups(items)
    assert batch["images"].shape == (4, 2, 24, 24, 3) and batch["images"].dtype == torch.uint8
    assert batch["masks"].shape == (4, 2, 24, 24) and batch["views"] == ("pose", "anchor")
    assert batch["keys"] == keys[:4] and batch["subject_ids"][1] == f"subj:{keys[1]}"
    assert np.array_equal(batch["images"][2, 1].numpy(), items[2]["images"]["anchor"])
    native = list(GroupStream(urls[:1]))
    assert native[0]["images"]["bg"].shape == (SIZE, SIZE, 3)
    native[1]["images"]["bg"] = native[1]["images"]["bg"][:16]
    with pytest.raises(ValueError, match="decode_size"):
        collate_groups(native)


def test_two_ranks_get_disjoint_shards_covering_all(shards):
    urls, keys = shards
    per_rank = [list(stream_groups(urls, epoch_length=None, seed=3, resampled=False, decode_size=None,
                                   shuffle_buffer=4, rank=r, world_size=2)) for r in range(2)]
    shard_sets = [{i["shard"] for i in items} for items in per_rank]
    key_sets = [[i["key"] for i in items] for items in per_rank]
    assert not shard_sets[0] & shard_sets[1] and len(shard_sets[0] | shard_sets[1]) == len(urls)
    assert not set(key_sets[0]) & set(key_sets[1]) and sorted(key_sets[0] + key_sets[1]) == sorted(keys)
    for world in (1, 3, 4, 6):
        parts = [node_shards(urls, r, world, seed=9, epoch=2, shuffle=True) for r in range(world)]
        assert sorted(u for p in parts for u in p) == sorted(urls)
    with pytest.raises(ValueError, match="7 ranks"):
        GroupStream(urls, rank=0, world_size=7)


def test_resampled_epoch_length_and_determinism(shards):
    urls, keys = shards

    def run(seed, rank=0, epoch=0):
        s = GroupStream(urls, epoch_length=17, seed=seed, resampled=True, shuffle_buffer=5, rank=rank, world_size=2)
        s.set_epoch(epoch)
        return keys_of(s)

    a = run(1)
    assert len(a) == 17 and set(a) <= set(keys)
    assert run(1) == a
    assert run(2) != a and run(1, rank=1) != a and run(1, epoch=1) != a
    # ranks draw different shards, not only a different buffer order (no buffer here)
    draws = [keys_of(GroupStream(urls, epoch_length=40, seed=1, resampled=True, rank=r, world_size=2))
             for r in range(2)]
    assert draws[0] != draws[1]
    assert len(GroupStream(urls, epoch_length=17, resampled=True)) == 17
    # a plain stream with an epoch length cycles its shards to exactly that many groups
    cycled = keys_of(GroupStream(urls, epoch_length=30, shuffle_buffer=3))
    assert len(cycled) == 30 and set(cycled) == set(keys)


def test_bad_samples_skipped_counted_and_warned_once(bad_shards, caplog):
    urls, good_keys = bad_shards
    stream = GroupStream(urls, decode_size=16)
    with caplog.at_level(logging.WARNING, logger="spotdiff.model.data"):
        assert keys_of(stream) == good_keys
        expect = {"corrupt_image": 1, "bad_json": 1, "missing_member": 2, "tar_corrupt": 1, "shard_unreadable": 1}
        assert stream.skipped == expect  # missing_member: the json-less group + the cut-off group
        assert keys_of(stream) == good_keys  # a second epoch: counted again, not warned again
    assert stream.skipped == {k: 2 * v for k, v in expect.items()}
    warned = Counter(r.getMessage().split(":")[1].strip() for r in caplog.records if r.levelno == logging.WARNING)
    assert warned == {reason: 1 for reason in expect}
    stream.reset_skipped()
    assert stream.skipped == {}


def test_endless_stream_of_bad_shards_raises(tmp_path):
    stream = GroupStream([str(tmp_path / "absent.tar")], epoch_length=5, resampled=True)
    with pytest.raises(RuntimeError, match="no usable group"):
        list(stream)


def test_dataloader_two_workers(shards, bad_shards):
    urls, keys = shards
    bad_urls, good_keys = bad_shards
    stream = GroupStream(urls + bad_urls, decode_size=16, shuffle_buffer=4, seed=2)
    loader = group_loader(stream, batch_size=5, num_workers=2)
    seen = []
    for batch in loader:
        assert batch["images"].dtype == torch.uint8 and batch["images"].shape[1:] == (3, 16, 16, 3)
        seen += batch["keys"]
    assert sorted(seen) == sorted(keys + good_keys)  # every group exactly once across both workers
    assert stream.skipped["corrupt_image"] == 1 and stream.skipped["shard_unreadable"] == 1  # counted in workers
    resampled = GroupStream(urls, epoch_length=11, resampled=True, decode_size=16, seed=4)
    got = [k for b in group_loader(resampled, batch_size=4, num_workers=2) for k in b["keys"]]
    assert len(got) == 11 and len(resampled) == 11
    # each worker draws with its own seed: worker 0's first batch (3 shards) != worker 1's first batch
    resampled = GroupStream(urls, epoch_length=24, resampled=True, decode_size=16, seed=4)
    first, second = [b["keys"] for b in group_loader(resampled, batch_size=12, num_workers=2)]
    assert first != second

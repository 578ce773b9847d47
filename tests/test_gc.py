"""``spotdiff gc``: the feature cache keeps what the current shards read and loses the rest."""

import numpy as np

from flows.cli import main
from spotdiff.common.shardset import split_tars
from spotdiff.model import cache
from spotdiff.prune import prune_features


def _shards(folder, names):
    folder.mkdir(parents=True)
    (folder / "SHA256SUMS").write_text("".join(f"{n:0>64}  {n}-000000.tar\n" for n in names))


def _entry(folder, split, identity, tars):
    fs = cache.FeatureSet(["k"], ["s"], [{}], np.zeros((1, 3, 4), np.float32))
    path = folder / f"{split}-{cache.cache_key(identity, tars)}.safetensors"
    cache.save(path, fs, identity)
    return path


def test_gc_keeps_the_current_shards_entries_only(tmp_path, capsys):
    shards, old, store = tmp_path / "shards", tmp_path / "old", tmp_path / "cache"
    _shards(shards, ["train", "val", "test"])
    old.mkdir()
    (old / "SHA256SUMS").write_text(f"{'1' * 64}  train-000000.tar\n")
    store.mkdir()
    keep = [_entry(store, s, ident, split_tars(shards, s)) for s in ("train", "val") for ident in ("clip-a", "clip-b")]
    stale = _entry(store, "train", "clip-a", split_tars(old, "train"))  # shards rebuilt since
    broken = store / "test-0123456789abcdef01234567.safetensors"
    broken.write_bytes(b"not safetensors")
    tmp = store / ".train-x.safetensors.999999999.tmp"  # a killed writer's (no such process)
    tmp.write_bytes(b"partial")

    assert main(["gc", "--cache-dir", str(store), "--shards", str(shards), "--dry-run"]) == 0
    assert "would remove 2 files" in capsys.readouterr().out and stale.exists() and broken.exists()

    result = prune_features(store, shards)
    assert sorted(result.kept) == sorted(keep)
    assert set(result.removed) == {stale, broken, tmp}
    assert sorted(store.iterdir()) == sorted(keep)

    assert main(["gc", "--cache-dir", str(store), "--all"]) == 0
    assert not list(store.iterdir())
    assert "removed 4 files" in capsys.readouterr().out


def test_gc_help_says_what_it_deletes(capsys):
    try:
        main(["gc", "--help"])
    except SystemExit:
        pass
    text = " ".join(capsys.readouterr().out.split())
    assert "can never read again with the current shards" in text and "dvc gc -w" in text and "--all" in text

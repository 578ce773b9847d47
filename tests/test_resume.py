"""generate picks up the chunks an interrupted run finished (issue 19): only the rest is built, the output
bytes are those of an uninterrupted run, and nothing stale (other params, a half-written chunk) is reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import tiny_params
from spotdiff.config import load_params
from spotdiff.generate.run import generate


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    """10 chunks of 2 groups, procedural and packaged (a photo source: segmentation in the chunks too)."""
    tmp = tmp_path_factory.mktemp("resume")
    return load_params(tiny_params(tmp, n_groups=20, chunk_size=2, sources={"procedural": 0.7, "packaged": 0.3})).generate


@pytest.fixture(scope="module")
def reference(cfg, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ref") / "gen"
    generate(cfg, out, progress=False, resume=False)
    assert not Path(f"{out}.partial").exists(), "a completed run keeps no store"
    return _tree(out)


def interrupted_after(n: int):
    """A mapper that builds ``n`` chunks in-process, then is interrupted (as by Ctrl-C)."""
    def mapper(fn, tasks):
        for i, task in enumerate(tasks):
            if i == n:
                raise KeyboardInterrupt
            yield fn(task)
    return mapper


def counting(seen: list):
    def mapper(fn, tasks):
        for task in tasks:
            seen.append(task[0])
            yield fn(task)
    return mapper


def test_a_rerun_builds_only_the_missing_chunks_and_gives_the_same_bytes(cfg, reference, tmp_path):
    out = tmp_path / "gen"
    with pytest.raises(KeyboardInterrupt):
        generate(cfg, out, progress=False, mapper=interrupted_after(4))
    assert len(list(Path(f"{out}.partial").rglob("chunk-*.json"))) == 4
    seen: list[int] = []
    stats = generate(cfg, out, progress=False, mapper=counting(seen))
    assert seen == list(range(4, 10)) and stats.resumed_chunks == 4
    assert _tree(out) == reference
    assert not Path(f"{out}.partial").exists()


def test_chunks_of_other_params_or_cut_off_mid_write_are_built_again(cfg, reference, tmp_path):
    out = tmp_path / "gen"
    other = cfg.model_copy(update={"seed": cfg.seed + 1})
    with pytest.raises(KeyboardInterrupt):
        generate(other, out, progress=False, mapper=interrupted_after(3))
    store = Path(f"{out}.partial")
    (old_key,) = [p.name for p in store.iterdir()]
    seen: list[int] = []
    with pytest.raises(KeyboardInterrupt):  # same params as the reference: nothing of the other run is reused
        generate(cfg, out, progress=False, mapper=interrupted_after(5))
    assert old_key not in [p.name for p in store.iterdir()], "another run's chunks are removed"
    (key_dir,) = store.iterdir()
    (key_dir / "chunk-000004.json").unlink()  # chunk 4's tar is there but it never got its completion mark
    generate(cfg, out, progress=False, mapper=counting(seen))
    assert seen == list(range(4, 10))
    assert _tree(out) == reference


def test_no_resume_builds_everything(cfg, reference, tmp_path):
    out = tmp_path / "gen"
    with pytest.raises(KeyboardInterrupt):
        generate(cfg, out, progress=False, mapper=interrupted_after(3))
    seen: list[int] = []
    stats = generate(cfg, out, progress=False, mapper=counting(seen), resume=False)
    assert seen == list(range(10)) and stats.resumed_chunks == 0
    assert _tree(out) == reference

"""Hugging Face ``datasets`` loads the shard folder and the extracted release (issue 16): splits named
``train``/``validation``/``test``, masks as single-channel ("L") images, and every label of every group exactly
as the group's JSON record holds it, with its JSON type (a dropped, renamed or mistyped label fails), photo
groups' pose homography, flip, rotation, crop, landmarks and photo size included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers import ROOT, synthetic_groups, tiny_params
from spotdiff.common.record import VIEWS, SubjectGroup, decode_members, label_problems
from spotdiff.common.shardset import HF_SPLITS
from spotdiff.common.tars import read_samples
from spotdiff.config import ShardConfig, load_params
from spotdiff.errors import InputError
from spotdiff.publish.run import publish
from spotdiff.publish.verify import safe_extract
from spotdiff.shard.run import write_shards
from spotdiff.stages import STAGES

BACKENDS = {"sources": "procedural, packaged, folder", "segment": "auto", "embed": "embedded"}


@pytest.fixture(scope="module")
def built(tmp_path_factory, dreambench) -> tuple[Path, Path]:
    """(shard folder, extracted release) of a tiny pipeline whose groups are procedural renders, packaged photos
    (the astronaut carries body landmarks) and folder photos."""
    root = tmp_path_factory.mktemp("hf")
    # 24 groups: since issue 15 three of the four packaged photos fail the mask-quality bar, and the split by
    # subject still needs subjects enough for a test split.
    params_file = tiny_params(root, n_groups=24, folder=str(dreambench),
                              sources={"procedural": 0.5, "packaged": 0.25, "folder": 0.25})
    params = load_params(params_file)
    for name in ("generate", "qa", "shard"):
        stage = STAGES[name]
        stage.load()(params, {role: root / path for role, path in stage.paths().items()}, progress=False)
    shards = root / STAGES["shard"].paths()["out"]
    tar = publish(shards, root / "release", version="1.0.0", params_path=params_file,
                  env_lock=ROOT / "requirements.lock", backends=BACKENDS)
    return shards, safe_extract(tar, root / "extracted")


def same(got: Any, want: Any, where: str) -> None:
    """``got`` (as ``datasets`` gives it) is ``want`` (as ``json.loads`` gives it): same values and same Python
    types (True is not 1, 1 is not 1.0, "1.5" is not 1.5); every label of ``want`` is in ``got``, and a label the
    schema has but this record lacks comes back null."""
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: {got!r} is not an object"
        assert not set(want) - set(got), f"{where}: labels {sorted(set(want) - set(got))} dropped"
        for k, v in got.items():
            if k in want:
                same(v, want[k], f"{where}.{k}")
            else:
                assert v is None, f"{where}.{k}: {v!r} for a label the record does not have"
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            same(g, w, f"{where}[{i}]")
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} ({type(got).__name__}) != {want!r}"


@pytest.mark.parametrize("which", ["shards", "release"])
def test_datasets_loads_every_label_typed_with_hf_split_names_and_grey_masks(built, which, tmp_path):
    shards, release = built
    folder = shards if which == "shards" else release
    index = {r["key"]: r for r in pq.read_table(shards / "index.parquet").to_pylist()}
    assert {r["split"] for r in index.values()} == {"train", "val", "test"}
    sources = {json.loads(r["labels"])["source"] for r in index.values()}
    assert sources == {"procedural", "packaged", "folder"}
    tars = {key: members for tar in sorted(shards.glob("*.tar")) for key, members in read_samples(tar)}
    assert set(tars) == set(index)

    ds = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    assert list(ds) == ["train", "validation", "test"]
    seen = set()
    for split, rows in ds.items():
        assert all(rows.features[f"{v}.mask.png"].mode == "L" for v in VIEWS)
        for got in rows:
            key = got["json"]["key"]
            row, members = index[key], tars[key]
            assert HF_SPLITS[row["split"]] == split, key
            want = json.loads(row["labels"])
            assert json.loads(members["json"]) == want  # index.parquet holds the group's JSON as written
            same(got["json"], want, key)
            assert got["txt"] == members["txt"].decode() == row["caption"]
            group = decode_members(members)
            for v in VIEWS:
                mask, image = got[f"{v}.mask.png"], got[f"{v}.jpg"]
                assert mask.mode == "L" and image.mode == "RGB"
                assert np.array_equal(np.asarray(mask), group.views[v].mask), (key, v)
                assert np.array_equal(np.asarray(image), group.views[v].image), (key, v)
            seen.add(key)
    assert seen == set(index)
    photo = [json.loads(r["labels"]) for r in index.values() if json.loads(r["labels"])["source"] != "procedural"]
    assert any(r["pose"]["P1"].get("homography") for r in photo) and any(r.get("landmarks") for r in photo)




def test_shard_refuses_a_label_the_schema_does_not_type(tmp_path):
    """A label without a type in ``record.LABELS`` would be dropped by typed readers: the shard stage stops."""
    (key, members), = synthetic_groups(1)
    group = decode_members(members)
    assert not label_problems(group.record())
    bad = SubjectGroup(group.key, group.subject_id, group.class_name, group.caption, group.views,
                       {**group.meta, "new_label": 1, "pose": {"P0": {"yaw": 10}}})
    assert label_problems(bad.record()) == ["new_label: not in spotdiff.common.record.LABELS",
                                            "pose.P0.yaw: 10 is not float64"]
    with pytest.raises(InputError, match=f"group {key}:.*new_label"):
        write_shards([(key, bad.encode())], tmp_path / "shards", ShardConfig())

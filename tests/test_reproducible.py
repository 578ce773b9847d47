"""Reproducible anywhere: a release built from absolute paths records none of them, and ``spotdiff compare``
tells an equivalent rebuild from a different one.

One tiny build runs every stage of the registry in this process (~25 s on 2 cores) from a build root in
tmp, with every path it is given absolute: the params file, ``generate.folder`` (a folder source of real
photos), the real-photo folder of ``evaluate``, ``train.cache_dir``, the output root. The Prefect
deployment against ``dvc repro`` (same release bytes) is the slow test in test_orchestration.py."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from helpers import local_paths_in, member_texts, tiny_raw
from spotdiff.config import load_params

ROOT = Path(__file__).resolve().parents[1]


def tiny_build_params(root: Path, photos: Path) -> dict:
    """The repository's params on a tiny profile (16 groups at 64 px, a quarter of them real photos from a
    folder given by its absolute path; a tiny embedded backbone; two epochs)."""
    raw = tiny_raw({"n_groups": 16, "folder": str(photos), "sources": {"procedural": 0.75, "folder": 0.25}},
                   {"batch_size": 4, "cache_dir": str(root / ".cache/features")})
    raw["qa"]["workers"] = 1
    return raw


@pytest.fixture(scope="module")
def build(tmp_path_factory, dreambench) -> dict:
    """Every stage of ``spotdiff.stages`` run in this process, working directory = the build root, every path
    absolute. Returns the build root, the params, the data root and the release."""
    from spotdiff.stages import PIPELINE, paths_under

    root = tmp_path_factory.mktemp("build-root")
    photos = root / "my photos"  # a space too: paths are recorded, not parsed
    for subject in ("cat", "teapot"):
        shutil.copytree(dreambench / subject, photos / subject)
    shutil.copytree(dreambench, root / "data/photos/dreambench-dev")
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_build_params(root, photos)))
    params = load_params(params_file)
    data = root / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for name, stage in PIPELINE.items():
            paths = {role: p if p.is_absolute() else root / p for role, p in paths_under(stage, data).items()}
            if name == "publish":
                paths.update(params_file=params_file, requirements=ROOT / "requirements.lock")
            stage.load()(params, paths, progress=False)
    release = next((data / "release").glob("*.tar"))
    return {"root": root, "params": params, "data": data, "release": release}


def test_no_release_member_holds_a_local_path(build, tmp_path):
    """Issue 14 item 6: extract the release, search every member (and every member of every shard) for the
    build root, the repository's path and /work/ or /tmp/: none."""
    root = build["root"]
    texts = member_texts(build["release"], tmp_path / "x")
    assert "params.yaml" in texts and "README.md" in texts and "metrics.json" in texts
    assert any(name.endswith(".json") and name.startswith("shards/") for name in texts)
    assert not local_paths_in(texts, root, ROOT)
    # ... and what the paths became: relative to the declared input root
    params = yaml.safe_load(texts["params.yaml"])
    assert params["generate"]["folder"] == "my photos" and params["train"]["cache_dir"] == ".cache/features"
    real = json.loads(texts["metrics.json"])["evaluation"]["real_photos"]
    assert real["folder"] == "data/photos/dreambench-dev" and real["features"]["raw_image"]["n_photos"] > 0
    index = pq.read_table(build["data"] / "shards/index.parquet").to_pylist()
    items = {json.loads(r["labels"])["item"] for r in index if r["source"] == "folder"}
    assert items and all(i.split("/")[0] in ("cat", "teapot") for i in items), items


def perturbed_shards(shards: Path, out: Path, params) -> tuple[str, int]:
    """``shards`` rewritten with one group's anchor image brightened by 60 in a 16 x 16 block; returns
    (key, that block's largest pixel change after JPEG)."""
    from spotdiff.common.record import encode_jpeg
    from spotdiff.common.tars import read_samples
    from spotdiff.shard.run import write_shards

    samples = [s for tar in sorted(shards.glob("*.tar")) for s in read_samples(tar)]
    key, members = samples[0]
    rgb = np.asarray(Image.open(io.BytesIO(members["anchor.jpg"])).convert("RGB")).astype(np.int16)
    rgb[8:24, 8:24] = np.clip(rgb[8:24, 8:24] + 60, 0, 255)
    members = {**members, "anchor.jpg": encode_jpeg(rgb.astype(np.uint8), params.generate.jpeg_quality)}
    write_shards([(key, members), *samples[1:]], out, params.shard)
    return key, 60


def test_compare_tells_an_equivalent_build_from_a_perturbed_one(build, tmp_path, capsys, monkeypatch):
    """Identical builds (the release against its own data folder) are equivalent, exit 0; a build with one
    image changed is not: the report names the member and its pixel difference, exit 1; a metric changed
    beyond its tolerance is reported with its delta; looser tolerances accept the image."""
    from flows.cli import main
    from spotdiff.publish.compare import Tolerances, compare
    from spotdiff.publish.run import backends_from_params, canonical_params, publish

    data, params, release = build["data"], build["params"], build["release"]
    same = compare(release, data)
    assert same.equivalent, same.report()
    assert same.groups["common"] == same.groups["a"] > 0 and same.members_compared == same.members_identical > 0
    assert main(["compare", str(release), str(data / "shards")]) == 0
    assert "EQUIVALENT within the tolerances" in capsys.readouterr().out

    key, _ = perturbed_shards(data / "shards", tmp_path / "shards", params)
    metrics = json.loads((data / "eval/metrics.json").read_text())
    metrics["features"]["subject"]["retrieval"]["pose_and_bg"]["top1"]["value"] += 0.05
    (tmp_path / "eval.json").write_text(json.dumps(metrics))
    monkeypatch.chdir(build["root"])  # the root the build's params are relative to
    other = publish(tmp_path / "shards", tmp_path / "release", version=params.publish.version,
                    params_path=build["root"] / "params.yaml", env_lock=ROOT / "requirements.lock",
                    qa_metrics=data / "qa/metrics.json", model_dir=data / "train", eval_metrics=tmp_path / "eval.json",
                    backends=backends_from_params(canonical_params(build["root"] / "params.yaml")))
    diff = compare(release, other)
    assert not diff.equivalent
    assert [(d.key, d.member, d.problem) for d in diff.member_diffs] == [(key, "anchor.jpg", "pixels")]
    assert diff.member_diffs[0].max_diff >= 40 and diff.pixel_max[1] == f"{key}.anchor.jpg"
    assert [d.path for d in diff.metric_diffs] == ["evaluation.features.subject.retrieval.pose_and_bg.top1.value"]
    assert diff.metric_diffs[0].delta == pytest.approx(0.05)
    assert not diff.only_in_a and not diff.only_in_b and not diff.split_diffs and not diff.label_diffs

    assert main(["compare", str(release), str(other), "--json", str(tmp_path / "c.json")]) == 1
    out = capsys.readouterr().out
    assert f"{key}.anchor.jpg: pixels max |diff|" in out and "NOT EQUIVALENT" in out
    assert "evaluation.features.subject.retrieval.pose_and_bg.top1.value" in out and "+0.05" in out
    assert json.loads((tmp_path / "c.json").read_text())["member_diffs"][0]["key"] == key
    loose = compare(release, other, Tolerances(max_pixel_diff=255, max_mean_pixel_diff=255, max_metric_diff=0.1))
    assert loose.equivalent, loose.report()

"""Release tarballs: byte-identical publishing, verification that names every problem, safe extraction."""

import hashlib
import io
import json
import os
import shutil
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from safetensors.numpy import save_file

from spotdiff.publish import card
from spotdiff.config import ShardConfig
from spotdiff.publish.run import ReleaseError, canonical_params, check_version, params_bytes, publish, safetensors_summary
from spotdiff.publish.verify import safe_extract, verify
from spotdiff.common.record import VIEWS, SubjectGroup, View
from spotdiff.shard.run import write_shards

VERSION = "1.2.3"
TOP = f"spotdiff10k-{VERSION}"
BACKENDS = {"segment": "grabcut", "embed": "embedded", "sources": "procedural, packaged"}


def groups(n=12, size=32):
    """Subject groups shaped like the generate stage's (procedural and packaged records, background ids)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        views = {v: View(rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
                         rng.integers(0, 255, (size, size), dtype=np.uint8)) for v in VIEWS}
        packaged = i % 4 == 3
        meta = {"source": "packaged" if packaged else "procedural", "item": "chelsea" if packaged else str(i),
                "background": {"B0": f"noise:{i}", "B1": f"photo:china:{i}" if i % 3 == 0 else f"gradient:{i}"},
                "segment": {"backend": "grabcut" if packaged else "render", "score": 1.0}}
        grp = SubjectGroup(f"g{i:03d}", f"{meta['source']}:{i}", "cat" if packaged else "thing", f"a thing {i}",
                           views, meta)
        out.append((grp.key, grp.encode(90)))
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Shards written by the shard stage's writer, params.yaml, an environment lock, QA/eval metrics, a model folder."""
    root = tmp_path_factory.mktemp("inputs")
    write_shards(groups(), root / "shards", ShardConfig(max_samples=4, contact_sheet_groups=2))
    pq.write_table(pa.table({"key": ["g999"], "reason": ["corrupt"]}), root / "shards" / "rejects.parquet")
    (root / "params.yaml").write_text(yaml.safe_dump({"generate": {"seed": 1, "n_groups": 12, "image_size": 32,
                                                                   "sources": {"procedural": 3, "packaged": 1}},
                                                      "shard": {"max_samples": 4}}, sort_keys=False))
    (root / "requirements.lock").write_text("numpy==1.26.4 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    checks = {"decode": {"pass_rate": 1.0}, "mask_cut": {"pass_rate": 0.857143}}
    (root / "qa.json").write_text(json.dumps({"samples_in": 14, "accepted": 12, "rejected": 2, "checks": checks}))
    (root / "eval.json").write_text(json.dumps({"retrieval": {"top1": {"value": 0.75, "low": 0.6, "high": 0.9}},
                                                "orthogonality": {"mean_abs_cos": 0.031}, "n_subjects": 12}))
    model = root / "model"
    model.mkdir()
    save_file({"encoder.weight": np.arange(12, dtype=np.float32).reshape(4, 3),
               "encoder.bias": np.zeros(4, np.float32)}, str(model / "model.safetensors"))
    save_file({"image_proj.proj.weight": np.ones((8, 4), np.float16)}, str(model / "ip_adapter.safetensors"))
    save_file({"vision_model.post_layernorm.weight": np.ones(4, np.float32)}, str(model / "backbone.safetensors"))
    (model / "config.json").write_text(json.dumps({"feature_dim": 4, "hidden": 8}))
    return root


def full_publish(inputs, out, version=VERSION, shards=None):
    return publish(shards or inputs / "shards", out, version=version, params_path=inputs / "params.yaml",
                   env_lock=inputs / "requirements.lock", qa_metrics=inputs / "qa.json", model_dir=inputs / "model",
                   eval_metrics=inputs / "eval.json", backends=BACKENDS)


@pytest.fixture(scope="module")
def release(inputs, tmp_path_factory):
    return full_publish(inputs, tmp_path_factory.mktemp("release"))


def member_bytes(tar_path, name):
    with tarfile.open(tar_path) as tar:
        return tar.extractfile(f"{TOP}/{name}").read()


def rewrite(src, dst, *, add=(), replace=None):
    """Copy release ``src`` to ``dst`` member by member; ``add``: (TarInfo, bytes or None) appended;
    ``replace``: {member name: new bytes}."""
    replace = replace or {}
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.GNU_FORMAT) as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else None
            if m.name in replace:
                data = replace[m.name]
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)
        for info, data in add:
            tout.addfile(info, io.BytesIO(data) if data is not None else None)
    return dst


def bad_member(name, kind="file", target=""):
    info = tarfile.TarInfo(name)
    if kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, target
        return info, None
    if kind == "fifo":
        info.type = tarfile.FIFOTYPE
        return info, None
    info.size = 5
    return info, b"evil\n"


def test_versions():
    for ok in ("1.0.0", "v2.10.3", "0.0.1", "2025.10.07"):
        assert check_version(ok) == ok
    for bad in ("1.0", "01.0.0", "v1.0.0-rc1", "latest", "2025.13.01", "2025.02.30", "1.0.0/../x", ""):
        with pytest.raises(ValueError, match="version"):
            check_version(bad)


def test_publish_is_byte_identical_whatever_the_paths_and_mtimes(inputs, release, tmp_path):
    # Same inputs, copied elsewhere with fresh mtimes: the same bytes.
    moved = tmp_path / "elsewhere"
    shutil.copytree(inputs / "shards", moved)
    for p in moved.iterdir():
        os.utime(p, (1_700_000_000, 1_700_000_000))
    again = full_publish(inputs, tmp_path / "out", shards=moved)
    assert again.name == f"{TOP}.tar"
    assert again.read_bytes() == release.read_bytes()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    digest = hashlib.sha256(again.read_bytes()).hexdigest()
    assert (tmp_path / "out" / f"{TOP}.tar.sha256").read_text() == f"{digest}  {TOP}.tar\n"
    # A different input (the version) gives different bytes: the comparison above can fail.
    other = full_publish(inputs, tmp_path / "other", version="1.2.4")
    assert other.read_bytes() != release.read_bytes()


def test_release_layout_and_metadata(release, inputs):
    with tarfile.open(release) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert all(n == TOP or n.startswith(TOP + "/") for n in names)
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.pax_headers) == (0, 0, 0, "", "", {})
        assert m.mode == (0o755 if m.isdir() else 0o644) and (m.isdir() or m.isreg())
    files = {n[len(TOP) + 1:] for m, n in zip(members, names) if m.isfile()}
    for need in ("README.md", "SHA256SUMS", "metrics.json", "params.yaml", "shards/index.parquet",
                 "shards/sizes.json", "shards/contact_sheet.png", "shards/rejects.parquet",
                 "model/model.safetensors", "model/config.json",
                 "model/ip_adapter.safetensors", "model/backbone.safetensors"):
        assert need in files, need
    assert any(f.startswith("shards/train-") for f in files)
    sums = member_bytes(release, "SHA256SUMS").decode().splitlines()
    listed = [line.split("  ", 1)[1] for line in sums]
    assert listed == sorted(files - {"SHA256SUMS"})
    for line in sums:
        digest, name = line.split("  ", 1)
        assert hashlib.sha256(member_bytes(release, name)).hexdigest() == digest
    metrics = json.loads(member_bytes(release, "metrics.json"))
    assert metrics["qa"]["accepted"] == 12 and metrics["evaluation"]["n_subjects"] == 12
    assert not any(f.endswith("dvc.lock") for f in files), "no dvc.lock: the release does not depend on the entry point"
    packed = yaml.safe_load(member_bytes(release, "params.yaml"))
    assert packed == canonical_params(inputs / "params.yaml") and packed["generate"]["n_groups"] == 12
    assert packed["evaluate"]["n_boot"] == 1000, "validated: omitted keys appear with their defaults"


def test_params_are_packed_by_content_not_by_style(inputs, release, tmp_path):
    """`dvc exp run -S key=<same value>` rewrites params.yaml's formatting; the pipeline deployment writes its
    own copy with every default filled in. Neither changes the release; a changed value does."""
    raw = yaml.safe_load((inputs / "params.yaml").read_text())
    restyled = tmp_path / "restyled"
    shutil.copytree(inputs, restyled)
    full = canonical_params(inputs / "params.yaml")
    (restyled / "params.yaml").write_text("# a comment\n" + yaml.safe_dump(full, sort_keys=False, default_flow_style=True))
    assert full != raw and (restyled / "params.yaml").read_bytes() != (inputs / "params.yaml").read_bytes()
    assert full_publish(restyled, tmp_path / "a").read_bytes() == release.read_bytes()
    # how it ran, not what it built (orchestrate), and a user-keyed map in another key order (safe_dump sorts
    # generate.sources, which the file lists procedural first): the same release
    raw["orchestrate"] = {"task_runner": "dask", "dask_address": "tcp://10.0.0.5:8786", "workers": 7}
    assert list(raw["generate"]["sources"]) != sorted(raw["generate"]["sources"])
    (restyled / "params.yaml").write_text(yaml.safe_dump(raw))
    assert full_publish(restyled, tmp_path / "c").read_bytes() == release.read_bytes()
    raw["shard"]["max_samples"] = 5  # a value changed: other params, other bytes
    (restyled / "params.yaml").write_text(yaml.safe_dump(raw))
    assert full_publish(restyled, tmp_path / "b").read_bytes() != release.read_bytes()


def test_packed_params_hold_no_absolute_path(tmp_path, monkeypatch):
    """Paths in params are recorded relative to the working directory (the repository), or as
    ``<external>/name`` when outside it: never where this machine keeps them."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "generate": {"folder": str(tmp_path / "photos"), "sam": {"checkpoint": "/models/sam/sam_vit_b.pth"}},
        "train": {"cache_dir": str(tmp_path / ".cache/features")}}))
    tree = canonical_params(tmp_path / "params.yaml")
    assert tree["generate"]["folder"] == "photos" and tree["train"]["cache_dir"] == ".cache/features"
    assert tree["generate"]["sam"]["checkpoint"] == "<external>/sam_vit_b.pth"
    text = params_bytes(tree).decode()
    assert str(tmp_path) not in text and "/models" not in text


def test_card_header_matches_the_data(release, inputs):
    text = member_bytes(release, "README.md").decode()
    header = card.parse_header(text)
    sizes = json.loads((inputs / "shards" / "sizes.json").read_text())
    splits = {s["name"]: (s["num_examples"], s["num_bytes"]) for s in header["dataset_info"]["splits"]}
    assert splits == {card.hf_split(k): (v["samples"], v["bytes"]) for k, v in sizes.items() if v["samples"]}
    assert sum(n for n, _ in splits.values()) == 12
    assert [f["name"] for f in header["dataset_info"]["features"]] == [
        "anchor.jpg", "anchor.mask.png", "bg.jpg", "bg.mask.png", "pose.jpg", "pose.mask.png", "json", "txt"]
    # Packaged photos and the CC BY china background are not the project's licence: "other", per component.
    assert header["license"] == "other"
    assert header["license_link"] == card.LICENSE_TABLE == "README.md#sources-and-licences" and "\n## Sources and licences\n" in text
    assert header["license_details"]["background:photo:china"] == "cc-by-2.0"
    assert header["license_details"]["subject:procedural"] == "apache-2.0"
    assert header["license_details"]["subject:packaged:chelsea"] == "cc0-1.0"
    meta = header["spotdiff"]
    assert meta["version"] == VERSION and meta["backends"] == dict(sorted(BACKENDS.items()))
    assert meta["generate"]["n_groups"] == 12
    assert meta["qa"]["pass_rates"] == {"decode": 1.0, "mask_cut": 0.857143}
    assert meta["evaluation"]["retrieval.top1"] == {"value": 0.75, "low": 0.6, "high": 0.9}
    assert meta["model"]["model.safetensors"] == {"tensors": 2, "parameters": 16, "dtypes": ["F32"]}
    assert header["size_categories"] == ["n<1K"]
    lock = inputs / "requirements.lock"
    from spotdiff.common.determinism import LEVEL
    assert meta["environment"] == {"lock": "requirements.lock", "sha256": hashlib.sha256(lock.read_bytes()).hexdigest(),
                                   "cpu_level": LEVEL}  # the CPU feature level the bytes were built at (issue 14)
    text = member_bytes(release, "README.md").decode()
    assert meta["environment"]["sha256"] in text and f"CPU feature level of the numeric code: `{LEVEL}`" in text


def test_verify_passes(release):
    report = verify(release)
    assert report.version == VERSION and report.samples == 12
    assert sum(report.splits.values()) == 12 and report.shards >= 3
    assert report.model == ["model/backbone.safetensors", "model/config.json", "model/ip_adapter.safetensors",
                            "model/model.safetensors"]


def test_publish_without_optional_inputs(inputs, tmp_path):
    out = publish(inputs / "shards", tmp_path, version="2025.10.07", params_path=inputs / "params.yaml",
                  backends={"embed": "embedded"})
    report = verify(out)
    assert report.model == [] and report.version == "2025.10.07"
    top = "spotdiff10k-2025.10.07"
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert json.loads(tar.extractfile(f"{top}/metrics.json").read()) == {"evaluation": None, "qa": None}
        text = tar.extractfile(f"{top}/README.md").read().decode()
    assert not any("/model" in n or n.endswith("dvc.lock") for n in names)
    assert "No model is packaged" in text and "No evaluation metrics" in text and "No environment lock" in text
    assert card.parse_header(text)["spotdiff"]["evaluation"] is None


def test_publish_refuses_bad_inputs(inputs, tmp_path):
    kw = dict(params_path=inputs / "params.yaml", backends=BACKENDS)
    with pytest.raises(ValueError, match="release version"):
        publish(inputs / "shards", tmp_path, version="one", **kw)
    with pytest.raises(ValueError, match="backends"):
        publish(inputs / "shards", tmp_path, version=VERSION, **{**kw, "backends": {}})
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(inputs / "model" / "model.safetensors", model)
    with pytest.raises(FileNotFoundError, match="config.json"):
        publish(inputs / "shards", tmp_path, version=VERSION, model_dir=model, **kw)
    broken = tmp_path / "shards"
    shutil.copytree(inputs / "shards", broken)
    tar = sorted(broken.glob("train-*.tar"))[0]
    data = bytearray(tar.read_bytes())
    data[1500] ^= 0xFF
    tar.write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match="shards do not verify"):
        publish(broken, tmp_path, version=VERSION, **kw)
    assert not list(tmp_path.glob("*.tar*")), "nothing is written when publishing fails"


def shard_payload_offset(release):
    """Offset in the release file of a byte inside the first train shard's anchor.jpg payload."""
    with tarfile.open(release) as tar:
        outer = tar.getmember(f"{TOP}/shards/train-000000.tar")
        inner_bytes = tar.extractfile(outer).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        jpg = next(m for m in inner.getmembers() if m.name.endswith(".anchor.jpg"))
    return outer.offset_data + jpg.offset_data + jpg.size // 2


def test_verify_flipped_byte_in_a_shard(release, tmp_path):
    data = bytearray(release.read_bytes())
    data[shard_payload_offset(release)] ^= 0x01
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    with pytest.raises(ReleaseError) as e:
        verify(bad)
    msg = str(e.value)
    # Both the checksum and the index check see it: every problem is listed, not only the first.
    assert "shards/train-000000.tar: sha256" in msg and "differs from SHA256SUMS" in msg
    assert "anchor.jpg'] differ from index.parquet" in msg
    assert len(e.value.problems) >= 2


def test_verify_added_member(release, tmp_path):
    bad = rewrite(release, tmp_path / "bad.tar", add=[bad_member(f"{TOP}/shards/extra.txt")])
    with pytest.raises(ReleaseError, match=r"shards/extra.txt: not listed in SHA256SUMS"):
        verify(bad)


def test_verify_card_that_disagrees_with_the_index(release, tmp_path):
    # Checksums made consistent again, so only the card check can catch the wrong sample count.
    text = member_bytes(release, "README.md").decode()
    header = card.parse_header(text)
    n = header["dataset_info"]["splits"][0]["num_examples"]
    new = text.replace(f"num_examples: {n}\n", f"num_examples: {n + 1}\n", 1).encode()
    sums = member_bytes(release, "SHA256SUMS").decode()
    old_digest = hashlib.sha256(text.encode()).hexdigest()
    sums = sums.replace(old_digest, hashlib.sha256(new).hexdigest()).encode()
    bad = rewrite(release, tmp_path / "bad.tar", replace={f"{TOP}/README.md": new, f"{TOP}/SHA256SUMS": sums})
    with pytest.raises(ReleaseError, match="dataset_info.splits") as e:
        verify(bad)
    assert len(e.value.problems) == 1


MALICIOUS = {
    "traversal": (lambda: bad_member("../evil"), "path traversal"),
    "traversal_inside": (lambda: bad_member(f"{TOP}/../evil"), "path traversal"),
    "absolute": (lambda: bad_member("/tmp/spotdiff-evil-absolute"), "absolute path"),
    "symlink": (lambda: bad_member(f"{TOP}/shards/link", "symlink", "/etc/passwd"), "symbolic link"),
    "fifo": (lambda: bad_member(f"{TOP}/fifo", "fifo"), "FIFO"),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_members_fail_verify_and_extract(release, tmp_path, case):
    make, reason = MALICIOUS[case]
    bad = rewrite(release, tmp_path / "bad.tar", add=[make()])
    with pytest.raises(ReleaseError, match=reason):
        verify(bad)
    dest = tmp_path / "dest" / "inner"
    for check_contents in (True, False):  # the member checks alone refuse it too
        with pytest.raises(ReleaseError, match=reason):
            safe_extract(bad, dest, check_contents=check_contents)
    assert not (tmp_path / "dest" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not os.path.lexists("/tmp/spotdiff-evil-absolute")
    assert list(dest.iterdir()) == [], "nothing extracted"


def test_safe_extract_good_release(release, tmp_path):
    top = safe_extract(release, tmp_path / "x")
    assert top == (tmp_path / "x" / TOP).resolve()
    assert [p.name for p in (tmp_path / "x").iterdir()] == [TOP], "no staging folder left behind"
    for line in (top / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((top / name).read_bytes()).hexdigest() == digest
    with pytest.raises(FileExistsError, match="already exists"):
        safe_extract(release, tmp_path / "x")


def test_safetensors_summary_rejects_truncated(inputs):
    data = (inputs / "model" / "model.safetensors").read_bytes()
    assert safetensors_summary(io.BytesIO(data), len(data), "m")["parameters"] == 16
    with pytest.raises(ValueError, match="tensors end at byte"):
        safetensors_summary(io.BytesIO(data[:-4]), len(data) - 4, "m")


def test_card_licences_follow_the_components_used():
    procedural = [{"source": "procedural", "background": {"B0": "noise:1", "B1": "horizon:2"}}]
    rows = card.licenses(procedural)
    assert card.overall_license(rows) == "apache-2.0"
    folder = [{"source": "folder", "item": "x.jpg", "background": {"B0": "folder:a.jpg:1", "B1": "pattern:3"}}]
    rows = {r["component"]: r for r in card.licenses(folder)}
    assert rows["subject:folder"]["license"] == "unknown" and card.overall_license(list(rows.values())) == "other"
    stated = {r["component"]: r["license"] for r in card.licenses(folder, folder_license="cc-by-4.0")}
    assert stated["subject:folder"] == "cc-by-4.0" and stated["background:folder"] == "cc-by-4.0"


def test_publish_reads_each_shard_once_and_checks_it(inputs, tmp_path, monkeypatch):
    """One read per shard tar packs it and checks it: a shard whose SHA256SUMS line was made to fit
    damaged bytes is still caught by the index, and nothing is written."""
    import builtins

    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1])
    full_publish(inputs, tmp_path / "ok")
    shard_reads = [f for f in opened if f.endswith(".tar") and "/shards/" in f]
    assert sorted(shard_reads) == sorted(str(p) for p in (inputs / "shards").glob("*.tar"))
    monkeypatch.setattr(builtins, "open", real_open)

    broken = tmp_path / "shards"
    shutil.copytree(inputs / "shards", broken)
    tar = sorted(broken.glob("train-*.tar"))[0]
    with tarfile.open(tar) as t:
        jpg = next(m for m in t.getmembers() if m.name.endswith(".anchor.jpg"))
    data = bytearray(tar.read_bytes())
    data[jpg.offset_data + 10] ^= 0xFF
    sums = (broken / "SHA256SUMS").read_text().replace(hashlib.sha256(tar.read_bytes()).hexdigest(),
                                                       hashlib.sha256(bytes(data)).hexdigest())
    tar.write_bytes(bytes(data))
    (broken / "SHA256SUMS").write_text(sums)
    with pytest.raises(ReleaseError, match="shards do not verify.*members differ from index.parquet"):
        full_publish(inputs, tmp_path / "bad", shards=broken)
    assert not list((tmp_path / "bad").glob("*.tar*")), "nothing is written when a shard fails while packing"

"""Stage 2 through ``train()`` and ``spotdiff generate --ref`` on what it trained, on tiny shards and a tiny
random Stable Diffusion pipeline saved in the test (conftest's ``shards`` and ``tiny``; nothing downloaded):

* the exported adapter loads in diffusers' own ``load_ip_adapter`` with the trained tensors, and names the
  subject encoder (backbone + heads digest) and the pipeline it was trained with;
* stage 2 trains on the same subject features that generation computes for a photo;
* ``generate --ref`` on a real photo writes the same PNG bytes twice;
* every error exits non-zero with a message naming the problem: no prompt, no reference, no adapter, no
  model, no pipeline, a missing pipeline folder (named as --pipeline, not generate.diffusion), a bad photo,
  and an adapter trained on another backbone or on other heads.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import train_params

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402

from spotdiff.common import diffusion  # noqa: E402
from spotdiff.common.paths import portable  # noqa: E402
from flows.cli import main  # noqa: E402
from spotdiff.config import ConfigError, load_params  # noqa: E402
from spotdiff.model.trained import subject_encoder, subject_encoder_identity  # noqa: E402
from spotdiff.common.shardset import split_tars  # noqa: E402
from spotdiff.model import cache  # noqa: E402
from spotdiff.model.adapter import layer_key, read_adapter_meta  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest's: single-threaded torch for this module

RESOLUTION = 64
"""Stage-2 training and generation side, pixels (the smallest train.stage2.resolution allows)."""
STEPS = 3
"""Stage-2 optimiser steps."""


def teardown_module() -> None:
    diffusion.clear_cache()


def _params_file(tmp: Path, name: str, *, stage2: dict | None = None, embed_seed: int = 0, **train) -> Path:
    """A tiny params file ``tmp/name.yaml`` (helpers' tiny backbone and heads, one epoch), with the feature
    cache shared across the module's runs, ``stage2`` as train.stage2 and the backbone seeded ``embed_seed``."""
    path, _ = train_params(tmp, epochs=1, **train)
    raw = yaml.safe_load(path.read_text())
    raw["train"]["cache_dir"] = str(tmp / "cache")
    raw["train"]["stage2"] = stage2 or {"model": None}
    raw["embed"]["embedded"]["seed"] = embed_seed
    out = tmp / f"{name}.yaml"
    out.write_text(yaml.safe_dump(raw))
    return out


@pytest.fixture(scope="module")
def trained(tiny, shards, tmp_path_factory):
    """(params path, train output folder, what stage 2 was given): ``train()`` with stage 2 on the tiny pipeline.
    ``train_stage2`` is wrapped (and run for real) to record the features, images and captions it trains on."""
    from spotdiff.model import stage2
    from spotdiff.train.run import train

    tmp = tmp_path_factory.mktemp("stage2")
    path = _params_file(tmp, "params", stage2={"model": tiny, "device": "cpu", "steps": STEPS, "batch_size": 2,
                                               "resolution": RESOLUTION})
    seen: dict = {}
    real = stage2.train_stage2

    def recording(pipe, module, feats, images, captions, **kw):
        seen.update(feats=np.array(feats), images=np.stack(images), captions=list(captions), kw=kw)
        return real(pipe, module, feats, images, captions, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stage2, "train_stage2", recording)
        train(shards, tmp / "train", load_params(path))
    return path, tmp / "train", seen


def test_stage2_adapter_loads_in_diffusers_with_the_trained_tensors(trained, tiny):
    from spotdiff.common.diffusion import load_pipeline

    params, out, _ = trained
    adapter = out / "ip_adapter.safetensors"
    assert adapter.is_file()
    with open(out / "stage2_losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert all(math.isfinite(float(r["denoising"])) and float(r["denoising"]) > 0 for r in rows)

    meta = read_adapter_meta(adapter)
    p = load_params(params)
    from spotdiff.model.trained import load_trained

    heads, encoder = load_trained(out, p.embed)
    assert meta.backbone == subject_encoder_identity(out, encoder.identity)
    assert meta.base_model == portable(tiny) and meta.feature_dim == heads.feature_dim == 8

    tensors = load_file(str(adapter))
    pipe = load_pipeline(tiny, "text2img", "cpu")
    pipe.load_ip_adapter(str(out), subfolder="", weight_name=adapter.name, image_encoder_folder=None)
    try:
        ip = [(name, proc) for name, proc in pipe.unet.attn_processors.items()
              if type(proc).__name__.startswith("IPAdapter")]
        assert [name for name, _ in ip] == list(meta.layers)
        for i, (_, proc) in enumerate(ip):  # diffusers holds the trained weights, not a fresh init
            assert torch.equal(proc.to_k_ip[0].weight, tensors[f"ip_adapter.{layer_key(i)}.to_k_ip.weight"])
            assert torch.equal(proc.to_v_ip[0].weight, tensors[f"ip_adapter.{layer_key(i)}.to_v_ip.weight"])
        proj = pipe.unet.encoder_hid_proj.image_projection_layers[0]
        assert torch.equal(proj.image_embeds.weight, tensors["image_proj.proj.weight"])
    finally:
        pipe.unload_ip_adapter()
    assert pipe.unet.encoder_hid_proj is None  # the cached pipeline is left as it was


def test_stage2_trains_on_the_features_generation_computes(trained, shards):
    """Group 0's anchor through the generation encoder (``subject_encoder``: from the files on disk, one photo at
    a time) gives the feature stage 2 trained on (from memory, in batches); its target is the bg view."""
    params, out, seen = trained
    groups = list(cache.iter_groups(split_tars(shards, "train"), Counter()))
    assert seen["feats"].shape == (len(groups), 8) and seen["images"].shape == (len(groups), RESOLUTION, RESOLUTION, 3)
    assert seen["captions"] == [record["caption"] for _, record, _ in groups]
    assert seen["kw"]["steps"] == STEPS and seen["kw"]["batch_size"] == 2
    encode = subject_encoder(out, load_params(params).embed)
    for i in (0, 1, len(groups) - 1):
        _, _, views = groups[i]
        np.testing.assert_allclose(seen["feats"][i], encode(views[0]), rtol=1e-4, atol=1e-5)
        target = Image.fromarray(views[1 + i % 2]).resize((RESOLUTION, RESOLUTION), Image.Resampling.BICUBIC)
        assert np.array_equal(seen["images"][i], np.asarray(target))
    assert not np.allclose(seen["feats"][0], seen["feats"][1])


def test_infer_on_a_photo_is_deterministic(trained, tiny, dreambench, tmp_path, capsys):
    params, out, _ = trained
    photo = dreambench / "teapot" / "00.jpg"
    args = ["infer", "--ref", str(photo), "--prompt", "a photo", "--model-dir", str(out), "--pipeline", tiny,
            "-n", "2", "--steps", "1", "-p", str(params)]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out.split()
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    pngs = sorted((tmp_path / "a").glob("*.png"))
    assert [p.name for p in pngs] == ["00-00-seed0.png", "00-01-seed1.png"] and printed == [str(p) for p in pngs]
    for p in pngs:
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes()
        assert Image.open(p).size == (RESOLUTION, RESOLUTION)
    assert not np.array_equal(np.asarray(Image.open(pngs[0])), np.asarray(Image.open(pngs[1])))  # seeds 0 and 1
    record = json.loads((tmp_path / "a" / "reference_generation.json").read_text())
    assert record["images"] == [p.name for p in pngs] and record["seeds"] == [0, 1]
    assert record["backbone"] == read_adapter_meta(out / "ip_adapter.safetensors").backbone
    assert record["pipeline"] == portable(tiny)


def _ref(tmp_path: Path) -> Path:
    ref = tmp_path / "ref.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(ref)
    return ref


def test_infer_argument_errors(trained, tiny, tmp_path, capsys):
    params, out, _ = trained
    ref = _ref(tmp_path)
    common = ["-p", str(params), "--model-dir", str(out), "--steps", "1", "-n", "1"]
    with pytest.raises(SystemExit) as exit_:
        main(["infer", "--ref", str(ref), "--pipeline", tiny, *common])
    assert exit_.value.code == 2 and "--prompt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["infer", "--prompt", "a photo", *common, "--out", str(tmp_path / "gen")])
    assert exit_.value.code == 2 and "--ref" in capsys.readouterr().err
    assert not (tmp_path / "gen").exists()
    assert main(["infer", "--ref", str(ref), "--prompt", "a", "-n", "0", "--pipeline", tiny, *common[:4],
                 "--out", str(tmp_path / "n0")]) == 1
    assert "n_images must be a positive int" in capsys.readouterr().err
    (tmp_path / "bad.jpg").write_text("not an image")
    assert main(["infer", "--ref", str(tmp_path / "bad.jpg"), "--prompt", "a", "--pipeline", tiny, *common,
                 "--out", str(tmp_path / "bad")]) == 1
    assert str(tmp_path / "bad.jpg") in capsys.readouterr().err


def test_infer_missing_files(trained, tiny, tmp_path, capsys):
    params, out, _ = trained
    ref = _ref(tmp_path)

    def run(model_dir: Path, *extra: str) -> int:
        return main(["infer", "--ref", str(ref), "--prompt", "a", "-p", str(params), "--model-dir", str(model_dir),
                     "--steps", "1", "-n", "1", "--out", str(tmp_path / "x"), *extra])

    no_adapter = tmp_path / "no_adapter"
    no_adapter.mkdir()
    shutil.copy(out / "model.safetensors", no_adapter)
    assert run(no_adapter, "--pipeline", tiny) == 1
    assert str(no_adapter / "ip_adapter.safetensors") in capsys.readouterr().err
    no_model = tmp_path / "no_model"
    no_model.mkdir()
    shutil.copy(out / "ip_adapter.safetensors", no_model)
    assert run(no_model, "--pipeline", tiny) == 1
    assert str(no_model / "model.safetensors") in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

    # no pipeline anywhere: params without train.stage2.model and no --pipeline
    bare = yaml.safe_load(params.read_text())
    bare["train"]["stage2"] = {"model": None}
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(bare))
    assert main(["infer", "--ref", str(ref), "--prompt", "a", "-p", str(tmp_path / "bare.yaml"),
                 "--model-dir", str(out)]) == 1
    assert "pass --pipeline or set train.stage2.model" in capsys.readouterr().err
    # a --pipeline folder that does not exist is a config error (exit 2) named as the option the user gave
    assert run(out, "--pipeline", str(tmp_path / "no-such-sd")) == 2
    err = capsys.readouterr().err
    assert f"--pipeline = '{tmp_path / 'no-such-sd'}'" in err and "generate.diffusion" not in err
    # ... and as train.stage2.model when it came from params
    raw = yaml.safe_load(params.read_text())
    raw["train"]["stage2"]["model"] = str(tmp_path / "no-such-sd")
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(raw))
    assert main(["infer", "--ref", str(ref), "--prompt", "a", "-p", str(tmp_path / "missing.yaml"),
                 "--model-dir", str(out), "--steps", "1", "-n", "1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "train.stage2.model = " in err and "generate.diffusion" not in err


@pytest.mark.parametrize("change", ["backbone", "heads"])
def test_infer_refuses_an_adapter_of_another_encoder(change, trained, tiny, shards, tmp_path,
                                                            capsys):
    """The adapter copied beside a model trained on another backbone, or on the same backbone with other heads
    (a stale adapter after retraining stage 1): generation refuses it instead of conditioning on the wrong
    features."""
    from spotdiff.train.run import train

    _, out, _ = trained
    kw = {"embed_seed": 1} if change == "backbone" else {"seed": 1}
    params = _params_file(tmp_path, change, **kw)
    train(shards, tmp_path / "m", load_params(params))
    shutil.copy(out / "ip_adapter.safetensors", tmp_path / "m")
    code = main(["infer", "--ref", str(_ref(tmp_path)), "--prompt", "a", "-p", str(params), "--model-dir",
                 str(tmp_path / "m"), "--pipeline", tiny, "--steps", "1", "-n", "1", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 1 and str(tmp_path / "m" / "ip_adapter.safetensors") in err
    assert ("trained on backbone" if change == "backbone" else "other subject-encoder heads") in err
    assert not (tmp_path / "x").exists()


def test_stage2_missing_pipeline_names_the_train_key(shards, tmp_path):
    """A train.stage2.model folder that does not exist: ConfigError naming train.stage2.model (stage 1's
    outputs are kept, so a rerun resumes and only redoes stage 2)."""
    from spotdiff.train.run import train

    params = load_params(_params_file(tmp_path, "p", stage2={"model": str(tmp_path / "nope"), "device": "cpu",
                                                               "resolution": RESOLUTION}))
    with pytest.raises(ConfigError, match=r"train\.stage2\.model = .*no such folder") as err:
        train(shards, tmp_path / "t", params)
    assert "generate.diffusion" not in str(err.value)
    assert (tmp_path / "t" / "model.safetensors").is_file() and not (tmp_path / "t" / "ip_adapter.safetensors").exists()


def test_stage2_is_reproducible(trained, shards, tmp_path):
    """The same params and data, run again in the same process (the cached pipeline reused after stage 2 trained
    on it), give the same adapter tensors, metadata and stage-2 losses."""
    from safetensors import safe_open

    from spotdiff.train.run import train

    params, out, _ = trained
    train(shards, tmp_path / "again", load_params(params))
    assert (tmp_path / "again/stage2_losses.csv").read_text() == (out / "stage2_losses.csv").read_text()
    a, b = load_file(str(out / "ip_adapter.safetensors")), load_file(str(tmp_path / "again/ip_adapter.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Not the file bytes: safetensors 0.8 writes the metadata keys in hash-map order, which changes per call.
    metas = []
    for path in (out, tmp_path / "again"):
        with safe_open(str(path / "ip_adapter.safetensors"), "pt") as f:
            metas.append(f.metadata())
    assert metas[0] == metas[1]

"""Stage 2 through ``train()`` and ``spotdiff generate --ref`` end to end, on a tiny Stable Diffusion
pipeline saved in the test and tiny shards: the exported adapter loads in diffusers and drives generation."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import yaml
from PIL import Image

from spotdiff.cli import main
from spotdiff.config import load_params
from test_adapter import one_thread, tiny  # noqa: F401 -- fixtures: tiny SD pipeline, single-threaded torch
from test_model import _params, shards  # noqa: F401 -- fixtures: tiny shards, tiny params


@pytest.fixture(scope="module")
def trained(tiny, shards, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("stage2")
    path, _ = _params(tmp, epochs=1)
    raw = yaml.safe_load(path.read_text())
    raw["train"]["stage2"] = {"model": tiny, "device": "cpu", "steps": 3, "batch_size": 2, "resolution": 64}
    path.write_text(yaml.safe_dump(raw))
    from spotdiff.train import train

    train(shards, tmp / "train", load_params(path))
    return path, tmp / "train"


def test_stage2_exports_an_adapter_diffusers_loads(trained, tiny):  # noqa: F811
    from spotdiff.diffusion import load_pipeline

    _, out = trained
    adapter = out / "ip_adapter.safetensors"
    assert adapter.is_file()
    with open(out / "stage2_losses.csv") as f:
        losses = [float(r["denoising"]) for r in csv.DictReader(f)]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    pipe = load_pipeline(tiny, "text2img", "cpu")
    pipe.load_ip_adapter(str(out), subfolder="", weight_name=adapter.name, image_encoder_folder=None)
    try:
        assert any(type(p).__name__.startswith("IPAdapter") for p in pipe.unet.attn_processors.values())
    finally:
        pipe.unload_ip_adapter()


def test_generate_ref_cli_writes_deterministic_images(trained, tiny, tmp_path):  # noqa: F811
    params, out = trained
    ref = tmp_path / "ref.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(ref)
    args = ["generate", "--ref", str(ref), "--prompt", "a photo of a red teapot", "--model-dir", str(out),
            "--pipeline", tiny, "-n", "2", "--steps", "1", "-p", str(params)]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    pngs = sorted((tmp_path / "a").glob("*.png"))
    assert len(pngs) == 2
    for p in pngs:
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes()
        assert Image.open(p).size == (64, 64)


def test_generate_ref_errors(trained, tiny, tmp_path, capsys):  # noqa: F811
    params, out = trained
    ref = tmp_path / "ref.png"
    Image.new("RGB", (32, 32), "red").save(ref)
    assert main(["generate", "--ref", str(ref), "-p", str(params), "--pipeline", tiny, "--model-dir", str(out)]) == 1
    assert "--prompt" in capsys.readouterr().err
    empty = tmp_path / "nomodel"
    empty.mkdir()
    (empty / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    code = main(["generate", "--ref", str(ref), "--prompt", "a", "-p", str(params), "--pipeline", tiny,
                 "--model-dir", str(empty), "--out", str(tmp_path / "x")])
    assert code == 1 and str(empty / "ip_adapter.safetensors") in capsys.readouterr().err
    (tmp_path / "bad.jpg").write_text("not an image")
    code = main(["generate", "--ref", str(tmp_path / "bad.jpg"), "--prompt", "a", "-p", str(params),
                 "--pipeline", tiny, "--model-dir", str(out), "--out", str(tmp_path / "y")])
    assert code == 1 and "bad.jpg" in capsys.readouterr().err

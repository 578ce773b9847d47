"""bench/real_weights.py end to end on tiny random CLIP, DINO and Stable Diffusion models (built from configs
here, saved with ``save_pretrained``; nothing downloaded), and the DreamBench-style scores on constructed
embeddings.

* the scores: identical embeddings score 1, opposite -1, orthogonal 0, CLIP-T pairs each image with its own
  prompt, the real-photo reference leaves out the diagonal, bad input is refused;
* a missing --clip, --sd or --dino folder stops the script at once with a message naming the path, the flag
  and the params key; a vision-only CLIP cannot score CLIP-T;
* the whole script (~40 s on 2 shared cores) on CPU at tiny sizes: every metric in [-1, 1], the anchors, the evaluation, the
  tiny/random-weights warning, the generated images.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, clip_tokenizer, tiny_params
from spotdiff.generate import scores

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("one_thread")

CLIP_SIZE = 32
"""Input side of the tiny CLIP and DINO models, pixels."""
WORDS = ["a", "photo", "of", "in", "the", "jungle", "snow", "teapot", "vase", "backpack"]


def _load_script():
    spec = importlib.util.spec_from_file_location("real_weights", ROOT / "bench" / "real_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


real_weights = _load_script()


def _tiny_clip(folder: Path, *, vision_only: bool = False) -> Path:
    """A random CLIPModel (or vision tower only) with a tokenizer, ``CLIP_SIZE`` px input, saved in ``folder``."""
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                  image_size=CLIP_SIZE, patch_size=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if vision_only:
            model = transformers.CLIPVisionModelWithProjection(
                transformers.CLIPVisionConfig(**vision, projection_dim=16))
        else:
            tok = clip_tokenizer(folder.parent / f"{folder.name}-tok", WORDS)
            text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_attention_heads=4,
                        num_hidden_layers=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
            model = transformers.CLIPModel(transformers.CLIPConfig(vision_config=vision, text_config=text,
                                                                   projection_dim=16))
            tok.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def _tiny_dino(folder: Path) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = transformers.ViTModel(transformers.ViTConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=CLIP_SIZE,
            patch_size=8), add_pooling_layer=False)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return _tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, dreambench) -> Path:
    """Three subjects of dreambench-dev, two photos each, with their classes."""
    root = tmp_path_factory.mktemp("photos") / "photos"
    for subject in ("backpack", "teapot", "vase"):
        (root / subject).mkdir(parents=True)
        for name in ("00.jpg", "01.jpg"):
            shutil.copy(dreambench / subject / name, root / subject / name)
    (root / "classes.csv").write_text("subject,class\nbackpack,backpack\nteapot,teapot\nvase,vase\n")
    return root


# --------------------------------------------------------------------------- scores on constructed embeddings


def test_scores_on_constructed_embeddings():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 8))
    assert scores.mean_pairwise(a[:1], a[:1] * 5) == pytest.approx(1.0)  # scale does not matter
    assert scores.mean_pairwise(a[:1], -a[:1]) == pytest.approx(-1.0)
    e = np.eye(4)
    assert scores.mean_pairwise(e[:1], e[1:]) == pytest.approx(0.0)
    assert scores.mean_pairwise(e[:1], np.stack([e[0], e[1]])) == pytest.approx(0.5)  # every pair counts
    # CLIP-T pairs row i with row i: matched prompts 1, crossed 0
    assert scores.mean_matched(e[:2], e[:2]) == pytest.approx(1.0)
    assert scores.mean_matched(e[:2], e[[1, 0]]) == pytest.approx(0.0)
    # the real-photo reference leaves each photo's cosine with itself out
    assert scores.mean_within(np.stack([e[0], e[0], e[1]])) == pytest.approx(1 / 3)
    assert scores.mean_within(e[:1]) is None
    assert scores.macro([0.2, None, 0.4]) == pytest.approx(0.3) and scores.macro([None]) is None
    assert np.all(np.abs(scores.cosine(a, rng.normal(size=(5, 8)))) <= 1)
    labels = ["cat", "dog", "cat"]
    assert scores.zero_shot_top1(np.stack([e[0], e[1], e[1]]), labels, {"cat": e[0], "dog": e[1]}) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="non-zero"):
        scores.mean_pairwise(np.zeros((1, 4)), e[:1])
    with pytest.raises(ValueError, match="2 images for 3 prompts"):
        scores.mean_matched(e[:2], e[:3])
    assert scores.is_tiny("clip", 32, 2) and not scores.is_tiny("clip", 768, 12) and not scores.is_tiny("dino", 384, 12)


def test_encoders_load_tiny_checkpoints(clip, tmp_path):
    text = scores.TextEncoder.from_folder(str(clip), "--clip", "cpu")
    t = text.embed(["a photo of a teapot", "a vase in the snow"])
    assert t.shape == (2, 16) and np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    dino = scores.DinoEncoder.from_folder(str(_tiny_dino(tmp_path / "dino")), "--dino", "cpu")
    images = [np.full((40, 60, 3), v, np.uint8) for v in (10, 200)]
    d = dino.embed(images)
    assert d.shape == (2, 32) and dino.preprocess.crop == CLIP_SIZE
    assert scores.mean_pairwise(d[:1], dino.embed(images[:1])) == pytest.approx(1.0, abs=1e-5)  # same image: 1


# --------------------------------------------------------------------------- missing weights: clear errors, no work


def _run(argv, capsys) -> tuple[int, str]:
    code = real_weights.main(argv)
    return code, capsys.readouterr().err


def test_missing_weights_name_the_path_flag_and_key(clip, tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "no-such-clip"
    code, err = _run(["--clip", str(missing), "--out", str(out)], capsys)
    assert code == 2 and "--clip (embed.model)" in err and str(missing) in err and "no such folder" in err
    assert "never downloaded" in err and not out.exists()  # stopped before any work
    code, err = _run(["--clip", str(clip), "--sd", str(tmp_path / "no-sd"), "--out", str(out)], capsys)
    assert code == 2 and "--sd (train.stage2.model)" in err and str(tmp_path / "no-sd") in err
    code, err = _run(["--clip", str(clip), "--dino", str(tmp_path / "no-dino"), "--out", str(out)], capsys)
    assert code == 2 and "--dino" in err and str(tmp_path / "no-dino") in err
    (tmp_path / "empty").mkdir()
    code, err = _run(["--clip", str(tmp_path / "empty"), "--out", str(out)], capsys)
    assert code == 2 and "no config.json and weights" in err
    sd = tmp_path / "sd"
    (sd / "unet").mkdir(parents=True)
    (sd / "model_index.json").write_text("{}")
    (sd / "unet" / "config.json").write_text("{}")
    vision = _tiny_clip(tmp_path / "vision", vision_only=True)
    code, err = _run(["--clip", str(vision), "--sd", str(sd), "--out", str(out)], capsys)
    assert code == 2 and "vision-only" in err and "--score-clip" in err
    assert not out.exists()


# --------------------------------------------------------------------------- end to end (slow)


def test_end_to_end_on_tiny_models(clip, tiny, photos, tmp_path, capsys):
    dino = _tiny_dino(tmp_path / "dino")
    params = tiny_params(tmp_path)
    out = tmp_path / "out"
    argv = ["--clip", str(clip), "--sd", tiny, "--dino", str(dino), "--photos", str(photos), "--out", str(out),
            "--device", "cpu", "-p", str(params), "--groups", "24", "--image-size", "64", "--stage2-steps", "2",
            "--resolution", "64", "--prompts", "2", "--images", "1", "--steps", "1", "--subjects", "3", "-q",
            "-S", "train.stage2.batch_size=2"]
    code = real_weights.main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    r = json.loads((out / "real_weights.json").read_text())
    assert "TINY OR RANDOM WEIGHTS" in r["warning"] and "meaningless" in r["warning"]
    assert {k: w["tiny"] for k, w in r["weights"].items()} == {"clip": True, "sd": True, "dino": True}
    assert "WARNING" in captured.err
    assert r["anchors"]["clip_i"] == 0.813 and r["anchors"]["dino"] == 0.667 and r["anchors"]["clip_t"] == 0.289
    assert list(r["stages"]) == ["generate", "qa", "shard", "train", "evaluate"]
    assert r["evaluation"]["verdict"] in ("PASS", "FAIL", "UNMEASURABLE")
    assert r["weights_check"]["classes"] == 3 and 0 <= r["weights_check"]["clip_zero_shot_top1"] <= 1
    g = r["generation"]
    assert g["images"] == 3 * 2 * 1 * 2 and set(g["per_subject"]) == {"backpack", "teapot", "vase"}
    for metric in ("clip_i", "dino", "clip_t"):
        for mode in ("adapter", "text_only"):
            assert -1 <= g["metrics"][metric][mode] <= 1, (metric, mode)
    assert -1 <= g["metrics"]["clip_i"]["real"] <= 1 and -1 <= g["metrics"]["dino"]["real"] <= 1
    assert g["metrics"]["clip_t"]["real"] is None
    assert len(list((out / "dreambench").glob("*/*.png"))) == g["images"]
    adapter, text_only = (out / "dreambench" / "teapot" / f"{m}-p0-seed0.png" for m in ("adapter", "text_only"))
    assert adapter.read_bytes() != text_only.read_bytes()  # the adapter's tokens reach the UNet
    assert (out / "train" / "ip_adapter.safetensors").is_file()
    assert "embed.backend=clip" in r["overrides"]
    md = (out / "real_weights.md").read_text()
    assert "WARNING" in md and "| CLIP-I |" in md and "0.813" in md and "0.667" in md and "0.289" in md
    assert str(tmp_path) not in json.dumps(r["weights"])  # portable paths, as every artifact records them

    # the generation check again on what is there (a GPU user's rerun): no stage runs, one prompt, adapter only
    assert real_weights.main([*argv, "--from-stage", "dreambench", "--prompts", "1", "--no-text-only"]) == 0
    again = json.loads((out / "real_weights.json").read_text())
    assert again["stages"] == {} and again["evaluation"] == r["evaluation"]
    assert again["generation"]["images"] == 3 and "text_only" not in again["generation"]["metrics"]["clip_i"]

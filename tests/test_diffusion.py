"""Stable Diffusion loading, seeded generation, the ``diffusion`` source and edge harmonisation.

Every pipeline here is TINY and random (built from configs in the test, saved with
``save_pretrained`` and loaded back through ``load_pipeline``): nothing is downloaded and the
images are noise, which is all the plumbing needs.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import clip_tokenizer
from spotdiff.common import diffusion
from spotdiff.common.paths import portable
from spotdiff.config import ConfigError, GenerateConfig
from spotdiff.common.diffusion import edge_band, generate_image, harmonise, load_pipeline
from spotdiff.config import DiffusionConfig
from spotdiff.generate.sources import SubjectLayers, get
from spotdiff.generate.sources.diffusion import diffusion_background, make_diffusion_background

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

SIZE = 64
"""Side of the test images, pixels (the tiny autoencoder halves it once: 32 x 32 latents)."""
WORDS = ["a", "photo", "of", "red", "blue", "teapot", "vase", "on", "plain", "white", "background", "beach"]


def _build(folder, inpaint: bool):
    """Save a tiny random Stable Diffusion (inpainting when ``inpaint``) pipeline into ``folder``."""
    tokenizer = clip_tokenizer(folder.parent / f"{folder.name}-tok", WORDS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = diffusers.UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=1, sample_size=32,
            in_channels=9 if inpaint else 4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8)
        vae = diffusers.AutoencoderKL(
            block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=SIZE)
        text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    cls = diffusers.StableDiffusionInpaintPipeline if inpaint else diffusers.StableDiffusionPipeline
    pipe = cls(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """This module's own text-to-image pipeline (``SIZE`` pixels), in place of conftest's ``tiny``."""
    return str(_build(tmp_path_factory.mktemp("sd") / "text2img", inpaint=False))


@pytest.fixture(scope="module")
def tiny_inpaint(tmp_path_factory) -> str:
    return str(_build(tmp_path_factory.mktemp("sd") / "inpaint", inpaint=True))


def _cfg(model: str, **diff) -> GenerateConfig:
    dcfg = DiffusionConfig(model=model, device="cpu", steps=2, guidance=7.0, image_size=SIZE, **diff)
    # grabcut on a random image is unsure of itself: accept any score, the plumbing is what is tested.
    return GenerateConfig(seed=7, segment="grabcut", min_segment_score=0.0, diffusion=dcfg)


def test_generate_is_seeded(tiny):
    pipe = load_pipeline(tiny, "text2img", "cpu")
    assert load_pipeline(tiny, "text2img", "cpu") is pipe  # cached per process
    assert pipe.spotdiff_identity == portable(tiny)  # no absolute path of this machine in what records it
    a = generate_image(pipe, "a photo of a red teapot", 11, SIZE, steps=2)
    b = generate_image(pipe, "a photo of a red teapot", 11, SIZE, steps=2)
    c = generate_image(pipe, "a photo of a red teapot", 12, SIZE, steps=2)
    assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="multiple of 2"):
        generate_image(pipe, "a", 1, 33, steps=1)


def test_missing_weights_name_the_key(tmp_path, tiny):
    with pytest.raises(ConfigError, match=r"generate\.diffusion\.model = .*no such folder.*hf download"):
        load_pipeline(str(tmp_path / "nope"), "text2img", "cpu")
    with pytest.raises(ConfigError, match=r"generate\.diffusion\.model = 'nobody/no-such-model'.*Hugging Face cache"):
        load_pipeline("nobody/no-such-model", "text2img", "cpu")
    with pytest.raises(ConfigError, match=r"generate\.diffusion\.inpaint_model = .*no such folder"):
        load_pipeline(str(tmp_path / "nope"), "inpaint", "cpu")
    with pytest.raises(ConfigError, match=r"generate\.diffusion\.model is not set"):
        load_pipeline(None, "text2img", "cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="model_index.json"):
        load_pipeline(str(tmp_path / "empty"), "text2img", "cpu")
    with pytest.raises(ConfigError, match=r"inpaint_model = .*4 input channels"):
        load_pipeline(tiny, "inpaint", "cpu")  # a text-to-image UNet cannot inpaint


def test_config_rules():
    with pytest.raises(ValueError, match="multiple of 8"):
        DiffusionConfig(image_size=100)
    with pytest.raises(ValueError, match="inpaint_model"):
        DiffusionConfig(inpaint=True)
    with pytest.raises(ValueError, match="only"):
        DiffusionConfig(subject_templates=["a {colour} thing"])


def test_source_builds_layers(tiny):
    cfg = _cfg(tiny)
    source = get("diffusion")
    jobs = source.plan(cfg, 3, 10)
    assert jobs == source.plan(cfg, 3, 10)  # deterministic
    assert [j.index for j in jobs] == [10, 11, 12]
    dcfg = cfg.diffusion
    for j in jobs:
        assert j.class_name in dcfg.classes and j.item.endswith("on a plain white background, studio lighting, centered")
        assert j.subject_id.startswith("diffusion:")
    assert len({j.subject_id for j in jobs}) == 3
    job = jobs[0]
    out = source.layers(job, cfg, np.random.default_rng(0), 48)
    assert isinstance(out, SubjectLayers)
    assert out.anchor.rgb.dtype == np.float32 and out.anchor.alpha.shape == out.anchor.rgb.shape[:2]
    assert out.caption.endswith(job.class_name)
    meta = out.meta["diffusion"]
    assert meta["prompt"] == job.item and meta["steps"] == 2 and meta["guidance"] == 7.0
    assert meta["model"] == portable(tiny) and isinstance(meta["seed"], int)
    assert out.meta["segment"]["backend"] == "grabcut" and out.meta["pose"]["kind"] == "affine"
    again = source.layers(job, cfg, np.random.default_rng(0), 48)
    assert np.array_equal(out.anchor.rgb, again.anchor.rgb)


def test_background(tiny):
    cfg = _cfg(tiny)
    rgb, bg_id = diffusion_background(cfg, 5, 40)
    assert rgb.shape == (40, 40, 3) and rgb.dtype == np.uint8
    kind, idx, n = bg_id.split(":")
    assert kind == "diffusion" and int(idx) < len(cfg.diffusion.scene_prompts) and n.isdigit()
    assert np.array_equal(make_diffusion_background(cfg.diffusion, bg_id, 40), rgb)
    with pytest.raises(ValueError, match="out of range"):
        make_diffusion_background(cfg.diffusion, "diffusion:99:1", 40)


def test_harmonise_changes_only_the_band(tiny_inpaint):
    pipe = load_pipeline(tiny_inpaint, "inpaint", "cpu")
    rng = np.random.default_rng(3)
    composite = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:44, 20:50] = 255
    band = edge_band(mask, 4)
    assert band[16, 30] and band[12, 30] and not band[30, 35] and not band[5, 5]
    out = harmonise(pipe, composite, mask, 4, seed=1, prompt="a photo", steps=2)
    assert out.shape == composite.shape and out.dtype == np.uint8
    assert np.array_equal(out[~band], composite[~band])
    assert (out[band] != composite[band]).any()
    assert np.array_equal(out, harmonise(pipe, composite, mask, 4, seed=1, prompt="a photo", steps=2))
    # no outline (empty mask): nothing to repaint
    assert np.array_equal(harmonise(pipe, composite, np.zeros_like(mask), 4, 1, "a photo", steps=2), composite)


def teardown_module() -> None:
    diffusion.clear_cache()


def test_whole_pipeline_with_diffusion_subjects_backgrounds_and_harmonise(tmp_path, tiny, tiny_inpaint):
    """generate() end to end on the tiny pipelines: every group gets a diffusion subject, a diffusion
    background and a harmonised outline, and records say so."""
    from spotdiff.config import parse_params
    from spotdiff.generate.run import generate
    from spotdiff.common.record import decode_members, label_problems
    from spotdiff.shard.run import iter_generated

    params = parse_params({"generate": {
        "n_groups": 2, "image_size": 64, "workers": 1, "sources": {"diffusion": 1},
        "backgrounds": {"diffusion": 1, "gradient": 1}, "segment": "grabcut", "min_segment_score": 0.0,
        "diffusion": {"model": tiny, "steps": 2, "image_size": 64, "device": "cpu",
                      "inpaint": True, "inpaint_model": tiny_inpaint}}})
    stats = generate(params.generate, tmp_path / "gen", progress=False)
    assert stats.groups_in == 2 == stats.kept + stats.rejected
    groups = [decode_members(m) for _, m in iter_generated(tmp_path / "gen")]
    assert groups, stats.rejected_by_reason
    for g in groups:
        assert g.meta["source"] == "diffusion" and g.meta["diffusion"]["seed"] >= 0
        assert g.meta["harmonise"]["band"] == 8
        assert not label_problems(g.record())  # the diffusion and harmonise labels are typed in the cards' schema
        assert g.views["anchor"].image.shape == (64, 64, 3)

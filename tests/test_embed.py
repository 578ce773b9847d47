"""ImageEncoder on real photos: the seeded ``embedded`` backend, and the ``clip`` backend loading tiny
randomly initialised CLIP checkpoints that the tests write with ``save_pretrained``.

The tiny checkpoints are CLIP's own architecture at toy size, so every loading path the real
openai/clip-vit-base-patch32 takes (vision-only and full CLIPModel layouts, preprocessor config)
runs here in well under a second. Nothing is downloaded: conftest.py sets HF_HUB_OFFLINE before
this module imports transformers, and the encoder reads only local files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from transformers import (
    CLIPConfig, CLIPImageProcessor, CLIPImageProcessorPil, CLIPModel, CLIPVisionConfig, CLIPVisionModel,
    CLIPVisionModelWithProjection,
)

from spotdiff.config import ConfigError
from spotdiff.model.embed import EmbedConfig, ImageEncoder

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            patch_size=16, image_size=64)
"""A CLIP vision tower at toy size: 64 px input -> 16 patches + class token, 32 channels."""


@pytest.fixture(scope="module")
def photos(dreambench: Path) -> list[np.ndarray]:
    """Ten real photos as uint8 RGB arrays; two cut to portrait and landscape so resize and crop
    handle both aspect ratios (the dreambench photos are all square)."""
    paths = sorted(dreambench.glob("*/0*.jpg"))[::4][:10]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    arrays[1] = arrays[1][:, 100:400]    # portrait 300 x 512
    arrays[2] = arrays[2][150:420, :]   # landscape 512 x 270
    return arrays


def _cpu(**kw) -> EmbedConfig:
    return EmbedConfig(device="cpu", **kw)


def _normalised(embeds: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(embeds.float(), dim=-1).numpy()


@pytest.fixture(scope="module")
def encoder() -> ImageEncoder:
    return ImageEncoder.from_config(_cpu())


# --------------------------------------------------------------------------- embedded backend


def test_embedded_same_seed_same_embeddings_other_seed_other(encoder, photos):
    again = ImageEncoder.from_config(_cpu())
    other = ImageEncoder.from_config(_cpu(embedded={"seed": 1}))
    e = encoder.embed(photos)
    assert np.array_equal(e, again.embed(photos))
    assert again.identity == encoder.identity
    assert np.abs(e - other.embed(photos)).max() > 0.1
    assert other.identity != encoder.identity and "seed=1" in other.identity


def test_seeding_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ImageEncoder.from_config(_cpu(embedded={"seed": 7}))
    assert torch.equal(torch.rand(3), expected)


def test_embedding_shape_norm_and_tokens(encoder, photos):
    e = encoder.embed(photos)
    assert e.shape == (len(photos), 128) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(e[0], e[3])  # different photos, different features
    tokens = encoder.embed_tokens(photos[:3])
    assert tokens.shape == (3, 1 + (224 // 16) ** 2, 128) and tokens.dtype == np.float32
    assert encoder.embed([]).shape == (0, 128)
    assert encoder.embed_tokens([]).shape == (0, 197, 128)


def test_batch_size_does_not_change_embeddings(photos):
    one = ImageEncoder.from_config(_cpu(batch_size=1))
    eight = ImageEncoder.from_config(_cpu(batch_size=8))  # 10 photos: a full batch and a partial one
    np.testing.assert_allclose(one.embed(photos), eight.embed(photos), atol=1e-5, rtol=0)
    np.testing.assert_allclose(one.embed_tokens(photos[:9]), eight.embed_tokens(photos[:9]), atol=1e-4, rtol=0)


def test_identity_tracks_architecture_and_preprocessing(encoder):
    wider = ImageEncoder.from_config(_cpu(embedded={"projection_dim": 64}))
    smaller = ImageEncoder.from_config(_cpu(image_size=160))
    assert len({encoder.identity, wider.identity, smaller.identity}) == 3
    assert encoder.identity.startswith("embedded:seed=0:")
    # batch size changes nothing computed, so it must not split a feature cache
    assert ImageEncoder.from_config(_cpu(batch_size=3)).identity == encoder.identity


def test_bad_images_are_rejected(encoder, photos):
    for bad in (photos[0].astype(np.float32), photos[0][..., 0], np.zeros((0, 5, 3), np.uint8)):
        with pytest.raises(ValueError, match=r"image 1: expected a uint8 \(H, W, 3\)"):
            encoder.embed([photos[0], bad])


@pytest.mark.parametrize("raw, needle", [
    ({"backend": "clip"}, "needs embed.model"),
    ({"batch_size": 0}, "greater than or equal to 1"),
    ({"embedded": {"hidden_size": 100, "num_attention_heads": 3}}, "must divide hidden_size"),
    ({"embedded": {"patch_size": 64}, "image_size": 32}, "larger than image_size"),
    ({"devise": "cpu"}, "Extra inputs"),
])
def test_config_rules(raw, needle):
    with pytest.raises(ValidationError, match=needle):
        EmbedConfig(**raw)


def test_cuda_without_gpu_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match=r"embed\.device = 'cuda'"):
        ImageEncoder.from_config(EmbedConfig(device="cuda"))


# --------------------------------------------------------------------------- clip backend


def _tiny_vision(seed: int) -> CLIPVisionModelWithProjection:
    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(projection_dim=24, **TINY)).eval()


def test_clip_loads_saved_checkpoint_with_its_preprocessor(tmp_path, photos):
    """Weights from disk and the checkpoint's preprocessor config (non-CLIP mean/std) are both used:
    the encoder matches the in-memory model fed by transformers' PIL-backend CLIP image processor
    (the same PIL bicubic resize as OpenAI's CLIP; transformers' default torchvision backend
    differs by one grey level on a few pixels)."""
    model = _tiny_vision(seed=3)
    model.save_pretrained(tmp_path)
    processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64},
                                   image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    processor.save_pretrained(tmp_path)

    enc = ImageEncoder.from_config(_cpu(backend="clip", model=str(tmp_path), batch_size=4))
    reference = CLIPImageProcessorPil.from_pretrained(tmp_path, local_files_only=True)
    pixels = reference(images=[Image.fromarray(p) for p in photos], return_tensors="pt").pixel_values
    np.testing.assert_allclose(enc.pixel_values(photos).numpy(), pixels.numpy(), atol=1e-5, rtol=0)
    with torch.inference_mode():
        expected = model(pixel_values=pixels)
    np.testing.assert_allclose(enc.embed(photos), _normalised(expected.image_embeds), atol=1e-5, rtol=0)
    np.testing.assert_allclose(enc.embed_tokens(photos), expected.last_hidden_state.numpy(), atol=1e-4, rtol=0)
    assert enc.dim == 24 and enc.image_size == 64
    assert enc.identity.startswith(f"clip:<external>/{tmp_path.name}:")  # named, not located on this machine


def test_clip_loads_full_clipmodel_layout(tmp_path, photos):
    """The openai/clip-* layout: a CLIPModel checkpoint whose projection_dim sits outside vision_config.
    Without a preprocessor config, CLIP's mean/std at the model's input size apply."""
    torch.manual_seed(5)
    text = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=64,
                bos_token_id=0, eos_token_id=1, pad_token_id=1)
    full = CLIPModel(CLIPConfig(vision_config=TINY, text_config=text, projection_dim=40)).eval()
    full.save_pretrained(tmp_path)

    enc = ImageEncoder.from_config(_cpu(backend="clip", model=str(tmp_path)))
    with torch.inference_mode():
        expected = full.get_image_features(pixel_values=enc.pixel_values(photos))
    expected = expected if isinstance(expected, torch.Tensor) else expected.pooler_output
    assert enc.dim == 40
    np.testing.assert_allclose(enc.embed(photos), _normalised(expected), atol=1e-5, rtol=0)


def test_clip_checkpoint_without_projection_is_rejected(tmp_path):
    CLIPVisionModel(CLIPVisionConfig(**TINY)).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"lacks 1 vision weight.*visual_projection"):
        ImageEncoder.from_config(_cpu(backend="clip", model=str(tmp_path)))


def test_clip_image_size_must_match_the_checkpoint(tmp_path):
    _tiny_vision(seed=0).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"embed\.image_size = 224: .* takes 64 px input"):
        ImageEncoder.from_config(_cpu(backend="clip", model=str(tmp_path), image_size=224))


def _assert_names_key_value_and_remedy(err: pytest.ExceptionInfo, value: str) -> None:
    text = str(err.value)
    assert f"embed.model = {value!r}" in text, text
    assert "hf download openai/clip-vit-base-patch32" in text and "save_pretrained" in text, text


def test_missing_folder_is_a_config_error(tmp_path):
    value = str(tmp_path / "no-such-model")
    with pytest.raises(ConfigError) as err:
        ImageEncoder.from_config(_cpu(backend="clip", model=value))
    _assert_names_key_value_and_remedy(err, value)
    assert "no such folder;" in str(err.value)  # an absolute path cannot be a hub id: no cache talk


def test_folder_without_weights_is_a_config_error(tmp_path):
    CLIPVisionConfig(**TINY).save_pretrained(tmp_path)  # config.json only
    with pytest.raises(ConfigError, match=r"has no weights") as err:
        ImageEncoder.from_config(_cpu(backend="clip", model=str(tmp_path)))
    _assert_names_key_value_and_remedy(err, str(tmp_path))


def test_uncached_hub_id_is_a_config_error(tmp_path, monkeypatch):
    # An empty cache, so the test holds even on a machine that has downloaded the model.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ConfigError) as err:
        ImageEncoder.from_config(_cpu(backend="clip", model="openai/clip-vit-base-patch32"))
    _assert_names_key_value_and_remedy(err, "openai/clip-vit-base-patch32")
    assert "local Hugging Face cache" in str(err.value)


def test_cached_hub_id_loads_from_the_cache(tmp_path, monkeypatch, photos):
    """A hub id resolves to its snapshot in the local cache (the layout ``hf download`` leaves) and the
    identity pins the commit, so a re-downloaded newer revision gets a new feature cache."""
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    repo = hub / "models--someone--tiny-clip"
    model = _tiny_vision(seed=4)
    model.save_pretrained(repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))

    enc = ImageEncoder.from_config(_cpu(backend="clip", model="someone/tiny-clip"))
    assert enc.identity.startswith("clip:someone/tiny-clip@0123abcd:")
    with torch.inference_mode():
        expected = model(pixel_values=enc.pixel_values(photos[:4])).image_embeds
    np.testing.assert_allclose(enc.embed(photos[:4]), _normalised(expected), atol=1e-5, rtol=0)

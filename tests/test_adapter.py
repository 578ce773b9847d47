"""Alignment module: IP-Adapter export read by diffusers' own loader, stage-2 training, reference generation.

The Stable Diffusion pipeline is TINY and random (conftest's ``tiny``: built there, saved with ``save_pretrained``
and loaded back through ``spotdiff.common.diffusion.load_pipeline``); its cross-attention layers have two
different widths (16 and 32) so per-layer shapes are exercised. Nothing is downloaded.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from helpers import TINY_SD_SIZE

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from safetensors import safe_open  # noqa: E402

from spotdiff.common import diffusion  # noqa: E402
from spotdiff.common.diffusion import generate_image, load_pipeline  # noqa: E402
from spotdiff.generate.reference import generate_with_reference, run_reference_generation  # noqa: E402
from spotdiff.model.adapter import (AlignmentModule, attached, export_ip_adapter, load_alignment,  # noqa: E402
                                    read_adapter_meta)
from spotdiff.model.stage2 import train_stage2  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest's: single-threaded torch for this module

SIZE = TINY_SD_SIZE
"""Side of the test images, pixels: that of conftest's ``tiny`` pipeline."""
D = 10
"""Subject feature length used throughout."""


@pytest.fixture(scope="module")
def adapter(tiny, tmp_path_factory):
    """(module, exported path): an alignment module for the tiny UNet with a non-trivial projection."""
    pipe = load_pipeline(tiny, "text2img", "cpu")
    module = AlignmentModule.from_unet(pipe.unet, D, seed=3)
    with torch.no_grad():  # a visible image branch: default init is small next to the copied to_k/to_v
        module.image_proj.proj.weight.mul_(20.0)
    path = export_ip_adapter(module, tmp_path_factory.mktemp("adapter") / "spotdiff_adapter.safetensors",
                             backbone="embed:test@seed0", base_model=pipe.spotdiff_identity)
    return module, path


def teardown_module() -> None:
    diffusion.clear_cache()


def _feature(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=D).astype(np.float32)


def test_layout_matches_the_unet(tiny):
    pipe = load_pipeline(tiny, "text2img", "cpu")
    module = AlignmentModule.from_unet(pipe.unet, D, seed=0)
    cross = [n for n in pipe.unet.attn_processors if not n.endswith("attn1.processor")]
    assert module.layer_names == tuple(cross) and len(cross) == 7
    sd = module.state_dict()
    assert sd["image_proj.proj.weight"].shape == (4 * 24, D) and sd["image_proj.norm.weight"].shape == (24,)
    assert sorted(int(k.split(".")[1]) for k in sd if k.endswith("to_k_ip.weight")) == [1, 3, 5, 7, 9, 11, 13]
    for i, name in enumerate(cross):
        attn = pipe.unet.get_submodule(name.removesuffix(".processor"))
        assert torch.equal(sd[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"], attn.to_k.weight)  # IP-Adapter's init
        assert torch.equal(sd[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"], attn.to_v.weight)
    assert {sd[f"ip_adapter.{k}.to_k_ip.weight"].shape[0] for k in (1, 3)} == {16, 32}  # per-layer widths
    tokens = module(torch.zeros(3, D))
    assert tokens.shape == (3, 4, 24)
    again = AlignmentModule.from_unet(pipe.unet, D, seed=0)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in sd.items())  # seeded
    with pytest.raises(ValueError, match=r"\(N, 10\)"):
        module(torch.zeros(3, D + 1))


def test_export_roundtrip_is_exact(adapter, tmp_path):
    module, path = adapter
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert keys == set(module.state_dict())
    assert {k.split(".")[0] for k in keys} == {"image_proj", "ip_adapter"}
    assert meta["feature_dim"] == str(D) and meta["num_tokens"] == "4" and meta["cross_attention_dim"] == "24"
    assert meta["backbone"] == "embed:test@seed0"
    loaded, info = load_alignment(path)
    assert info == read_adapter_meta(path) and info.feature_dim == D and info.layers == module.layer_names
    for k, v in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    feats = torch.randn(2, D)
    assert torch.equal(loaded(feats), module(feats))
    # refusals, each naming what is wrong
    with pytest.raises(ValueError, match="4 tokens"):
        export_ip_adapter(AlignmentModule(D, 8, 24, module_layers(module)), tmp_path / "k8.safetensors",
                          backbone="x")
    with pytest.raises(ValueError, match=r"\.safetensors"):
        export_ip_adapter(module, tmp_path / "a.bin", backbone="x")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_alignment(tmp_path / "junk.safetensors")


def module_layers(module: AlignmentModule) -> list[tuple[str, int]]:
    return [(n, module.ip_adapter[str(2 * i + 1)].to_k_ip.out_features) for i, n in enumerate(module.layer_names)]


def test_diffusers_load_ip_adapter_reads_the_export(tiny, adapter):
    """diffusers' own loader takes every tensor of the file (strict loads: nothing missing or left over),
    and the UNet then computes exactly what ``attached`` (the training path) computes."""
    module, path = adapter
    pipe = load_pipeline(tiny, "text2img", "cpu")
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = pipe.encode_prompt(["a photo of a teapot", "red"], "cpu", 1, False)[0]
    feats = torch.randn(2, 1, D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = pipe.unet(latents, 10, encoder_hidden_states=text).sample
        with attached(pipe.unet, module):
            trained_path = pipe.unet(latents, 10, encoder_hidden_states=text,
                                     added_cond_kwargs={"image_embeds": [feats]}).sample
        assert torch.equal(pipe.unet(latents, 10, encoder_hidden_states=text).sample, plain)  # restored
        pipe.load_ip_adapter(str(path.parent), subfolder="", weight_name=path.name, image_encoder_folder=None,
                             local_files_only=True, low_cpu_mem_usage=False)
        try:
            procs = pipe.unet.attn_processors
            for i, name in enumerate(module.layer_names):
                kv = module.ip_adapter[str(2 * i + 1)]
                assert torch.equal(procs[name].to_k_ip[0].weight, kv.to_k_ip.weight)
                assert torch.equal(procs[name].to_v_ip[0].weight, kv.to_v_ip.weight)
            proj = pipe.unet.encoder_hid_proj.image_projection_layers[0]
            assert isinstance(proj, diffusers.models.embeddings.ImageProjection) and proj.num_image_text_embeds == 4
            assert torch.equal(proj.image_embeds.weight, module.image_proj.proj.weight)
            assert torch.equal(proj.norm.bias, module.image_proj.norm.bias)
            loaded_path = pipe.unet(latents, 10, encoder_hidden_states=text,
                                    added_cond_kwargs={"image_embeds": [feats]}).sample
        finally:
            pipe.unload_ip_adapter()
            pipe.register_modules(feature_extractor=None)  # load_ip_adapter added one; the pipeline is shared
    assert torch.equal(loaded_path, trained_path)
    assert not torch.allclose(trained_path, plain, atol=1e-3)  # the image tokens do change the prediction


def test_generation_uses_the_adapter(tiny, adapter):
    _, path = adapter
    pipe = load_pipeline(tiny, "text2img", "cpu")
    prompt = "a photo of a teapot"
    before = generate_image(pipe, prompt, 5, SIZE, steps=1, guidance=3.0)
    kw = dict(seed=5, steps=1, size=SIZE, device="cpu")
    # classifier-free guidance: embeds (2, 1, D), negative (zeros) first
    one = generate_with_reference(tiny, path, _feature(0), prompt, guidance=3.0, scale=1.0, **kw)
    off = generate_with_reference(tiny, path, _feature(0), prompt, guidance=3.0, scale=0.0, **kw)
    assert one.shape == (SIZE, SIZE, 3) and one.dtype == np.uint8
    assert not np.array_equal(one, off)
    assert np.array_equal(off, before)  # scale 0 is text-only generation
    other = generate_with_reference(tiny, path, _feature(1), prompt, guidance=3.0, scale=1.0, **kw)
    assert not np.array_equal(other, one)  # the subject feature matters
    # no guidance: embeds (1, 1, D)
    unguided = generate_with_reference(tiny, path, _feature(0), prompt, guidance=1.0, **kw)
    assert not np.array_equal(unguided, generate_image(pipe, prompt, 5, SIZE, steps=1, guidance=1.0))
    # the cached pipeline is left without the adapter
    assert pipe.unet.encoder_hid_proj is None and pipe.feature_extractor is None
    assert np.array_equal(generate_image(pipe, prompt, 5, SIZE, steps=1, guidance=3.0), before)


def test_errors_name_the_problem(tiny, adapter, tmp_path):
    _, path = adapter
    missing = tmp_path / "nowhere" / "adapter.safetensors"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        generate_with_reference(tiny, missing, _feature(0), "a", seed=0, steps=1, size=SIZE, device="cpu")
    with pytest.raises(ValueError, match=rf"D = 7.*{re.escape(path.name)}.*D = {D}"):
        generate_with_reference(tiny, path, np.zeros(7, np.float32), "a", seed=0, steps=1, size=SIZE, device="cpu")
    bad = tmp_path / "bad.png"
    bad.write_text("this is not a picture")
    with pytest.raises(ValueError, match=r"bad\.png.*not_an_image"):
        run_reference_generation(bad, "a", tmp_path / "out", subject_encoder=lambda rgb: _feature(0),
                                 pipeline_model=tiny, adapter_path=path, n_images=1, steps=1, size=SIZE, device="cpu")
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        run_reference_generation(bad, "a", tmp_path / "out", subject_encoder=lambda rgb: _feature(0),
                                 pipeline_model=tiny, adapter_path=missing, n_images=1, steps=1, size=SIZE,
                                 device="cpu")


def test_run_reference_generation_is_seeded(tiny, adapter, tmp_path):
    _, path = adapter
    ref = tmp_path / "ref.jpg"
    rgb = np.zeros((48, 40, 3), np.uint8)
    rgb[10:40, 8:30] = (200, 40, 30)
    Image.fromarray(rgb).save(ref, quality=95)
    weights = np.random.default_rng(9).normal(size=(3, D)).astype(np.float32)
    seen = []

    def encoder(photo: np.ndarray) -> np.ndarray:
        seen.append(photo.shape)
        return (photo.reshape(-1, 3).mean(0) / 255.0) @ weights

    kw = dict(subject_encoder=encoder, pipeline_model=tiny, adapter_path=path, n_images=2, seed=11, steps=1,
              guidance=3.0, size=SIZE, device="cpu")
    a = run_reference_generation(ref, "a photo of a teapot on the beach", tmp_path / "a", **kw)
    b = run_reference_generation(ref, "a photo of a teapot on the beach", tmp_path / "b", **kw)
    assert [p.name for p in a] == ["ref-00-seed11.png", "ref-01-seed12.png"]
    assert sorted(p.name for p in (tmp_path / "a").glob("*.png")) == [p.name for p in a]
    assert seen == [(48, 40, 3)] * 2
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    images = [np.asarray(Image.open(p)) for p in a]
    assert images[0].shape == (SIZE, SIZE, 3) and not np.array_equal(images[0], images[1])
    record = json.loads((tmp_path / "a" / "reference_generation.json").read_text())
    assert record["seeds"] == [11, 12] and record["backbone"] == "embed:test@seed0"


def _batch(n: int = 4):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n, D)).astype(np.float32), rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8),
            ["a photo of a red teapot", "a photo of a teapot on the beach", "red", "a teapot"][:n])


def test_stage2_trains_only_the_module_and_is_seeded(tiny):
    pipe = load_pipeline(tiny, "text2img", "cpu")
    frozen = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    procs = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    feats, images, captions = _batch()
    runs = []
    for _ in range(2):
        module = AlignmentModule.from_unet(pipe.unet, D, seed=0)
        start = {k: v.clone() for k, v in module.state_dict().items()}
        runs.append(train_stage2(pipe, module, feats, images, captions, steps=2, lr=1e-3, batch_size=2, seed=4))
        assert all(not torch.equal(v, start[k]) for k, v in module.state_dict().items())  # every tensor learns
    assert len(runs[0]) == 2 and all(np.isfinite(runs[0]))
    assert runs[0] == runs[1]  # same seed, same losses, bit for bit
    module = AlignmentModule.from_unet(pipe.unet, D, seed=0)
    assert train_stage2(pipe, module, feats, images, captions, steps=2, lr=1e-3, batch_size=2, seed=5) != runs[0]
    unet_now = pipe.unet.state_dict()
    assert set(unet_now) == set(frozen) and all(torch.equal(unet_now[k], v) for k, v in frozen.items())
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == procs and pipe.unet.encoder_hid_proj is None
    with pytest.raises(ValueError, match=r"\(4, 10\)"):
        train_stage2(pipe, module, feats[:, :5], images, captions, steps=1)
    with pytest.raises(ValueError, match="multiple of the autoencoder"):
        train_stage2(pipe, module, feats, images[:, :15], captions, steps=1)


def test_stage2_loss_falls_on_a_repeated_batch(tiny):
    """30 steps on one batch of 4 (every step sees all 4; timesteps and noise are redrawn): the mean loss
    of the last 10 steps is below that of the first 10 (measured 1.082 -> 0.997 on this pipeline)."""
    pipe = load_pipeline(tiny, "text2img", "cpu")
    feats, images, captions = _batch()
    module = AlignmentModule.from_unet(pipe.unet, D, seed=1)
    losses = train_stage2(pipe, module, feats, images, captions, steps=30, lr=1e-2, batch_size=4, seed=0, drop=0.0)
    first, last = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
    print(f"stage-2 loss, mean of steps 1-10: {first:.4f}, of steps 21-30: {last:.4f}")
    assert last < first - 0.05, (first, last, losses)


def test_export_is_byte_identical(adapter, tmp_path):
    module, _ = adapter
    a = export_ip_adapter(module, tmp_path / "a.safetensors", backbone="b", base_model="m")
    b = export_ip_adapter(module, tmp_path / "b.safetensors", backbone="b", base_model="m")
    assert a.read_bytes() == b.read_bytes()
    loaded, meta = load_alignment(a)
    assert meta.backbone == "b" and all(torch.equal(v, module.state_dict()[k]) for k, v in loaded.state_dict().items())

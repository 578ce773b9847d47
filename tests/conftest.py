"""Shared fixtures: real photos from data/photos/dreambench-dev (in the repository), a tiny random Stable Diffusion pipeline,
small real shards and single-threaded torch. Plain helpers shared by test modules are in helpers.py.

The environment below is set when pytest loads this file, before it imports any test module, so no test
module needs to set it before its own imports."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach the network, whatever the shell says
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from pathlib import Path

import pytest

import spotdiff  # noqa: F401 -- first, before helpers imports numpy: it pins numeric libraries' CPU dispatch as they load
from helpers import TINY_SD_SIZE, clip_tokenizer, synthetic_groups

ROOT = Path(__file__).resolve().parents[1]
DREAMBENCH = ROOT / "data/photos/dreambench-dev"


@pytest.fixture(scope="session")
def dreambench() -> Path:
    if not DREAMBENCH.is_dir():
        pytest.skip(f"{DREAMBENCH} not present")
    return DREAMBENCH


@pytest.fixture(scope="module")
def one_thread():
    """Models this small gain nothing from intra-op threads, and on a shared CPU the threads' spinning
    costs several times the work itself; restored after the module. Not autouse: a module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A saved tiny random text-to-image pipeline (``TINY_SD_SIZE`` pixels) with 7 cross-attention layers
    (widths 16 and 32). test_diffusion.py overrides ``tiny`` with its own, wider pipeline."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("sd-adapter")
    tokenizer = clip_tokenizer(root / "tok", ["a", "photo", "of", "red", "teapot", "on", "the", "beach"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = diffusers.UNet2DConditionModel(
            block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24,
            attention_head_dim=8, norm_num_groups=8)
        vae = diffusers.AutoencoderKL(
            block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=TINY_SD_SIZE, norm_num_groups=8)
        text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=24, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.save_pretrained(root / "sd")
    return str(root / "sd")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Small real shards of 60 ``synthetic_groups`` (16 samples a tar)."""
    from spotdiff.config import ShardConfig
    from spotdiff.shard.run import write_shards

    out = tmp_path_factory.mktemp("shards")
    write_shards(synthetic_groups(60), out, ShardConfig(max_samples=16))
    return out

"""The ``sam`` backend on a real photo, with a tiny randomly initialised SAM loaded from a checkpoint file.

The tiny model is segment-anything's own architecture (ViT encoder, prompt encoder,
two-way-transformer mask decoder) at toy size, so every code path the real backend
takes -- checkpoint loading, prompting, candidate choice, stability -- runs here in
well under a second per photo. Random weights cannot say where the teapot is, so
prompt handling is checked on what reaches ``SamPredictor.predict``.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from segment_anything import SamPredictor
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from spotdiff.generate import segment
from spotdiff.config import ConfigError
from spotdiff.common.images import load_photo
from spotdiff.generate.segment.grabcut import segment_grabcut
from spotdiff.generate.segment.sam import SamConfig, SamSegmenter, interior_points, register_sam

TINY_SIDE = 128
"""Input side of the tiny model, pixels (patch 16 -> an 8 x 8 embedding, 32 x 32 low-res masks)."""
TINY_DIM = 32


def tiny_sam(checkpoint: str | None = None, seed: int = 0) -> Sam:
    """A randomly initialised SAM at toy size (~80k parameters), built the way the registry builders are."""
    assert checkpoint is None, "the segmenter must load weights itself"
    torch.manual_seed(seed)
    emb = TINY_SIDE // 16
    model = Sam(
        image_encoder=ImageEncoderViT(
            img_size=TINY_SIDE, patch_size=16, embed_dim=TINY_DIM, depth=2, num_heads=2, mlp_ratio=2.0,
            out_chans=TINY_DIM, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, window_size=0,
        ),
        prompt_encoder=PromptEncoder(embed_dim=TINY_DIM, image_embedding_size=(emb, emb),
                                     input_image_size=(TINY_SIDE, TINY_SIDE), mask_in_chans=4),
        mask_decoder=MaskDecoder(
            transformer_dim=TINY_DIM,
            transformer=TwoWayTransformer(depth=1, embedding_dim=TINY_DIM, mlp_dim=64, num_heads=2),
            num_multimask_outputs=3, iou_head_depth=2, iou_head_hidden_dim=32,
        ),
    )
    # Random weights give mask logits within about +-0.1: the mask at SAM's threshold 0 is not empty
    # (so mask_threshold stays at its default), but every logit sits inside the +-1 stability band, which
    # would make the stability score 0 for any mask. Scaling the hypernetworks' output layers spreads the
    # logits across the band so the stability score is a real fraction.
    with torch.no_grad():
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(40.0)
            mlp.layers[-1].bias.mul_(40.0)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny SAM's state dict saved by torch; its weights differ from what ``tiny_sam()`` builds."""
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(tiny_sam(seed=123).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def segmenter(checkpoint):
    return SamSegmenter(SamConfig(checkpoint=str(checkpoint), device="cpu"), builder=tiny_sam)


@pytest.fixture(scope="module")
def teapot(dreambench):
    return load_photo(dreambench / "teapot" / "00.jpg", max_pixels=40_000_000)


@pytest.fixture
def predict_calls(monkeypatch):
    """Records the keyword arguments of every ``SamPredictor.predict`` call (then runs the real one)."""
    calls: list[dict] = []
    real = SamPredictor.predict

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SamPredictor, "predict", spy)
    return calls


def test_loads_checkpoint_and_segments_a_photo(segmenter, checkpoint, teapot):
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for name, tensor in segmenter.model.state_dict().items():
        assert torch.equal(tensor, saved[name]), f"{name} not loaded from the checkpoint"

    seg = segmenter(teapot, "teapot")
    h, w = teapot.rgb.shape[:2]
    assert seg.backend == "sam"
    assert seg.mask.shape == (h, w) and seg.mask.dtype == np.float32
    assert 0.0 <= seg.mask.min() and seg.mask.max() <= 1.0
    assert seg.mask.max() >= 0.5, "SAM's binary mask (mask >= 0.5) is empty"
    assert 0.0 <= seg.score <= 1.0
    assert set(seg.extra) == {"predicted_iou", "stability"}
    assert 0.0 < seg.extra["stability"] < 1.0
    assert seg.score == pytest.approx(np.clip(seg.extra["predicted_iou"], 0, 1))


def test_same_photo_same_result(segmenter, checkpoint, teapot):
    a, b = segmenter(teapot, "teapot"), segmenter(teapot, "teapot")
    other = SamSegmenter(SamConfig(checkpoint=str(checkpoint), device="cpu"), builder=tiny_sam)(teapot, "teapot")
    for seg in (b, other):
        assert np.array_equal(a.mask, seg.mask)
        assert a.score == seg.score and a.extra == seg.extra


def test_missing_or_unset_checkpoint_is_a_config_error(tmp_path):
    missing = tmp_path / "nowhere" / "sam_vit_b.pth"
    with pytest.raises(ConfigError) as err:
        SamSegmenter(SamConfig(checkpoint=str(missing), device="cpu"), builder=tiny_sam)
    assert str(missing) in str(err.value) and "generate.sam.checkpoint" in str(err.value)
    with pytest.raises(ConfigError, match=r"generate\.sam\.checkpoint is not set"):
        SamSegmenter(SamConfig(device="cpu"), builder=tiny_sam)


@pytest.mark.parametrize("content", ["random", "truncated"])
def test_corrupt_checkpoint_is_a_config_error(tmp_path, checkpoint, content):
    bad = tmp_path / "bad.pth"
    data = checkpoint.read_bytes()
    bad.write_bytes(np.random.default_rng(0).bytes(4096) if content == "random" else data[: len(data) // 2])
    with pytest.raises(ConfigError) as err:
        SamSegmenter(SamConfig(checkpoint=str(bad), device="cpu"), builder=tiny_sam)
    assert str(bad) in str(err.value) and "generate.sam.checkpoint" in str(err.value)


class _Trap:
    """Unpickling this (with an unsafe loader) would create the file ``path``."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoint_with_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "pickle_ran"
    trap = tmp_path / "trap.pth"
    torch.save({"weight": _Trap(str(marker))}, trap)
    with pytest.raises(ConfigError, match="generate.sam.checkpoint") as err:
        SamSegmenter(SamConfig(checkpoint=str(trap), device="cpu"), builder=tiny_sam)
    assert not marker.exists()
    assert "never run" in str(err.value) and "weights_only" not in str(err.value)


def test_checkpoint_of_another_architecture_is_a_config_error(tmp_path):
    path = tmp_path / "other.pth"
    state = tiny_sam().state_dict()
    state["image_encoder.pos_embed"] = torch.zeros(1, 4, 4, TINY_DIM)  # wrong embedding grid
    torch.save(state, path)
    with pytest.raises(ConfigError, match=r"does not fit generate\.sam\.model_type = vit_b"):
        SamSegmenter(SamConfig(checkpoint=str(path), device="cpu"), builder=tiny_sam)


def test_box_hint_is_the_prompt(segmenter, teapot, predict_calls):
    hint = (0.1, 0.2, 0.6, 0.9)
    teapot_hinted = type(teapot)(teapot.rgb, None, teapot.source_size, box=hint)
    segmenter(teapot_hinted, "teapot")
    (call,) = predict_calls
    h, w = teapot.rgb.shape[:2]
    assert np.allclose(call["box"], [0.1 * w, 0.2 * h, 0.6 * w, 0.9 * h])
    assert call["multimask_output"] is True
    pts = call["point_coords"]
    assert pts.shape == (segmenter.cfg.points, 2) and np.all(call["point_labels"] == 1)
    assert np.all((pts[:, 0] >= 0.1 * w) & (pts[:, 0] <= 0.6 * w) & (pts[:, 1] >= 0.2 * h) & (pts[:, 1] <= 0.9 * h))


def test_without_hint_the_prompt_comes_from_the_coarse_mask(segmenter, teapot, predict_calls):
    segmenter(teapot, "teapot")
    (call,) = predict_calls
    coarse = segment_grabcut(teapot, "teapot").mask >= 0.5
    ys, xs = np.nonzero(coarse)
    assert np.allclose(call["box"], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    cols, rows = call["point_coords"].astype(int).T
    assert coarse[rows, cols].all(), "a positive point fell outside the coarse mask"


def test_box_only_prompt_when_points_is_zero(checkpoint, teapot, predict_calls):
    seg = SamSegmenter(SamConfig(checkpoint=str(checkpoint), device="cpu", points=0), builder=tiny_sam)
    seg(type(teapot)(teapot.rgb, None, teapot.source_size, box=(0.2, 0.2, 0.8, 0.8)), "teapot")
    (call,) = predict_calls
    assert call["point_coords"] is None and call["box"] is not None


def test_interior_points_are_deep_spread_and_deterministic():
    region = np.zeros((100, 200), bool)
    region[20:80, 10:190] = True  # a wide bar: points should spread along it
    pts = interior_points(region, 3)
    assert pts.shape == (3, 2)
    assert np.array_equal(pts, interior_points(region, 3))
    cols, rows = pts.astype(int).T
    assert region[rows, cols].all()
    assert np.all(np.abs(rows - 50) <= 2), "points should lie on the bar's mid-line"
    gaps = np.abs(pts[:, None, 0] - pts[None, :, 0])[np.triu_indices(3, 1)]
    assert gaps.min() >= 10
    assert interior_points(region, 0).shape == (0, 2)
    assert interior_points(np.zeros((10, 10), bool), 3).shape == (0, 2)


def test_config_section_is_strict():
    with pytest.raises(ValidationError):
        SamConfig(points=-1)
    with pytest.raises(ValidationError):
        SamConfig(model_type="vit_x")
    with pytest.raises(ValidationError):
        SamConfig(checkpiont="x.pth")  # typo'd key


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_config_error(checkpoint):
    with pytest.raises(ConfigError, match=r"generate\.sam\.device"):
        SamSegmenter(SamConfig(checkpoint=str(checkpoint), device="cuda"), builder=tiny_sam)


def test_register_sam_builds_lazily_and_fails_on_use_without_checkpoint():
    saved_factory = segment._REGISTRY.get("sam")
    try:
        register_sam(SamConfig(device="cpu"))  # builds nothing yet
        with pytest.raises(ConfigError, match=r"generate\.sam\.checkpoint is not set"):
            segment.get("sam")  # fails on the checkpoint, before building a full-size vit_b
    finally:
        segment._instances.pop("sam", None)
        if saved_factory is None:
            segment._REGISTRY.pop("sam", None)
        else:
            segment._REGISTRY["sam"] = saved_factory

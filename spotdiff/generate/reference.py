"""Reference-image generation: a photo of a subject + a prompt -> new images of that subject.

The subject feature of the reference photo (from the trained subject encoder, passed in as a
callable) conditions Stable Diffusion through the exported alignment module, loaded with diffusers'
own ``load_ip_adapter``: the image tokens enter every cross-attention layer next to the text tokens,
weighted by ``scale`` (0 = text only).

diffusers takes the feature as ``ip_adapter_image_embeds=[tensor]``: shape (1, 1, D) for one image,
and with classifier-free guidance (guidance > 1) (2, 1, D) with the negative first; the negative is
zeros, as diffusers' own ``encode_image`` makes it for a plain projection (and as stage 2 trains it).

The pipeline comes from ``spotdiff.common.diffusion.load_pipeline`` (cached per process); the adapter is
loaded into it for the duration of a call and unloaded afterwards, so other users of the cached
pipeline see it unchanged. Not safe to run concurrently with other threads using the same pipeline.
torch and diffusers are imported only when a pipeline is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spotdiff.common.diffusion import check_size, seeded_generator, to_uint8, load_pipeline
from spotdiff.common.images import BadInput, load_photo
from spotdiff.errors import InputError

REFERENCE_MAX_PIXELS = 40_000_000
"""Largest reference photo accepted, pixels (the default of generate.max_pixels): bigger headers are
treated as decompression bombs."""


def _feature(subject_feature: np.ndarray, feature_dim: int, adapter_path: str | Path) -> np.ndarray:
    """``subject_feature`` as float32 (D,); ValueError naming the adapter when D does not match."""
    feat = np.asarray(subject_feature, dtype=np.float32)
    if feat.ndim == 2 and feat.shape[0] == 1:
        feat = feat[0]
    if feat.ndim != 1:
        raise ValueError(f"subject_feature must be one vector (D,), got shape {np.shape(subject_feature)}")
    if feat.shape[0] != feature_dim:
        raise InputError(f"subject feature has D = {feat.shape[0]}, but adapter {adapter_path} was trained on "
                         f"D = {feature_dim} features (a different subject encoder or train.feature_dim)")
    if not np.isfinite(feat).all():
        raise ValueError("subject feature contains NaN or infinite values")
    return feat


@contextmanager
def reference_pipeline(pipeline_model: str, adapter_path: str | Path, *, scale: float = 1.0,
                       device: str = "auto") -> Iterator[tuple[Any, Any]]:
    """(pipeline, adapter metadata) with the adapter at ``adapter_path`` loaded through
    ``pipe.load_ip_adapter`` at ``scale``; unloaded on exit. FileNotFoundError naming the adapter path
    when it is missing; ValueError when it is not an adapter or was made for another UNet; ConfigError
    (from ``load_pipeline``) for missing pipeline weights."""
    from spotdiff.model.adapter import check_compatible, read_adapter_meta

    path = Path(adapter_path).expanduser().resolve()
    meta = read_adapter_meta(path)
    pipe = load_pipeline(pipeline_model, "text2img", device)
    check_compatible(meta.layers, meta.cross_attention_dim, pipe.unet, f"adapter {path}")
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    had_extractor = getattr(pipe, "feature_extractor", None) is not None
    try:
        dlogging.set_verbosity_error()  # silence "image_encoder is not loaded": we pass embeddings, never images
        try:
            pipe.load_ip_adapter(str(path.parent), subfolder="", weight_name=path.name, image_encoder_folder=None,
                                 local_files_only=True, low_cpu_mem_usage=False)
        finally:
            dlogging.set_verbosity(level)
        pipe.set_ip_adapter_scale(float(scale))
        yield pipe, meta
    finally:  # also after a failed load: leave the cached pipeline as load_pipeline made it
        pipe.unload_ip_adapter()
        if not had_extractor and getattr(pipe, "feature_extractor", None) is not None:
            pipe.register_modules(feature_extractor=None)  # load_ip_adapter adds one; unload keeps it


def generate_loaded(pipe: Any, feat: np.ndarray, prompt: str, *, seed: int, steps: int = 25, guidance: float = 7.0,
                    size: int = 512, negative_prompt: str | None = None) -> np.ndarray:
    """One uint8 (size, size, 3) image from a pipeline that ``reference_pipeline`` yielded (adapter loaded, at
    the scale last set with ``pipe.set_ip_adapter_scale``); ``feat`` float32 (D,), the adapter's feature
    length. For many images with one adapter load; arguments as ``generate_with_reference``."""
    import torch

    size = check_size(pipe, size)
    cfg = guidance > 1 and pipe.unet.config.time_cond_proj_dim is None  # the pipeline's own CFG rule
    embeds = torch.from_numpy(feat).reshape(1, 1, -1)
    if cfg:
        embeds = torch.cat([torch.zeros_like(embeds), embeds])  # negative first, as diffusers chunks them
    embeds = embeds.to(pipe.device, pipe.unet.dtype)
    with torch.inference_mode():
        out = pipe(prompt, negative_prompt=negative_prompt, height=size, width=size, num_inference_steps=int(steps),
                   guidance_scale=float(guidance), generator=seeded_generator(seed), ip_adapter_image_embeds=[embeds],
                   output_type="np")
    return to_uint8(out.images)


def generate_with_reference(pipeline_model: str, adapter_path: str | Path, subject_feature: np.ndarray, prompt: str,
                            *, seed: int, steps: int = 25, guidance: float = 7.0, size: int = 512,
                            scale: float = 1.0, device: str = "auto",
                            negative_prompt: str | None = None) -> np.ndarray:
    """One ``size`` x ``size`` uint8 (H, W, 3) image of the subject whose feature is ``subject_feature``
    (float (D,)) in the scene of ``prompt``.

    ``pipeline_model``: Stable Diffusion folder or cached hub id; ``adapter_path``: the
    ``export_ip_adapter`` file; ``seed`` fixes the starting noise; ``steps`` denoising steps; ``guidance``
    classifier-free guidance scale; ``size`` a multiple of 8 pixels; ``scale`` weight of the image tokens
    (0 = text only, 1 = as trained); ``device`` auto, cpu or cuda. Same inputs, same image.
    Errors: FileNotFoundError naming a missing adapter; ValueError for a D mismatch or an adapter made
    for another UNet; ConfigError for missing pipeline weights.
    """
    from spotdiff.model.adapter import read_adapter_meta

    feat = _feature(subject_feature, read_adapter_meta(adapter_path).feature_dim, adapter_path)
    with reference_pipeline(pipeline_model, adapter_path, scale=scale, device=device) as (pipe, _):
        return generate_loaded(pipe, feat, prompt, seed=seed, steps=steps, guidance=guidance, size=size,
                         negative_prompt=negative_prompt)


def run_reference_generation(ref_image_path: str | Path, prompt: str, out_dir: str | Path, *,
                             subject_encoder: Callable[[np.ndarray], np.ndarray], pipeline_model: str,
                             adapter_path: str | Path, n_images: int = 4, seed: int = 0, steps: int = 25,
                             guidance: float = 7.0, size: int = 512, scale: float = 1.0, device: str = "auto",
                             negative_prompt: str | None = None,
                             max_pixels: int = REFERENCE_MAX_PIXELS) -> list[Path]:
    """Generate ``n_images`` images of the subject in the photo at ``ref_image_path`` for ``prompt`` into
    ``out_dir``; returns the PNG paths, in order.

    The photo is loaded with ``spotdiff.common.images.load_photo`` (EXIF-upright uint8 RGB; ValueError naming
    the file when it is not a usable image); ``subject_encoder`` maps it (uint8 (H, W, 3)) to its subject
    feature (D,). Image i uses seed ``seed + i`` and is written as ``<photo stem>-<i>-seed<seed+i>.png``;
    ``reference_generation.json`` beside them records the settings, the adapter's backbone and the
    pipeline identity. Same inputs, same bytes. Other arguments as ``generate_with_reference``.
    """
    from spotdiff.model.adapter import read_adapter_meta

    if isinstance(n_images, bool) or int(n_images) != n_images or n_images < 1:
        raise InputError(f"n_images must be a positive int, got {n_images!r}")
    meta = read_adapter_meta(adapter_path)  # a missing adapter fails before any model work
    ref = Path(ref_image_path)
    try:
        photo = load_photo(ref, max_pixels)
    except BadInput as err:
        raise InputError(f"reference image {ref}: {err.reason}: {err.detail}") from None
    feat = _feature(subject_encoder(photo.rgb), meta.feature_dim, adapter_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with reference_pipeline(pipeline_model, adapter_path, scale=scale, device=device) as (pipe, _):
        for i in range(int(n_images)):
            img = generate_loaded(pipe, feat, prompt, seed=seed + i, steps=steps, guidance=guidance, size=size,
                            negative_prompt=negative_prompt)
            path = out / f"{ref.stem}-{i:02d}-seed{seed + i}.png"
            Image.fromarray(img).save(path)
            paths.append(path)
        identity = getattr(pipe, "spotdiff_identity", str(pipeline_model))
    record = {"reference": str(ref), "prompt": prompt, "negative_prompt": negative_prompt,
              "seeds": [seed + i for i in range(int(n_images))], "steps": steps, "guidance": guidance, "size": size,
              "scale": scale, "adapter": str(adapter_path), "backbone": meta.backbone, "pipeline": identity,
              "images": [p.name for p in paths]}
    (out / "reference_generation.json").write_text(json.dumps(record, indent=2) + "\n")
    return paths

"""Stable Diffusion (diffusers) for subjects and backgrounds: loading, seeded generation, edge harmonisation.

``load_pipeline(model, kind, device)`` loads a ``StableDiffusionPipeline`` (``kind="text2img"``) or a
``StableDiffusionInpaintPipeline`` (``kind="inpaint"``) from a local folder (``save_pretrained`` or
``hf download --local-dir`` layout, with ``model_index.json``) or from a hub id already in the local
Hugging Face cache. Weights are never downloaded: a missing folder or an uncached id fails at once
with a ConfigError naming the params key and how to provide the weights. Pipelines are cached per
process, keyed on (model, kind, device), so a worker loads each one once.

``generate_image`` draws one image from a prompt; the initial latents come from a CPU
``torch.Generator`` seeded with ``seed``, so the same (model, prompt, seed, size, steps, guidance)
gives the same picture on every run (and the same starting noise on CPU and CUDA; the images then
differ only by the device's arithmetic). ``harmonise`` repaints only a thin band around a pasted
subject's outline with an inpainting model and leaves every other pixel as it was.

torch and diffusers are imported only when a pipeline is loaded: importing this module (for
``DiffusionConfig``) stays cheap.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
from PIL import Image

from spotdiff.config import ConfigError
from spotdiff.common.weights import locate_folder, resolve_device

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

PARAMS_KEY = "generate.diffusion"
"""Where ``DiffusionConfig`` lives in params.yaml; error messages name keys under it."""
PipelineKind = Literal["text2img", "inpaint"]
MODEL_KEYS: dict[str, str] = {"text2img": f"{PARAMS_KEY}.model", "inpaint": f"{PARAMS_KEY}.inpaint_model"}
"""Pipeline kind -> the params key that names its weights."""
EXAMPLE_MODELS: dict[str, str] = {
    "text2img": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "inpaint": "stable-diffusion-v1-5/stable-diffusion-inpainting",
}
"""A public checkpoint of each kind, quoted in the how-to-get-weights hint."""


def how_to_get_weights(kind: str) -> str:
    """The hint appended to every missing-weights ConfigError for pipeline ``kind``."""
    example, key = EXAMPLE_MODELS[kind], MODEL_KEYS[kind]
    return ("weights are never downloaded here. On a machine with network, run "
            f"`hf download {example} --local-dir DIR` (older huggingface_hub: `huggingface-cli download "
            f"{example} --local-dir DIR`), or `DiffusionPipeline.from_pretrained('{example}').save_pretrained(DIR)`; "
            f"copy DIR here and set {key} to its path (or keep it in the Hugging Face cache and set {key} "
            "to the hub id)")


# --------------------------------------------------------------------------- loading


def _import_diffusers() -> Any:
    # Offline before huggingface_hub first reads its settings; every load also passes local_files_only.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import diffusers

    return diffusers


def locate(model: str | None, kind: PipelineKind = "text2img") -> tuple[Path, str]:
    """Folder holding the pipeline named by ``model``, and the identity naming it (``hub_id@commit`` for a
    cached hub id, else the folder relative to the repository or ``<external>/name``: records never hold
    this machine's paths; ``spotdiff.common.weights.locate_folder``). ConfigError when there is none."""
    key = MODEL_KEYS[kind]
    if not model:
        raise ConfigError(f"{key} is not set; {how_to_get_weights(kind)}")
    folder, identity = locate_folder(model, key, "a diffusers pipeline folder (model_index.json + component folders)",
                                     how_to_get_weights(kind))
    if not (folder / "model_index.json").is_file():
        raise ConfigError(f"{key} = {model!r}: {folder} has no model_index.json, so it is not a diffusers "
                          f"pipeline; {how_to_get_weights(kind)}")
    return folder, identity


_PIPELINES: dict[tuple[str, str, str], Any] = {}
_LOCK = threading.Lock()  # two threads asking for one model load it once


def load_pipeline(model: str | None, kind: PipelineKind = "text2img", device: str = "auto") -> DiffusionPipeline:
    """The Stable Diffusion pipeline of ``kind`` from ``model`` (local folder or cached hub id) on ``device``.

    ``device``: auto (CUDA in fp16 when available, else CPU in fp32), cpu or cuda. Cached per process
    on (resolved folder, kind, resolved device). The pipeline's ``spotdiff_identity`` attribute names the
    weights (see ``locate``). The safety checker is not loaded: subject and scene prompts come from
    params.yaml, and a checker would black out whole images at random. Raises ConfigError for missing
    weights, a folder of the wrong kind, or components that fail to load.
    """
    if kind not in MODEL_KEYS:
        raise ValueError(f"kind must be one of {sorted(MODEL_KEYS)}, got {kind!r}")
    dev = resolve_device(device, f"{PARAMS_KEY}.device")
    folder, identity = locate(model, kind)
    cache_key = (str(folder), kind, dev)  # the resolved folder: two local folders of one name are two models
    with _LOCK:
        if cache_key in _PIPELINES:
            return _PIPELINES[cache_key]
        import torch

        diffusers = _import_diffusers()
        cls = diffusers.StableDiffusionPipeline if kind == "text2img" else diffusers.StableDiffusionInpaintPipeline
        # fp16 on CUDA halves memory and uses tensor cores; CPUs run fp16 slowly (and some ops not at all).
        dtype = torch.float16 if dev == "cuda" else torch.float32
        key = MODEL_KEYS[kind]
        try:
            pipe = cls.from_pretrained(folder, local_files_only=True, dtype=dtype,
                                       safety_checker=None, requires_safety_checker=False)
        except Exception as err:  # noqa: BLE001 -- OSError, missing components, bad configs, shape errors, ...
            raise ConfigError(f"{key} = {model!r}: cannot load a {cls.__name__} from {folder} "
                              f"({_first_line(err)}); {how_to_get_weights(kind)}") from err
        unet_in = int(pipe.unet.config.in_channels)
        want = 9 if kind == "inpaint" else 4  # 4 latent channels, + 4 masked-image latents + 1 mask
        if unet_in != want:
            raise ConfigError(f"{key} = {model!r}: its UNet takes {unet_in} input channels, a {kind} pipeline "
                              f"needs {want}" + (" (an inpainting checkpoint)" if kind == "inpaint" else ""))
        pipe = pipe.to(dev)
        pipe.set_progress_bar_config(disable=True)
        pipe.spotdiff_identity = identity
        _PIPELINES[cache_key] = pipe
        return pipe


def clear_cache() -> None:
    """Forget every loaded pipeline (frees their memory once no caller holds them)."""
    with _LOCK:
        _PIPELINES.clear()


def _first_line(err: BaseException, limit: int = 200) -> str:
    """``Type: message`` cut to its first line (library messages run to paragraphs)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:limit]}"


# --------------------------------------------------------------------------- generation


def seeded_generator(seed: int) -> Any:
    """A CPU generator seeded with ``seed``: latents drawn on the CPU are the same whatever the device."""
    import torch

    if not 0 <= int(seed) < 1 << 64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return torch.Generator("cpu").manual_seed(int(seed))


def check_size(pipe: Any, size: int) -> int:
    factor = int(pipe.vae_scale_factor)
    if isinstance(size, bool) or int(size) != size or size < factor or size % factor:
        raise ValueError(f"size must be a positive multiple of {factor} pixels (the autoencoder's "
                         f"downsampling factor), got {size!r}")
    return int(size)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """First image of a pipeline's ``output_type="np"`` batch (float in [0, 1]) as uint8 (H, W, 3)."""
    return np.clip(np.rint(np.asarray(images[0], np.float32) * 255.0), 0, 255).astype(np.uint8)


def generate_image(pipe: Any, prompt: str, seed: int, size: int, *, steps: int = 25, guidance: float = 7.0,
                   negative_prompt: str | None = None) -> np.ndarray:
    """One ``size`` x ``size`` image for ``prompt``: uint8 (size, size, 3) RGB.

    ``seed`` (in [0, 2**64)) fixes the starting noise: the same pipeline, prompt, seed, size, ``steps``
    (denoising steps, default 25) and ``guidance`` (classifier-free guidance scale, default 7.0) give the
    same image. ``size`` must be a multiple of the pipeline's autoencoder factor (8 for Stable Diffusion).
    """
    import torch

    size = check_size(pipe, size)
    with torch.inference_mode():
        out = pipe(prompt, negative_prompt=negative_prompt, height=size, width=size, num_inference_steps=int(steps),
                   guidance_scale=float(guidance), generator=seeded_generator(seed), output_type="np")
    return to_uint8(out.images)


def edge_band(mask: np.ndarray, band_px: int) -> np.ndarray:
    """Bool (H, W): pixels within ``band_px`` pixels of the outline of ``mask`` (uint8, subject where
    >= 128), on either side: the mask dilated minus the mask eroded, with a disc of radius ``band_px``."""
    if band_px < 1:
        raise ValueError(f"band_px must be >= 1, got {band_px}")
    solid = (np.asarray(mask) >= 128).astype(np.uint8)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band_px + 1, 2 * band_px + 1))
    # BORDER_CONSTANT 0 for both: a subject touching the frame edge gets no band along the frame itself.
    grown = cv2.dilate(solid, disc, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    shrunk = cv2.erode(solid, disc, borderType=cv2.BORDER_REPLICATE)
    return (grown > 0) & (shrunk == 0)


def harmonise(pipe: Any, composite_rgb: np.ndarray, mask_uint8: np.ndarray, band_px: int, seed: int,
              prompt: str, *, steps: int = 25, guidance: float = 7.0, strength: float = 1.0) -> np.ndarray:
    """``composite_rgb`` (uint8 (H, W, 3)) with only the band of ``band_px`` pixels around the outline of
    ``mask_uint8`` (uint8 (H, W), subject >= 128) repainted by the inpainting ``pipe``; every pixel outside
    the band is returned unchanged, bit for bit.

    The pipeline runs at the composite's size rounded up to its autoencoder factor and its output is
    resized back; ``seed`` fixes the noise as in ``generate_image``. ``strength`` in (0, 1]: how much
    the band is re-noised (1 = repainted from noise, guided by the unmasked context). An empty band
    (no subject, or a subject filling the frame) returns an unchanged copy without running the model.
    """
    import torch

    rgb = np.asarray(composite_rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"composite_rgb: expected uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if np.shape(mask_uint8) != rgb.shape[:2]:
        raise ValueError(f"mask_uint8 shape {np.shape(mask_uint8)} does not match the composite's {rgb.shape[:2]}")
    band = edge_band(mask_uint8, band_px)
    out = rgb.copy()
    if not band.any():
        return out
    h, w = band.shape
    factor = int(pipe.vae_scale_factor)
    ph, pw = -(-h // factor) * factor, -(-w // factor) * factor
    with torch.inference_mode():
        res = pipe(prompt, image=Image.fromarray(rgb), mask_image=Image.fromarray(band.astype(np.uint8) * 255),
                   height=ph, width=pw, num_inference_steps=int(steps), guidance_scale=float(guidance),
                   strength=float(strength), generator=seeded_generator(seed), output_type="np")
    painted = to_uint8(res.images)
    if painted.shape[:2] != (h, w):
        painted = cv2.resize(painted, (w, h), interpolation=cv2.INTER_AREA)
    out[band] = painted[band]
    return out

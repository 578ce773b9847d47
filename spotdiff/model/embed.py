"""CLIP image features: one batched embedding function shared by QA and training.

``ImageEncoder.from_config(EmbedConfig)`` builds a ``CLIPVisionModelWithProjection`` (transformers)
and its preprocessing; ``encoder.embed(images)`` turns uint8 RGB arrays into L2-normalised
float32 embeddings, ``encoder.embed_tokens(images)`` into the encoder's last hidden state.

Two backends, picked by ``embed.backend``:

- ``embedded``: CLIP's vision architecture at small size (``embed.embedded``), weights drawn
  from ``embed.embedded.seed``. Needs no file; the same seed gives the same weights and
  embeddings on every run. Random features: fine for plumbing, caching and speed checks,
  not a semantic similarity.
- ``clip``: a trained checkpoint from ``embed.model``, a local folder (``save_pretrained`` or
  ``hf download --local-dir`` layout) or a hub id already in the local Hugging Face cache.
  Full ``CLIPModel`` checkpoints (e.g. openai/clip-vit-base-patch32) load too; their text
  tower is ignored. Weights are never downloaded: anything missing fails at once with a
  ConfigError that says how to provide them.

Preprocessing follows CLIP's: resize the shorter side (PIL bicubic), centre-crop to a square,
scale to [0, 1], normalise with the CLIP mean/std. Crops are pixel-identical to OpenAI CLIP's and
transformers' PIL-backend processor (transformers 5's default, torchvision-backed
CLIPImageProcessor differs by one grey level on a few pixels). A checkpoint's
preprocessor_config.json, when present, supplies the resize and crop sizes and mean/std; its
``do_*`` switches are not read (CLIP checkpoints all switch every step on).

``encoder.identity`` names the backbone exactly (backend, model, config, weights, preprocessing
digests), so feature caches can be keyed on it. It does not include the device: fp16 features
from a GPU and fp32 features from a CPU share one identity (they differ only by fp16 rounding).

torch and transformers are imported only when an encoder is built: importing this module
(for ``EmbedConfig``) stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from spotdiff.config import ConfigError, EmbedConfig
from spotdiff.common.weights import locate_folder, resolve_device as _resolve_device

if TYPE_CHECKING:
    import torch
    from transformers import CLIPVisionModelWithProjection

PARAMS_KEY = "embed"
"""Where ``EmbedConfig`` lives in params.yaml; error messages name keys under it."""
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
"""Per-channel RGB mean of CLIP's training images, on the [0, 1] scale."""
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""Per-channel RGB standard deviation of CLIP's training images, on the [0, 1] scale."""
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
"""Any one of these in a model folder means it holds weights transformers can load."""
HOW_TO_GET_WEIGHTS = (
    "weights are never downloaded here. On a machine with network, run "
    "`hf download openai/clip-vit-base-patch32 --local-dir DIR` (older huggingface_hub: "
    "`huggingface-cli download openai/clip-vit-base-patch32 --local-dir DIR`), or "
    "`CLIPVisionModelWithProjection.from_pretrained('openai/clip-vit-base-patch32').save_pretrained(DIR)`; "
    f"copy DIR here and set {PARAMS_KEY}.model to its path"
)


def _config_error(message: str) -> Exception:
    return ConfigError(message)


def _first_line(err: BaseException, limit: int = 200) -> str:
    """``Type: message`` cut to its first line (transformers' messages run to paragraphs)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:limit]}"


def _digest(*parts: bytes | str) -> str:
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()


@dataclass(frozen=True)
class Preprocess:
    """How a photo becomes model input: CLIP-style resize, centre crop and normalisation."""

    resize_to: int
    """The shorter side is resized (PIL bicubic) to this many pixels, keeping the aspect ratio."""
    crop: int
    """Side of the centred square cut from the resized photo, pixels (<= ``resize_to``)."""
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) -> uint8 (crop, crop, 3)."""
        h, w = rgb.shape[:2]
        # Long side truncated, as CLIP's own image processor does, so crops match it pixel for pixel.
        if h <= w:
            size = (max(self.resize_to, int(self.resize_to * w / h)), self.resize_to)
        else:
            size = (self.resize_to, max(self.resize_to, int(self.resize_to * h / w)))
        img = Image.fromarray(rgb)
        if img.size != size:
            img = img.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        return np.asarray(img.crop((left, top, left + self.crop, top + self.crop)))

    def describe(self) -> str:
        return f"shorter={self.resize_to} crop={self.crop} bicubic mean={list(self.mean)} std={list(self.std)}"


def _import_transformers() -> Any:
    # Offline before transformers/huggingface_hub first read their settings; every load below also
    # passes local_files_only, so no network is touched even if the caller set HF_HUB_OFFLINE=0.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    return transformers


def resolve_device(device: str) -> str:
    """``embed.device`` resolved: see ``spotdiff.common.weights.resolve_device``."""
    return _resolve_device(device, f"{PARAMS_KEY}.device")


# --------------------------------------------------------------------------- backend: embedded


def _build_embedded(cfg: EmbedConfig) -> tuple[CLIPVisionModelWithProjection, str, Preprocess]:
    """The seeded small model, its identity source (``seed=N``) and CLIP preprocessing at ``image_size``."""
    import torch

    tf = _import_transformers()
    e = cfg.embedded
    config = tf.CLIPVisionConfig(
        hidden_size=e.hidden_size, num_hidden_layers=e.num_hidden_layers,
        num_attention_heads=e.num_attention_heads, intermediate_size=e.intermediate_size,
        patch_size=e.patch_size, projection_dim=e.projection_dim, image_size=cfg.image_size,
    )
    # fork_rng: seed the weights without disturbing the caller's global torch RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(e.seed)
        model = tf.CLIPVisionModelWithProjection(config)
    if e.weights is None:
        return model, f"seed={e.seed}", Preprocess(cfg.image_size, cfg.image_size)
    _load_pretrained(model, e.weights, cfg)
    # No path in the source: the weights digest names the file's content, wherever it lies.
    return model, f"seed={e.seed}+pretrained", Preprocess(cfg.image_size, cfg.image_size)


def _load_pretrained(model: Any, weights: str, cfg: EmbedConfig) -> None:
    """Load ``embed.embedded.weights`` (a pretrain stage's ``backbone.safetensors``) into ``model``; ConfigError
    naming the path and the key when it is missing, unreadable or for another architecture."""
    from safetensors import safe_open

    key = f"{PARAMS_KEY}.embedded.weights"
    path = Path(weights)
    if not path.is_file():
        raise _config_error(f"{key} = {weights!r}: no such file ({path.absolute()}); run the opt-in pretrain "
                            f"stage (`spotdiff pretrain` writes data/pretrain/backbone.safetensors) or set {key}: null for the seeded "
                            f"random backbone")
    try:
        with safe_open(str(path), framework="pt") as fh:
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # noqa: BLE001 -- safetensors' errors are not one type
        raise _config_error(f"{key} = {weights!r}: unreadable safetensors file ({_first_line(err)})") from err
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise _config_error(f"{key} = {weights!r}: its weights do not fit {PARAMS_KEY}.embedded's architecture "
                            f"at {PARAMS_KEY}.image_size {cfg.image_size} ({_first_line(err)}); pretrain again "
                            f"with these embed params") from err


# --------------------------------------------------------------------------- backend: clip


def _locate(value: str) -> tuple[Path, str]:
    """Folder holding the ``embed.model`` checkpoint, and the identity source naming it (the folder as
    ``spotdiff.common.paths.portable`` records it, or ``hub_id@commit`` for a cached hub model; the
    identity's config and weights digests make it exact)."""
    key = f"{PARAMS_KEY}.model"
    folder, source = locate_folder(value, key, "a model folder (config.json + weights)", HOW_TO_GET_WEIGHTS)
    lacking = [f for f in ("config.json",) if not (folder / f).is_file()]
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        lacking.append("weights (model.safetensors or pytorch_model.bin)")
    if lacking:
        raise _config_error(f"{key} = {value!r}: {folder} has no {' and no '.join(lacking)}; {HOW_TO_GET_WEIGHTS}")
    return folder, source


def _vision_config(folder: Path, value: str) -> Any:
    """The CLIPVisionConfig in ``folder``: its own, or the vision part of a full CLIP config, with the
    top-level ``projection_dim`` carried over (CLIPConfig keeps it outside ``vision_config``)."""
    tf = _import_transformers()
    key = f"{PARAMS_KEY}.model"
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        if model_type == "clip_vision_model":
            return tf.CLIPVisionConfig.from_pretrained(folder, local_files_only=True)
        if model_type == "clip":
            full = tf.CLIPConfig.from_pretrained(folder, local_files_only=True)
            vision = full.vision_config
            vision.projection_dim = full.projection_dim
            return vision
    except Exception as err:  # noqa: BLE001 -- bad JSON, a non-mapping, strict-config type errors, ...
        raise _config_error(f"{key} = {value!r}: unreadable config.json in {folder} ({_first_line(err)})") from err
    raise _config_error(f"{key} = {value!r}: model_type {model_type!r} is not a CLIP model "
                        f"(expected 'clip' or 'clip_vision_model')")


def _preprocess_from(folder: Path, image_size: int, value: str) -> Preprocess:
    """The checkpoint's preprocessor config when it has one, else CLIP's at the model's input size."""
    if not (folder / "preprocessor_config.json").is_file():
        return Preprocess(image_size, image_size)
    tf = _import_transformers()
    proc = tf.CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    crop = proc.crop_size.height
    if crop != proc.crop_size.width or crop != image_size:
        raise _config_error(f"{PARAMS_KEY}.model = {value!r}: preprocessor crop {proc.crop_size.height}x"
                            f"{proc.crop_size.width} does not match the model's {image_size}x{image_size} input")
    resize_to = proc.size.shortest_edge or crop
    return Preprocess(max(resize_to, crop), crop, tuple(proc.image_mean), tuple(proc.image_std))


def _load_clip(cfg: EmbedConfig) -> tuple[CLIPVisionModelWithProjection, str, Preprocess]:
    """The checkpoint named by ``embed.model``, its identity source and its preprocessing.

    Raises ConfigError for a missing folder or cache entry, a folder without weights, a
    non-CLIP model, or a checkpoint lacking any vision weight (transformers would fill
    those with random values and every embedding would be meaningless).
    """
    import torch

    tf = _import_transformers()
    assert cfg.model is not None  # EmbedConfig guarantees it for backend clip
    folder, source = _locate(cfg.model)
    config = _vision_config(folder, cfg.model)
    verbosity = tf.logging.get_verbosity()
    # A CLIPModel checkpoint makes transformers log every text-tower weight as unexpected (hundreds
    # of lines); missing vision weights, the only ones that matter, are checked below.
    tf.logging.set_verbosity_error()
    try:
        # dtype fixed to fp32: transformers otherwise keeps the checkpoint's dtype (often fp16).
        model, info = tf.CLIPVisionModelWithProjection.from_pretrained(
            folder, config=config, local_files_only=True, dtype=torch.float32, output_loading_info=True)
    except Exception as err:  # noqa: BLE001 -- OSError, RuntimeError (shape mismatch), safetensors errors, ...
        raise _config_error(f"{PARAMS_KEY}.model = {cfg.model!r}: cannot load a CLIP vision model from "
                            f"{folder} ({_first_line(err)})") from err
    finally:
        tf.logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise _config_error(f"{PARAMS_KEY}.model = {cfg.model!r}: checkpoint lacks {len(missing)} vision "
                            f"weight(s), e.g. {missing[:3]}; it must be a CLIPModel or "
                            f"CLIPVisionModelWithProjection checkpoint")
    return model, source, _preprocess_from(folder, int(config.image_size), cfg.model)


_BACKENDS: dict[str, Callable[[EmbedConfig], tuple[Any, str, Preprocess]]] = {
    "embedded": _build_embedded,
    "clip": _load_clip,
}


# --------------------------------------------------------------------------- encoder


def _config_digest(model: Any) -> str:
    """Digest of the architecture settings; bookkeeping keys (name, versions, dtype) left out."""
    skip = {"transformers_version", "dtype", "torch_dtype", "architectures"}
    arch = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_") and k not in skip}
    return _digest(json.dumps(arch, sort_keys=True, default=str))


def _weights_digest(model: Any) -> str:
    """Digest of every parameter's name, shape and fp32 bytes: catches a changed checkpoint file or a
    torch/transformers release that initialises the seeded model differently."""
    h = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.numpy())  # the array's buffer, hashed without a copy
    return h.hexdigest()


class ImageEncoder:
    """A CLIP vision tower with projection, plus its preprocessing; build with ``from_config``."""

    def __init__(self, model: CLIPVisionModelWithProjection, preprocess: Preprocess, *,
                 identity: str, device: str = "cpu", batch_size: int = 32):
        import torch

        self.device = device
        # fp16 on CUDA: tensor cores and half the memory, at the cost of fp16 rounding in the features;
        # CPUs run fp16 slowly, so fp32 there.
        self.dtype = torch.float16 if device == "cuda" else torch.float32
        self.model = model.to(device=device, dtype=self.dtype).eval()
        self.preprocess = preprocess
        self.batch_size = batch_size
        self._identity = identity
        self._mean = torch.tensor(preprocess.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(preprocess.std, device=device).view(1, 3, 1, 1)

    @classmethod
    def from_config(cls, cfg: EmbedConfig) -> "ImageEncoder":
        """Build the ``cfg.backend`` model on ``cfg.device``. Raises ConfigError for missing weights
        or an unusable device, before any image is processed."""
        device = resolve_device(cfg.device)
        model, source, preprocess = _BACKENDS[cfg.backend](cfg)
        if "image_size" in cfg.model_fields_set and cfg.image_size != preprocess.crop:
            raise _config_error(f"{PARAMS_KEY}.image_size = {cfg.image_size}: model {cfg.model!r} takes "
                                f"{preprocess.crop} px input; remove {PARAMS_KEY}.image_size or set it to "
                                f"{preprocess.crop}")
        # Digests are taken here, on the fp32 CPU weights, so the identity is the same on every device.
        identity = (f"{cfg.backend}:{source}:config={_config_digest(model)}:weights={_weights_digest(model)}"
                    f":preprocess={_digest(preprocess.describe())}")
        return cls(model, preprocess, identity=identity, device=device, batch_size=cfg.batch_size)

    def fine_tuned(self, state_dict: dict[str, Any]) -> "ImageEncoder":
        """A copy of this encoder with ``state_dict`` loaded into its model (a backbone trained with
        ``train.backbone_trainable``); its identity names the new weights, so caches and checks tell it apart."""
        import copy

        model = copy.deepcopy(self.model).float().cpu()
        model.load_state_dict(state_dict)
        base = self._identity.split(":weights=")[0]
        preprocess = self._identity.split(":preprocess=")[1]
        identity = f"{base}:weights={_weights_digest(model)}:fine_tuned:preprocess={preprocess}"
        return ImageEncoder(model, self.preprocess, identity=identity, device=self.device, batch_size=self.batch_size)

    def normalise(self, crops: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Already preprocessed uint8 crops (N, S, S, 3) -> model input, like ``pixel_values``."""
        import torch

        x = crops if torch.is_tensor(crops) else torch.from_numpy(np.ascontiguousarray(crops))
        x = x.to(self.device).permute(0, 3, 1, 2).float()
        return ((x / 255.0 - self._mean) / self._std).to(self.dtype)

    @property
    def identity(self) -> str:
        """Names the backbone exactly: ``backend:source:config=..:weights=..:preprocess=..``, where source is
        ``seed=N`` (embedded), the absolute model folder, or ``hub_id@commit`` (cached hub model)."""
        return self._identity

    @property
    def dim(self) -> int:
        """Length of one ``embed`` vector (the projection dimension)."""
        return int(self.model.config.projection_dim)

    @property
    def image_size(self) -> int:
        """Side of the square model input, pixels."""
        return self.preprocess.crop

    def pixel_values(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Model input for ``images``: float (N, 3, S, S) on the encoder's device and dtype."""
        import torch

        crops = np.stack([self.preprocess(_check_image(i, im)) for i, im in enumerate(images)])
        x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float()
        # Normalise in fp32, then cast: fp16 keeps the result, not the arithmetic, small.
        return ((x / 255.0 - self._mean) / self._std).to(self.dtype)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised ``image_embeds`` (projected, post-layernorm class token) of uint8 (H, W, 3) RGB
        ``images``, as float32 (N, dim); computed ``batch_size`` images at a time."""
        import torch.nn.functional as F

        return self._run(images, lambda out: F.normalize(out.image_embeds.float(), dim=-1), (self.dim,))

    def embed_tokens(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The encoder's last hidden state (class token first, then patches in row-major order; before
        the final layernorm), float32 (N, 1 + (S / patch)^2, hidden_size)."""
        tokens = int(self.model.vision_model.embeddings.num_positions)
        return self._run(images, lambda out: out.last_hidden_state.float(), (tokens, self.model.config.hidden_size))

    GRID = 8
    """``features`` pools the patch tokens to a GRID x GRID layout. 8, not 4: a 4x4 cell spans a quarter
    of the image, so even the central cells mix the subject with its background; on the demo, raw
    retrieval across a background change from the central cells alone rose from 0.21 (4x4) to 0.36
    (central 4x4 of 8x8), which is what the subject head (``train.subject_window``) reads."""

    @property
    def feature_dim(self) -> int:
        """Length of one ``features`` vector: projection dim + GRID^2 x hidden size."""
        return self.dim + self.GRID * self.GRID * int(self.model.config.hidden_size)

    def features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Backbone features for training and evaluation, float32 (N, ``feature_dim``): the L2-normalised
        ``image_embeds`` (what IP-Adapter-style encoders use) followed by the patch tokens after the final
        layernorm, average-pooled to a GRID x GRID layout (row-major) and L2-normalised as a whole. The
        pooled grid keeps *where* things are (subject in the middle, background around it), which the
        class token compresses away and which the experts and the subject head need to tell them apart.
        One forward pass."""
        return self._run(images, self.features_from_output, (self.feature_dim,))

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``features`` of model input (from ``pixel_values``) as a tensor, with gradients when the model
        is being trained (``train.backbone_trainable``)."""
        return self.features_from_output(self.model(pixel_values=pixel_values))

    def features_from_output(self, out: Any) -> torch.Tensor:
        """``features`` computed from one forward pass's model output."""
        import torch
        import torch.nn.functional as F

        tokens = self.model.vision_model.post_layernorm(out.last_hidden_state[:, 1:])
        side = int(round(tokens.shape[1] ** 0.5))  # from the tokens: pretrain runs smaller inputs
        n, _, c = tokens.shape
        grid = F.adaptive_avg_pool2d(tokens.transpose(1, 2).reshape(n, c, side, side), self.GRID)
        grid = grid.permute(0, 2, 3, 1).reshape(n, -1)
        return torch.cat([F.normalize(out.image_embeds.float(), dim=-1), F.normalize(grid.float(), dim=-1)], dim=-1)

    def _run(self, images: Sequence[np.ndarray], pick: Callable[[Any], torch.Tensor],
             shape: tuple[int, ...]) -> np.ndarray:
        import torch

        for i, image in enumerate(images):  # all checked first: a bad image fails before any work
            _check_image(i, image)
        parts = []
        for start in range(0, len(images), self.batch_size):
            with torch.inference_mode():
                out = self.model(pixel_values=self.pixel_values(images[start:start + self.batch_size]))
                parts.append(pick(out).cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, *shape), np.float32)


def _check_image(index: int, image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 \
            or 0 in image.shape:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image {index}: expected a uint8 (H, W, 3) RGB array, got {desc}")
    return image

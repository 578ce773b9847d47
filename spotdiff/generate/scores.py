"""DreamBench-style scores of generated images: CLIP-I, DINO and CLIP-T, and the encoders they need.

Every score is a mean cosine similarity of embeddings: unitless, in [-1, 1], higher is closer.

- **CLIP-I** (subject fidelity): mean cosine between the CLIP image embeddings (projected, as
  ``ImageEncoder.embed`` gives them) of each generated image and each real photo of the same subject.
- **DINO** (subject fidelity, less forgiving of a merely similar object): the same with the CLS token of a
  self-supervised DINO ViT (DreamBench uses DINO ViT-S/16), after its final layer norm.
- **CLIP-T** (prompt fidelity): mean cosine between each generated image's CLIP image embedding and the CLIP
  text embedding of the prompt it was generated from.

DreamBench (Ruiz et al. 2023) averages over every subject, prompt and generated image; ``subject_scores``
gives one subject's numbers and ``macro`` their mean over subjects. Absolute values depend on the CLIP
variant (ViT-B/32 and ViT-L/14 give different scales): compare numbers scored with one checkpoint only.

The CLIP image side reuses ``spotdiff.model.embed.ImageEncoder`` (backend ``clip``); ``TextEncoder`` is its
text tower from the same folder, ``DinoEncoder`` a ViT from another. Weights come from a local folder or
the local Hugging Face cache (``spotdiff.common.weights.locate_folder``), never the network; a missing
folder is a ConfigError naming the ``key`` the caller gives. torch and transformers are imported only when
an encoder is built.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spotdiff.common.weights import locate_folder, resolve_device
from spotdiff.config import ConfigError
from spotdiff.model.embed import WEIGHT_FILES, Preprocess

ANCHORS = {"clip_i": 0.813, "dino": 0.667, "clip_t": 0.289}
"""IP-Adapter (SD 1.5) on DreamBench, as quoted in issue 18: the numbers to read ours against. They were
measured with 10M+ training images; an adapter trained on a few hundred synthetic groups is not expected
to reach them."""
DREAMBENCH_PROMPTS = (
    "a {} in the jungle", "a {} in the snow", "a {} on the beach", "a {} on a cobblestone street",
    "a {} on top of pink fabric", "a {} on top of a wooden floor", "a {} with a city in the background",
    "a {} with a mountain in the background", "a {} with a blue house in the background",
    "a {} on top of a purple rug in a forest",
)
"""DreamBench's prompts for object subjects (``{}``: the class noun), as data/photos/dreambench-dev/SOURCE.md
lists them. Live subjects (cat, dog) have prompts of their own in DreamBench; these are used for every subject."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""DINO's input normalisation (RGB on the [0, 1] scale), used when a folder has no preprocessor config."""
RELEASED_SIZES = {"clip": (768, 12), "dino": (384, 12)}
"""(hidden size, layers) of the smallest released checkpoint of each family (CLIP ViT-B, DINO ViT-S): a
smaller model is a test model, and its scores mean nothing."""


# --------------------------------------------------------------------------- scores on embeddings


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"expected a non-empty (N, D) array of embeddings, got shape {x.shape}")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.all(np.isfinite(x)) or np.any(norm == 0):
        raise ValueError("embeddings must be finite and non-zero")
    return x / norm


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) cosine similarities between the rows of ``a`` (N, D) and ``b`` (M, D); in [-1, 1]."""
    return np.clip(_unit(a) @ _unit(b).T, -1.0, 1.0)


def mean_pairwise(generated: np.ndarray, real: np.ndarray) -> float:
    """CLIP-I / DINO of one subject: mean cosine over every (generated, real) pair; in [-1, 1]."""
    return float(cosine(generated, real).mean())


def mean_matched(images: np.ndarray, texts: np.ndarray) -> float:
    """CLIP-T: mean cosine of row i of ``images`` with row i of ``texts`` (each image with its own prompt);
    in [-1, 1]."""
    if np.shape(images)[0] != np.shape(texts)[0]:
        raise ValueError(f"{np.shape(images)[0]} images for {np.shape(texts)[0]} prompts")
    return float(np.clip(np.sum(_unit(images) * _unit(texts), axis=1), -1.0, 1.0).mean())


def mean_within(real: np.ndarray) -> float | None:
    """Mean cosine between distinct real photos of one subject (what a perfect copy of another photo of it
    would score); None with fewer than two photos."""
    n = np.shape(real)[0]
    if n < 2:
        return None
    c = cosine(real, real)
    return float((c.sum() - np.trace(c)) / (n * (n - 1)))


def macro(values: Sequence[float | None]) -> float | None:
    """Mean over subjects of the per-subject scores that exist (None when none does)."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def zero_shot_top1(image_embeds: np.ndarray, labels: Sequence[str], class_embeds: dict[str, np.ndarray]) -> float:
    """Share of images whose nearest class text embedding (``class_embeds``: class -> (D,)) is their own
    label: a check that CLIP weights are trained (random weights score about 1 / number of classes)."""
    names = sorted(class_embeds)
    sims = cosine(image_embeds, np.stack([class_embeds[n] for n in names]))
    return float(np.mean([names[i] == lab for i, lab in zip(sims.argmax(axis=1), labels)]))


# --------------------------------------------------------------------------- encoders


def _first_line(err: BaseException, limit: int = 200) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:limit]}"


def model_folder(value: str, key: str, how_to_get: str) -> Path:
    """The folder named by ``value`` with a config.json and weights; ConfigError naming ``key`` otherwise."""
    folder, _ = locate_folder(value, key, "a model folder (config.json + weights)", how_to_get)
    if not (folder / "config.json").is_file() or not any((folder / f).is_file() for f in WEIGHT_FILES):
        raise ConfigError(f"{key} = {value!r}: {folder} has no config.json and weights; {how_to_get}")
    return folder


def _load(cls: Any, folder: Path, value: str, key: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` in fp32 from local files only; ConfigError naming ``key`` when it fails or
    when the checkpoint lacks weights the model needs (they would be random)."""
    import torch
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # a full CLIP checkpoint lists the other tower as unexpected
    try:
        model, info = cls.from_pretrained(folder, local_files_only=True, dtype=torch.float32,
                                          output_loading_info=True, **kwargs)
    except Exception as err:  # noqa: BLE001 -- OSError, shape mismatches, safetensors errors, ...
        raise ConfigError(f"{key} = {value!r}: cannot load a {cls.__name__} from {folder} ({_first_line(err)})") from err
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise ConfigError(f"{key} = {value!r}: checkpoint lacks {len(missing)} weight(s) of a {cls.__name__}, "
                          f"e.g. {missing[:3]}")
    return model.eval()


CLIP_HOW_TO = ("weights are never downloaded here; on a machine with network: `hf download openai/clip-vit-base-patch32 "
               "--local-dir DIR` (a full CLIP checkpoint: the text tower is needed for CLIP-T), then copy DIR here")
DINO_HOW_TO = ("weights are never downloaded here; on a machine with network: `hf download facebook/dino-vits16 "
               "--local-dir DIR`, then copy DIR here")


class TextEncoder:
    """The CLIP text tower with projection and tokenizer of a full CLIP checkpoint folder."""

    def __init__(self, model: Any, tokenizer: Any, device: str, hidden_size: int, layers: int):
        self.model, self.tokenizer, self.device = model.to(device), tokenizer, device
        self.hidden_size, self.layers = hidden_size, layers

    @classmethod
    def from_folder(cls, value: str, key: str, device: str = "auto") -> "TextEncoder":
        """ConfigError naming ``key`` when the folder is missing, is not a full CLIP checkpoint (a vision-only
        one has no text tower) or has no tokenizer."""
        import transformers

        folder = model_folder(value, key, CLIP_HOW_TO)
        try:
            config = json.loads((folder / "config.json").read_text())
        except ValueError as err:
            raise ConfigError(f"{key} = {value!r}: unreadable config.json in {folder} ({_first_line(err)})") from err
        if config.get("model_type") != "clip":
            raise ConfigError(f"{key} = {value!r}: model_type {config.get('model_type')!r} has no text tower; CLIP-T "
                              f"needs a full CLIP checkpoint (model_type 'clip'); {CLIP_HOW_TO}")
        full = transformers.CLIPConfig.from_pretrained(folder, local_files_only=True)
        text = full.text_config
        text.projection_dim = full.projection_dim  # CLIPConfig keeps it outside text_config
        model = _load(transformers.CLIPTextModelWithProjection, folder, value, key, config=text)
        try:
            tokenizer = transformers.CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        except Exception as err:  # noqa: BLE001 -- missing vocab/merges/tokenizer.json
            raise ConfigError(f"{key} = {value!r}: no CLIP tokenizer in {folder} ({_first_line(err)}); "
                              f"{CLIP_HOW_TO}") from err
        dev = resolve_device(device, key)
        return cls(model, tokenizer, dev, int(text.hidden_size), int(text.num_hidden_layers))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised ``text_embeds`` of ``texts``, float32 (N, projection dim)."""
        import torch

        batch = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).text_embeds
        return _unit(out.float().cpu().numpy()).astype(np.float32)


class DinoEncoder:
    """A DINO ViT (transformers ``ViTModel``): CLS token after the final layer norm, L2-normalised.

    Input as DreamBench prepares it: shorter side resized to 256/224 of the model's input size (bicubic), a
    centred square crop of the input size, normalised with the folder's preprocessor mean/std (ImageNet's
    when it has none)."""

    def __init__(self, model: Any, preprocess: Preprocess, device: str, batch_size: int = 32):
        import torch

        self.model, self.preprocess, self.device, self.batch_size = model.to(device), preprocess, device, batch_size
        self._mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(preprocess.std).view(1, 3, 1, 1)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @classmethod
    def from_folder(cls, value: str, key: str, device: str = "auto") -> "DinoEncoder":
        import transformers

        folder = model_folder(value, key, DINO_HOW_TO)
        model = _load(transformers.ViTModel, folder, value, key, add_pooling_layer=False)
        size = int(model.config.image_size)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        proc = folder / "preprocessor_config.json"
        if proc.is_file():
            cfg = json.loads(proc.read_text())
            mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
        return cls(model, Preprocess(round(size * 256 / 224), size, mean, std), resolve_device(device, key))

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised CLS features of uint8 (H, W, 3) RGB ``images``, float32 (N, hidden size)."""
        import torch

        parts = []
        for start in range(0, len(images), self.batch_size):
            crops = np.stack([self.preprocess(im) for im in images[start:start + self.batch_size]])
            x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0 - self._mean) / self._std
            with torch.inference_mode():
                out = self.model(pixel_values=x.to(self.device)).last_hidden_state[:, 0]
            parts.append(out.float().cpu().numpy())
        return _unit(np.concatenate(parts)).astype(np.float32)


def is_tiny(family: str, hidden_size: int, layers: int) -> bool:
    """Whether a model of ``family`` ('clip' vision tower, 'dino') is smaller than any released checkpoint."""
    hidden, depth = RELEASED_SIZES[family]
    return hidden_size < hidden or layers < depth

"""A train output folder as models: the exported subject encoder, its backbone, and its identity.

Shared by train (writes it), evaluate (reads it) and reference generation (encodes a photo with it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from spotdiff.config import EmbedConfig
from spotdiff.model import cache, checkpoint
from spotdiff.model.encoder import SpotDiffEncoder
from spotdiff.errors import InputError, MissingInputError


def export_model(path: str | Path, model: SpotDiffEncoder, backbone_identity: str, embed: EmbedConfig) -> None:
    """The trained encoder alone (no optimiser state): safetensors weights, with the constructor
    arguments and backbone in the metadata so ``load_model`` rebuilds it without other files."""
    checkpoint.save(path, model=model.state_dict(),
                    meta={"encoder": model.config(), "backbone_identity": backbone_identity,
                          "embed": embed.model_dump(), "feature_version": cache.FEATURE_VERSION})


def load_trained(model_dir: str | Path, embed: EmbedConfig) -> tuple[SpotDiffEncoder, Any]:
    """(heads, backbone encoder) of a train output: the ``embed`` backbone, with the fine-tuned weights of
    ``backbone.safetensors`` when the backbone was trained. Raises ValueError when ``embed`` does not give
    the backbone the heads were trained on."""
    from spotdiff.model.embed import ImageEncoder

    model_dir = Path(model_dir)
    heads, meta = load_model(model_dir / "model.safetensors")
    encoder = ImageEncoder.from_config(embed)
    if (model_dir / "backbone.safetensors").is_file():
        weights, _, _ = checkpoint.load(model_dir / "backbone.safetensors")
        encoder = encoder.fine_tuned(weights)
    if meta.get("backbone_identity") != encoder.identity:
        raise InputError(f"{model_dir}: the model was trained on backbone {meta.get('backbone_identity')!r}, but "
                         f"params `embed` gives {encoder.identity!r}; retrain or restore the embed params")
    return heads, encoder


def load_model(path: str | Path) -> tuple[SpotDiffEncoder, dict[str, Any]]:
    """(encoder in eval mode, metadata) from ``export_model``'s file."""
    weights, _, meta = checkpoint.load(path)
    if "encoder" not in meta:
        raise InputError(f"{path}: not a SpotDiff encoder export (no 'encoder' metadata)")
    model = SpotDiffEncoder(**meta["encoder"])
    model.load_state_dict(weights)
    return model.eval(), meta



HEADS_MARK = "|heads=sha256:"
"""Separates the backbone identity from the heads' digest in ``subject_encoder_identity``."""


def subject_encoder_identity(model_dir: str | Path, backbone_identity: str) -> str:
    """Names a trained subject encoder exactly: ``backbone_identity`` + ``HEADS_MARK`` + the sha256 of
    ``model_dir/model.safetensors`` (written deterministically, so the same weights give the same digest).
    Stage 2 records it as the adapter's ``backbone`` metadata; ``subject_encoder(..., adapter=)`` checks it."""
    import hashlib

    digest = hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()
    return f"{backbone_identity}{HEADS_MARK}{digest}"


def subject_encoder(model_dir: str | Path, embed: Any, *,
                    adapter: str | Path | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """``photo -> subject feature (D,)`` from a train output folder (``load_trained``: the
    trained heads on the ``embed`` backbone, fine-tuned weights included); refuses another backbone.

    With ``adapter`` (an ``export_ip_adapter`` file) also checks that the adapter was trained on this very
    encoder, before the photo is encoded: FileNotFoundError naming the adapter when it is missing (checked
    before any model is loaded), ValueError when it was trained on another backbone or on other heads (a
    stale adapter beside a retrained ``model.safetensors``). Adapters written before the heads digest was
    recorded are checked on the backbone only. FileNotFoundError naming ``model.safetensors`` when the
    folder holds no trained encoder."""
    import torch

    from spotdiff.model.adapter import read_adapter_meta

    model_dir = Path(model_dir)
    meta = read_adapter_meta(adapter) if adapter is not None else None
    if not (model_dir / "model.safetensors").is_file():
        raise MissingInputError(f"{model_dir / 'model.safetensors'} not found: no trained subject encoder in "
                                f"{model_dir} (run `spotdiff train --out {model_dir}`)")
    model, encoder = load_trained(model_dir, embed)
    if meta is not None:
        backbone, mark, _ = meta.backbone.rpartition(HEADS_MARK)
        backbone = backbone if mark else meta.backbone
        if backbone != encoder.identity:
            raise InputError(f"adapter {adapter} was trained on backbone {backbone!r}, but {model_dir} with params "
                             f"`embed` gives {encoder.identity!r}; use the adapter trained with this model")
        if mark and meta.backbone != subject_encoder_identity(model_dir, encoder.identity):
            raise InputError(f"adapter {adapter} was trained with other subject-encoder heads than "
                             f"{model_dir / 'model.safetensors'} (a stale adapter from an earlier run?); rerun "
                             "stage 2 (train.stage2.model) on this model")

    def encode(rgb: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(encoder.features([rgb])))["subject"][0].numpy()

    return encode

"""A DreamBench-style generation check: images of each reference subject with the trained adapter, scored.

For every subject folder of a photo folder (``<photos>/<subject>/*.jpg``, class nouns from ``classes.csv``,
else the folder name), the first photo (sorted by name) is the reference: its subject feature conditions
Stable Diffusion through the exported adapter (``reference.reference_pipeline``, loaded once) for each
prompt (``a {class} on the beach``, ...) and ``n_images`` seeds. The same seeds and prompts are also drawn
with the adapter at scale 0 (text only), so the adapter's effect is a paired difference.

Scores (``spotdiff.generate.scores``; cosines, unitless, in [-1, 1]): CLIP-I and DINO of the generated images
against **every** real photo of the subject (reference included, as DreamBench compares with all real
images), CLIP-T of each image against its own prompt. ``real`` is what distinct real photos of one subject
score against each other: a copy of another photo of the subject would reach it. Each score is the mean
over subjects of the per-subject means.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from spotdiff.common.images import BadInput, load_photo
from spotdiff.errors import InputError
from spotdiff.generate import scores

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MAX_PIXELS = 40_000_000
"""Largest photo accepted, pixels (bigger headers are treated as decompression bombs)."""
ZERO_SHOT_TEMPLATE = "a photo of a {}"
"""Class prompt of the CLIP weights check (``weights_check``)."""
TRAINED_CLIP_MIN_TOP1 = 0.5
"""Zero-shot top-1 below which CLIP weights are reported as untrained. A guess, not measured here: trained
CLIP should name DreamBench's eight everyday classes nearly always; random weights score about 1/8."""


@dataclass(frozen=True)
class Subject:
    name: str
    """Folder name."""
    cls: str
    """Class noun the prompts use."""
    images: tuple[np.ndarray, ...]
    """Its real photos, uint8 (H, W, 3) RGB, in file-name order; the first is the reference."""


def read_subjects(folder: str | Path, limit: int | None = None) -> list[Subject]:
    """The subjects of ``folder`` with at least one readable photo, sorted by name (the first ``limit``).
    InputError naming the folder when it is missing or holds no photos."""
    from spotdiff.generate.sources.photos import read_classes

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"photo folder {root} not found (--photos): expected a subfolder of photos per subject")
    classes = read_classes(root)
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        images = []
        for path in sorted(sub.iterdir()):
            if path.is_file() and path.suffix.lower() in PHOTO_SUFFIXES:
                try:
                    images.append(load_photo(path, MAX_PIXELS).rgb)
                except BadInput:
                    continue  # an unreadable file is not a photo of the subject
        if images:
            out.append(Subject(sub.name, classes.get(sub.name, sub.name.replace("_", " ")), tuple(images)))
    if not out:
        raise InputError(f"photo folder {root} holds no photos in subject subfolders ({', '.join(PHOTO_SUFFIXES)})")
    return out[:limit] if limit else out


@dataclass
class Scorers:
    """The encoders the scores need: CLIP image (``ImageEncoder``), CLIP text (``scores.TextEncoder``),
    DINO (``scores.DinoEncoder``, or None: DINO is then not measured)."""

    clip_image: Any
    clip_text: Any
    dino: Any | None = None


def weights_check(subjects: Sequence[Subject], scorers: Scorers) -> dict[str, Any]:
    """Whether the CLIP weights are trained: zero-shot top-1 of every real photo among the subjects' class
    nouns (``ZERO_SHOT_TEMPLATE``), with its chance rate (1 / classes) and ``trained`` (top-1 at least
    ``TRAINED_CLIP_MIN_TOP1``)."""
    names = sorted({s.cls for s in subjects})
    text = scorers.clip_text.embed([ZERO_SHOT_TEMPLATE.format(n) for n in names])
    images = [im for s in subjects for im in s.images]
    labels = [s.cls for s in subjects for _ in s.images]
    top1 = scores.zero_shot_top1(scorers.clip_image.embed(images), labels, dict(zip(names, text)))
    return {"clip_zero_shot_top1": round(top1, 4), "classes": len(names), "chance": round(1 / len(names), 4),
            "photos": len(images), "trained": bool(len(names) > 1 and top1 >= TRAINED_CLIP_MIN_TOP1),
            "rule": f"zero-shot top-1 >= {TRAINED_CLIP_MIN_TOP1} over '{ZERO_SHOT_TEMPLATE}' class prompts"}


def _score(images: list[np.ndarray], prompts: list[str], real_clip: np.ndarray, real_dino: np.ndarray | None,
           scorers: Scorers) -> dict[str, float | None]:
    clip = scorers.clip_image.embed(images)
    return {"clip_i": scores.mean_pairwise(clip, real_clip),
            "dino": None if real_dino is None else scores.mean_pairwise(scorers.dino.embed(images), real_dino),
            "clip_t": scores.mean_matched(clip, scorers.clip_text.embed(prompts))}


MODES = {"adapter": None, "text_only": 0.0}
"""Generation modes: the adapter at the requested scale, and at scale 0 (text only, same seeds)."""
METRICS = ("clip_i", "dino", "clip_t")


def run_check(subjects: Sequence[Subject], out_dir: str | Path, *, encode: Callable[[np.ndarray], np.ndarray],
              pipeline_model: str, adapter_path: str | Path, scorers: Scorers, prompts: Sequence[str],
              n_images: int = 4, seed: int = 0, steps: int = 50, guidance: float = 7.5, size: int = 512,
              scale: float = 1.0, device: str = "auto", text_only: bool = True,
              progress: bool = True) -> dict[str, Any]:
    """Generate and score (module docstring). ``prompts``: templates with ``{}`` for the class noun;
    ``encode``: photo -> subject feature (``spotdiff.model.trained.subject_encoder``); image i of a prompt
    uses seed ``seed + i``; other arguments as ``reference.generate_with_reference``. Writes
    ``out_dir/<subject>/<mode>-p<prompt>-seed<seed>.png``. Returns ``{"metrics": {metric: {mode: score,
    "real": score}}, "per_subject": {...}, "images": count}``; a metric not measured (DINO without a DINO
    model) is None."""
    from spotdiff.common.progress import progress_bar
    from spotdiff.generate.reference import generate_loaded, reference_pipeline

    if n_images < 1 or not prompts:
        raise InputError(f"need at least one image and one prompt, got n_images={n_images}, {len(prompts)} prompts")
    modes = {m: (scale if s is None else s) for m, s in MODES.items() if text_only or m == "adapter"}
    out = Path(out_dir)
    per_subject: dict[str, dict[str, Any]] = {}
    total = len(subjects) * len(prompts) * n_images * len(modes)
    bar = progress_bar(total, desc="dreambench", unit="image", enabled=progress)
    with reference_pipeline(pipeline_model, adapter_path, scale=scale, device=device) as (pipe, _):
        for subject in subjects:
            feat = np.asarray(encode(subject.images[0]), np.float32).reshape(-1)
            real_clip = scorers.clip_image.embed(list(subject.images))
            real_dino = None if scorers.dino is None else scorers.dino.embed(list(subject.images))
            folder = out / subject.name
            folder.mkdir(parents=True, exist_ok=True)
            row: dict[str, Any] = {"class": subject.cls, "photos": len(subject.images)}
            for mode, mode_scale in modes.items():
                pipe.set_ip_adapter_scale(float(mode_scale))
                images, texts = [], []
                for k, template in enumerate(prompts):
                    text = template.format(subject.cls)
                    for i in range(n_images):
                        img = generate_loaded(pipe, feat, text, seed=seed + i, steps=steps, guidance=guidance,
                                              size=size)
                        Image.fromarray(img).save(folder / f"{mode}-p{k}-seed{seed + i}.png")
                        images.append(img)
                        texts.append(text)
                        bar.update(1)
                row[mode] = _score(images, texts, real_clip, real_dino, scorers)
            row["real"] = {"clip_i": scores.mean_within(real_clip), "clip_t": None,
                           "dino": None if real_dino is None else scores.mean_within(real_dino)}
            per_subject[subject.name] = row
    bar.close()
    columns = [*modes, "real"]
    metrics = {m: {c: _round(scores.macro([per_subject[s][c][m] for s in per_subject])) for c in columns}
               for m in METRICS}
    for row in per_subject.values():
        for c in columns:
            row[c] = {m: _round(v) for m, v in row[c].items()}
    return {"metrics": metrics, "per_subject": per_subject, "images": total,
            "prompts": [p.format("{class}") for p in prompts], "seeds": [seed + i for i in range(n_images)],
            "scale": scale, "steps": steps, "guidance": guidance, "size": size}


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)

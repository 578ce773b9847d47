"""``diffusion`` source: subjects drawn by Stable Diffusion, plus diffusion scene backgrounds.

Each job's prompt is one of ``generate.diffusion.subject_templates`` filled with an attribute and
a class noun, all three drawn from the job's seed; the class noun is the group's class name. The
subject is generated on the plain backdrop the template asks for, segmented like any photo
(``generate.segment``; GrabCut works well on plain backdrops), cut into a layer and re-posed with
the ``affine`` variation (``photos.photo_layers``). Every group records prompt, image seed, model
identity, steps and guidance, so it can be regenerated.

``diffusion_background(cfg, seed, size)`` draws a scene from ``scene_prompts``; its id
``"diffusion:<prompt index>:<image seed>"`` regenerates it with ``make_diffusion_background``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from spotdiff.config import ConfigError, GenerateConfig
from spotdiff.common.diffusion import PARAMS_KEY, generate_image, load_pipeline
from spotdiff.config import DiffusionConfig
from spotdiff.common.images import Photo
from spotdiff.common.seeding import derive_seed
from spotdiff.generate.sources.registry import Job, SubjectLayers, register
from spotdiff.generate.sources.photos import photo_layers, slug

BACKGROUND_KIND = "diffusion"
"""Background kind name and the first field of its ids."""


def diffusion_config(cfg: GenerateConfig) -> DiffusionConfig:
    """The ``generate.diffusion`` section of ``cfg`` (defaults when the section is absent)."""
    return getattr(cfg, "diffusion", None) or DiffusionConfig()


def _section(cfg: DiffusionConfig | GenerateConfig) -> DiffusionConfig:
    return cfg if isinstance(cfg, DiffusionConfig) else diffusion_config(cfg)


@dataclass(frozen=True)
class SubjectPrompt:
    """What one job asks the model for."""

    template: int
    """Index into ``subject_templates``."""
    attribute: str
    cls: str
    prompt: str
    image_seed: int
    """Seeds the model's starting noise, in [0, 2**63)."""


def draw_prompt(dcfg: DiffusionConfig, job_seed: int) -> SubjectPrompt:
    """The prompt and image seed of the job with seed ``job_seed``; depends on nothing else."""
    rng = np.random.default_rng(derive_seed(job_seed, "diffusion-prompt"))
    t = int(rng.integers(len(dcfg.subject_templates)))
    attribute = dcfg.attributes[int(rng.integers(len(dcfg.attributes)))]
    cls = dcfg.classes[int(rng.integers(len(dcfg.classes)))]
    prompt = dcfg.subject_templates[t].format(attribute=attribute, cls=cls)
    return SubjectPrompt(t, attribute, cls, prompt, derive_seed(job_seed, "diffusion-image"))


def _prompt_digest(prompt: str) -> str:
    return hashlib.blake2b(prompt.encode(), digest_size=5).hexdigest()


@dataclass
class DiffusionSource:
    name: str = "diffusion"

    def plan(self, cfg: GenerateConfig, count: int, start: int) -> list[Job]:
        """``count`` jobs; each prompt is drawn from its job seed. The subject id names the (prompt,
        image seed) pair, which fixes the picture for a given model: one group per generated subject."""
        dcfg = diffusion_config(cfg)
        jobs = []
        for i in range(count):
            idx = start + i
            seed = derive_seed(cfg.seed, "group", idx)
            p = draw_prompt(dcfg, seed)
            subject_id = f"{self.name}:{_prompt_digest(p.prompt)}:{p.image_seed}"
            key = f"diff-{slug(p.attribute + ' ' + p.cls)}-{idx:06d}"
            jobs.append(Job(idx, self.name, p.prompt, subject_id, p.cls, key, seed))
        return jobs

    def layers(self, job: Job, cfg: GenerateConfig, rng: np.random.Generator, side: int) -> SubjectLayers:
        """Generate the subject at ``generate.diffusion.image_size`` (``side`` is ignored: the layer is
        rescaled to fit), segment, cut and re-pose it."""
        dcfg = diffusion_config(cfg)
        p = draw_prompt(dcfg, job.seed)
        if p.prompt != job.item:  # the plan came from other settings; its recorded prompt would be wrong
            raise ConfigError(f"job {job.key}: planned prompt {job.item!r} but {PARAMS_KEY} now gives "
                              f"{p.prompt!r}; plan again with the current params")
        pipe = load_pipeline(dcfg.model, "text2img", dcfg.device)
        rgb = generate_image(pipe, p.prompt, p.image_seed, dcfg.image_size, steps=dcfg.steps, guidance=dcfg.guidance)
        photo = Photo(rgb, None, (rgb.shape[1], rgb.shape[0]), None)
        out = photo_layers(photo, job, cfg, rng)
        out.caption = f"a photo of a {p.attribute} {p.cls}"
        out.meta["diffusion"] = _record(pipe, dcfg, p.prompt, p.image_seed) | {
            "template": p.template, "attribute": p.attribute, "class": p.cls}
        return out


def _record(pipe: Any, dcfg: DiffusionConfig, prompt: str, seed: int) -> dict[str, Any]:
    """What regenerates an image: prompt, seed, model identity, steps, guidance, size, scheduler."""
    return {"prompt": prompt, "seed": int(seed), "model": getattr(pipe, "spotdiff_identity", dcfg.model),
            "steps": dcfg.steps, "guidance": dcfg.guidance, "image_size": dcfg.image_size,
            "scheduler": type(pipe.scheduler).__name__}


# --------------------------------------------------------------------------- backgrounds


def _parse_background_id(bg_id: str, n_prompts: int) -> tuple[int, int]:
    kind, _, rest = str(bg_id).partition(":")
    idx, sep, num = rest.partition(":")
    if kind != BACKGROUND_KIND or not sep or not idx.isdigit() or not num.isdigit():
        raise ValueError(f"malformed background id {bg_id!r}: expected 'diffusion:<prompt index>:<seed>'")
    if int(idx) >= n_prompts:
        raise ValueError(f"background id {bg_id!r}: prompt index {idx} is out of range; "
                         f"{PARAMS_KEY}.scene_prompts has {n_prompts}")
    return int(idx), int(num)


def make_diffusion_background(cfg: DiffusionConfig | GenerateConfig, bg_id: str, size: int) -> np.ndarray:
    """Regenerate background ``bg_id`` (``"diffusion:<prompt index>:<seed>"``): uint8 (size, size, 3).

    Generated at ``dcfg.image_size`` and resized to ``size`` pixels, so one id is the same picture at
    every output size (up to resampling). ``cfg``: the diffusion section, or the generate config holding it."""
    dcfg = _section(cfg)
    idx, seed = _parse_background_id(bg_id, len(dcfg.scene_prompts))
    pipe = load_pipeline(dcfg.model, "text2img", dcfg.device)
    rgb = generate_image(pipe, dcfg.scene_prompts[idx], seed, dcfg.image_size, steps=dcfg.steps,
                         guidance=dcfg.guidance)
    if rgb.shape[0] != size:
        shrink = size < rgb.shape[0]  # area averaging when shrinking (no aliasing), cubic when enlarging
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return rgb


def diffusion_background(cfg: DiffusionConfig | GenerateConfig, seed: int, size: int) -> tuple[np.ndarray, str]:
    """A scene background for ``seed`` (any int) and its id: (uint8 (size, size, 3), ``"diffusion:<i>:<n>"``),
    where ``i`` indexes ``scene_prompts`` and ``n`` seeds the model. Deterministic in (cfg, seed)."""
    dcfg = _section(cfg)
    rng = np.random.default_rng(derive_seed("background", BACKGROUND_KIND, seed))
    bg_id = f"{BACKGROUND_KIND}:{int(rng.integers(len(dcfg.scene_prompts)))}:{int(rng.integers(1 << 62))}"
    return make_diffusion_background(dcfg, bg_id, size), bg_id


register(DiffusionSource())

"""The pre-training pool: procedural renders of identities that generate never draws.

Subject ``j`` is ``procedural.make_subject(derive_seed(pretrain.seed, "pretrain-subject", j))``: generate derives
its subjects from ``(generate.seed, "procedural-subject", i)``, so the two sets share no seed (63-bit digests of
different strings; ``tests/test_pretrain.py`` checks the demo's). Each subject gets one random light, placement
and two random poses (yaws at least 60 degrees apart, pitch and roll as generate draws them) on two random
procedural backgrounds (noise, gradient, pattern, horizon: no photo, so no photo that generate or evaluate
shows), composited into 4 scenes: (P0, B0), (P1, B0), (P0, B1), (P1, B1). No orientation markers.
"""

from __future__ import annotations

import numpy as np

from spotdiff.common.seeding import derive_seed
from spotdiff.config import PretrainConfig
from spotdiff.generate.background.bank import BackgroundBank
from spotdiff.generate.background.composite import Layer, composite
from spotdiff.generate.sources import procedural

SCENES = 4
"""Scenes per subject: two poses x two backgrounds."""
BACKGROUNDS = {"noise": 1.0, "gradient": 1.0, "pattern": 1.0, "horizon": 1.0}
"""Background kinds of the pool: the procedural ones, no photos."""


def subject_seed(seed: int, j: int) -> int:
    return derive_seed(seed, "pretrain-subject", j)


KIND_INDEX = {k: i for i, k in enumerate(BACKGROUNDS)}


def render_subject(cfg: PretrainConfig, j: int, bank: BackgroundBank) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (4, render_size, render_size, 3): subject ``j``'s scenes in ``SCENES`` order, and float32 (4, 2) render
    labels: each scene's yaw (degrees) and background kind (index into ``BACKGROUNDS``)."""
    size = cfg.render_size
    subject = procedural.make_subject(subject_seed(cfg.seed, j))
    rng = np.random.default_rng(derive_seed(cfg.seed, "pretrain-scene", j))
    yaw0 = float(rng.uniform(-180.0, 180.0))
    yaw1 = (yaw0 + float(rng.uniform(60.0, 180.0)) * float(rng.choice([-1.0, 1.0])) + 180.0) % 360.0 - 180.0
    poses = [(yaw, float(rng.uniform(-25.0, 25.0)), float(rng.uniform(-10.0, 10.0))) for yaw in (yaw0, yaw1)]
    light = rng.normal(size=3)
    light[1] = abs(light[1]) + 0.5
    light[2] = abs(light[2]) + 0.3
    light = tuple(float(v) for v in light / np.linalg.norm(light))
    side = max(8, round(float(rng.uniform(0.55, 0.85)) * size))
    slack = (size - side) / 2
    centre = (size / 2 + float(rng.uniform(-slack, slack)) * 0.5, size / 2 + float(rng.uniform(-slack, slack)) * 0.5)
    bg0, id0 = bank.draw(derive_seed(cfg.seed, "pretrain-bg", j, 0))
    bg1, id1 = bank.draw(derive_seed(cfg.seed, "pretrain-bg", j, 1), exclude=id0)
    out = []
    layers = []
    for rot in poses:
        rgb, alpha = procedural.render(subject, rot, side, light, 1)
        layers.append(Layer(rgb.astype(np.float32), alpha.astype(np.float32)))
    labels = []
    for bg, bg_id in ((bg0, id0), (bg1, id1)):
        for layer, rot in zip(layers, poses):
            out.append(composite(bg, layer, centre)[0])
            labels.append((rot[0], KIND_INDEX[bg_id.split(":")[0]]))
    return np.stack(out), np.asarray(labels, np.float32)


def build_pool(cfg: PretrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (subjects * 4, render_size, render_size, 3): every subject's scenes, subject by subject; and their
    render labels (``render_subject``)."""
    bank = BackgroundBank(BACKGROUNDS, cfg.render_size)
    parts = [render_subject(cfg, j, bank) for j in range(cfg.subjects)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

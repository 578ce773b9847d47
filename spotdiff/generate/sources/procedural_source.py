"""The ``procedural`` source: one new procedurally generated 3D identity per group.

Subject ``i`` is ``procedural.make_subject(derive_seed(seed, "procedural-subject", i), markers)``
(``generate.procedural.markers``),
rendered in pose P0 for the ``anchor`` and ``bg`` views and in pose P1 (yaw at least
``pose.min_yaw_delta`` away) for ``pose``, under one light direction fixed in the world,
so shading and self-occlusion change with the pose while identity stays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spotdiff.generate.background.composite import Layer
from spotdiff.config import GenerateConfig
from spotdiff.common.seeding import derive_seed
from spotdiff.generate.sources import procedural
from spotdiff.generate.sources.registry import Job, SubjectLayers, register
def _wrap(deg: float) -> float:
    """Angle in [-180, 180) degrees."""
    return (deg + 180.0) % 360.0 - 180.0


@dataclass
class ProceduralSource:
    """Source ``procedural`` (see the module docstring)."""

    name: str = "procedural"

    def plan(self, cfg: GenerateConfig, count: int, start: int) -> list[Job]:
        jobs = []
        for i in range(count):
            idx = start + i
            subject_seed = derive_seed(cfg.seed, "procedural-subject", i)
            subject = procedural.make_subject(subject_seed, cfg.procedural.markers)
            jobs.append(Job(idx, self.name, str(subject_seed), f"procedural:{subject_seed:016x}",
                            subject.class_name, f"proc-{idx:06d}", derive_seed(cfg.seed, "group", idx)))
        return jobs

    def layers(self, job: Job, cfg: GenerateConfig, rng: np.random.Generator, side: int) -> SubjectLayers:
        markers = cfg.procedural.markers
        subject = procedural.make_subject(int(job.item), markers)
        pc = cfg.pose
        yaw0 = float(rng.uniform(-180.0, 180.0))
        yaw1 = _wrap(yaw0 + float(rng.uniform(pc.min_yaw_delta, 180.0)) * float(rng.choice([-1.0, 1.0])))
        poses = {name: (yaw, float(rng.uniform(-pc.max_pitch, pc.max_pitch)), float(rng.uniform(-pc.max_roll, pc.max_roll)))
                 for name, yaw in (("P0", yaw0), ("P1", yaw1))}
        light = rng.normal(size=3)
        light[1] = abs(light[1]) + 0.5  # from above, as most photos are lit
        light[2] = abs(light[2]) + 0.3  # and from the camera's side, so the visible face is lit
        light = tuple(float(v) for v in light / np.linalg.norm(light))
        layers = {}
        for name, rot in poses.items():
            rgb, alpha = procedural.render(subject, rot, side, light, cfg.supersample)
            layers[name] = Layer(rgb.astype(np.float32), alpha.astype(np.float32))
        meta = {
            "pose": {"kind": "render", **{k: {"yaw": round(v[0], 3), "pitch": round(v[1], 3), "roll": round(v[2], 3)}
                                          for k, v in poses.items()}},
            "light": [round(v, 4) for v in light],
            "subject": subject.to_json(),
            "orientation_markers": markers,
            "segment": {"backend": "render", "score": 1.0},
        }
        caption = f"a {subject.color_name} {subject.class_name}"
        return SubjectLayers(layers["P0"], layers["P1"], 1.0, caption, meta)


register(ProceduralSource())

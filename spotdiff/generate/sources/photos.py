"""Photo sources: ``packaged`` (photos that installed packages ship) and ``folder`` (a user's photos).

Both segment the photo (``generate.segment``), cut the subject into a layer, and make
the pose view with the ``affine`` variation. A folder holds one subfolder per subject and
an optional ``classes.csv`` (``subject,class``); without it the folder name is the class.
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spotdiff.generate import segment
from spotdiff.generate.background.composite import cut_layer
from spotdiff.config import ConfigError, GenerateConfig
from spotdiff.common.images import IMAGE_SUFFIXES, BadInput, Photo, load_photo
from spotdiff.generate.pose import affine, landmarks
from spotdiff.common.seeding import derive_seed
from spotdiff.generate.sources.registry import Job, SubjectLayers, register

PACKAGED = {
    # scikit-image photo: (class noun, subject box hint as fractions, or None for a centred box).
    # chelsea is a close-up whose face fills the frame: only the right strip is background.
    "astronaut": ("astronaut", None),
    "chelsea": ("cat", (0.0, 0.0, 0.86, 1.0)),
    "coffee": ("cup", None),
    "rocket": ("rocket", None),
}


def slug(text: str) -> str:
    """Lowercase key-safe form of a name ('Colorful Sneaker.v2' -> 'colorful-sneaker-v2')."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def photo_layers(photo: Photo, job: Job, cfg: GenerateConfig, rng: np.random.Generator) -> SubjectLayers:
    """Segment, cut and affinely re-pose one photo.

    People (``generate.pose.landmarks``) get pose landmarks, detected once on the photo and
    carried on both layers as ``Layer.points``; ``meta["landmarks"]`` is None when none were found.
    """
    seg = segment.segment(cfg.segment, photo, job.class_name)
    if seg.score < cfg.min_segment_score:
        raise BadInput("segmentation_low_score",
                       f"{seg.backend} score {seg.score:.3f} < generate.min_segment_score = {cfg.min_segment_score}")
    points = None
    meta: dict = {}
    if cfg.pose.landmarks and job.class_name in segment.PERSON_CLASSES:
        found = landmarks.detect(photo.rgb, cfg.pose.landmarks_model)
        points = None if found is None else np.array(found, np.float64)
        meta["landmarks"] = None  # replaced by per-view landmarks when the layers carry points
    anchor = cut_layer(photo.rgb, seg.mask, points=points)
    params = affine.draw_params(rng, cfg.pose)
    pose, matrix = affine.apply(anchor, params)
    meta = {
        **meta,
        "segment": {"backend": seg.backend, "score": round(seg.score, 4),
                    **{k: round(float(v), 4) for k, v in seg.extra.items()}},
        "pose": {"kind": "affine", "P0": {"identity": True},
                 "P1": {**params, "homography": np.round(matrix, 6).tolist()}},
        "photo_size": list(photo.source_size),
        # The layer's top-left in the photo as segmented (which may be a downscaled copy of the
        # file, of size ``photo``): with P1's homography it locates any pose-view pixel in the photo.
        "crop": {"offset": list(anchor.offset), "photo": [photo.rgb.shape[1], photo.rgb.shape[0]]},
    }
    return SubjectLayers(anchor, pose, params["scale"], f"a photo of a {job.class_name}", meta)


@functools.lru_cache(maxsize=8)
def _packaged_photo(name: str) -> Photo:
    import skimage.data

    rgb = np.ascontiguousarray(getattr(skimage.data, name)()[:, :, :3])
    return Photo(rgb, None, (rgb.shape[1], rgb.shape[0]), PACKAGED[name][1])


def _cycle(source: str, items: list[tuple[str, str, str]], cfg: GenerateConfig, count: int, start: int) -> list[Job]:
    """Jobs cycling through (item, subject, class) triples in order."""
    jobs = []
    for i in range(count):
        item, subject, cls = items[i % len(items)]
        idx = start + i
        key = f"{source[:4]}-{slug(subject)}-{idx:06d}"
        jobs.append(Job(idx, source, item, f"{source}:{subject}", cls, key, derive_seed(cfg.seed, "group", idx)))
    return jobs


@dataclass
class PackagedSource:
    name: str = "packaged"

    def plan(self, cfg: GenerateConfig, count: int, start: int) -> list[Job]:
        return _cycle(self.name, [(n, n, cls) for n, (cls, _) in PACKAGED.items()], cfg, count, start)

    def layers(self, job: Job, cfg: GenerateConfig, rng: np.random.Generator, side: int) -> SubjectLayers:
        return photo_layers(_packaged_photo(job.item), job, cfg, rng)


def read_classes(root: Path) -> dict[str, str]:
    """``classes.csv`` (subject,class) under ``root``; {} when absent. Bad rows raise ConfigError."""
    path = root / "classes.csv"
    if not path.exists():
        return {}
    classes = {}
    with path.open(newline="") as f:
        for line, row in enumerate(csv.reader(f), 1):
            if not row or row[0].strip().startswith("#") or (line == 1 and row[:2] == ["subject", "class"]):
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise ConfigError(f"{path}:{line}: expected 'subject,class', got {row!r}")
            classes[row[0].strip()] = row[1].strip()
    return classes


def scan_folder(root: Path) -> list[tuple[str, str, str]]:
    """(file path relative to ``root``, subject, class) for every file in every subject folder, sorted.

    Every file is listed, images or not, so the run can account for each one
    (non-images are rejected with a reason rather than silently skipped). Paths are relative to the
    folder (``generate.folder``), POSIX-style: a group's record and a reject name the photo the same way
    wherever the folder sits on the machine that built them.
    """
    if not root.is_dir():
        raise ConfigError(f"generate.folder = {str(root)!r}: not a directory")
    classes = read_classes(root)
    items = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(p for p in sub.rglob("*") if p.is_file()):
            items.append((f.relative_to(root).as_posix(), sub.name, classes.get(sub.name, sub.name.replace("_", " "))))
    if not items:
        raise ConfigError(f"generate.folder = {str(root)!r}: no files in subject subfolders")
    return items


@dataclass
class FolderSource:
    name: str = "folder"

    def plan(self, cfg: GenerateConfig, count: int, start: int) -> list[Job]:
        return _cycle(self.name, scan_folder(Path(cfg.folder)), cfg, count, start)

    def layers(self, job: Job, cfg: GenerateConfig, rng: np.random.Generator, side: int) -> SubjectLayers:
        if Path(job.item).suffix.lower() not in IMAGE_SUFFIXES:
            raise BadInput("unsupported_extension", f"{Path(job.item).suffix or '(none)'} is not one of {IMAGE_SUFFIXES}")
        photo = load_photo(Path(cfg.folder) / job.item, cfg.max_pixels, cfg.min_side, work_size=cfg.image_size)
        return photo_layers(photo, job, cfg, rng)


register(PackagedSource())
register(FolderSource())

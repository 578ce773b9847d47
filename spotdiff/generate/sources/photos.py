"""Photo sources: ``packaged`` (photos that installed packages ship) and ``folder`` (a user's photos).

Both segment the photo (``generate.segment``), cut the subject into a layer, and make
the pose view with the ``affine`` variation. A folder holds one subfolder per subject and
an optional ``classes.csv`` (``subject,class``); without it the folder name is the class.

A folder's inventory (``inventory_folder``) accounts for every entry under the subject folders,
followed through symbolic links: each regular file is an item that is processed or rejected when its
job runs; a FIFO, device, socket, dangling or looping link or unreadable folder is never opened and is
listed as a reject with its reason (``FolderSource.inventory``), so the run's "in = kept + rejected"
covers it. At the top level, folders (and links to folders) are subjects, anything else that is not a
regular file is such a reject, and regular files (``classes.csv``, a README) are not photos of a subject.
Hidden entries at the top level are skipped.

A photo is segmented (and its landmarks detected) once per process, not once per group: ``PhotoCache``
keeps both by the photo's content and the settings that shape them, so the 4 packaged photos, which
the demo turns into ~15 groups each per worker, cost 4 segmentations there instead of one a group.
The results are the same arrays the backend returns (they take no seed), so the bytes do not change.
"""

from __future__ import annotations

import csv
import errno
import functools
import hashlib
import logging
import os
import re
import stat
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from spotdiff.generate import segment
from spotdiff.generate.background.composite import cut_layer
from spotdiff.config import ConfigError, GenerateConfig
from spotdiff.common.images import IMAGE_SUFFIXES, BadInput, Photo, load_photo, special_file
from spotdiff.generate.pose import affine, landmarks
from spotdiff.common.seeding import derive_seed
from spotdiff.generate.sources.registry import Job, SubjectLayers, register

log = logging.getLogger(__name__)

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


class PhotoCache:
    """What a process computed from photos, by photo content: least recently used entries go first
    once the arrays held pass ``budget`` bytes (a bound per process, not growing with the run).

    A backend's failure on a photo (``BadInput``: nothing segmented) is kept too and raised again.
    """

    def __init__(self, budget: int):
        self.budget = budget
        self.entries: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self.held = 0
        self.hits = self.misses = 0

    @staticmethod
    def digest(photo: Photo) -> bytes:
        """The photo's content: pixels, transparency and subject hint."""
        h = hashlib.blake2b(digest_size=20)
        for arr in (photo.rgb, photo.alpha):
            if arr is not None:
                h.update(repr((arr.shape, arr.dtype.str)).encode())
                h.update(np.ascontiguousarray(arr).data)
        h.update(repr(photo.box).encode())
        return h.digest()

    def get(self, key: tuple, compute: Callable[[], Any], size: Callable[[Any], int]) -> Any:
        if key in self.entries:
            self.hits += 1
            self.entries.move_to_end(key)
            value = self.entries[key][0]
        else:
            self.misses += 1
            try:
                value = compute()
            except BadInput as err:
                value = err
            nbytes = 0 if isinstance(value, BadInput) else size(value)
            self.entries[key] = (value, nbytes)
            self.held += nbytes
            while self.held > self.budget and len(self.entries) > 1:
                _, (_, dropped) = self.entries.popitem(last=False)
                self.held -= dropped
        if isinstance(value, BadInput):
            raise BadInput(value.reason, value.detail)
        return value


PHOTO_CACHE_BYTES = 128 << 20
"""Bytes of masks and landmarks a process keeps (``PhotoCache``): ~120 photos at 512 px."""
photo_cache = PhotoCache(PHOTO_CACHE_BYTES)


def _segmented(photo: Photo, digest: bytes, job: Job, cfg: GenerateConfig) -> segment.Segmentation:
    key = ("segment", digest, cfg.segment, job.class_name, cfg.sam.model_dump_json() if cfg.segment == "sam" else "")
    seg = photo_cache.get(key, lambda: segment.segment(cfg.segment, photo, job.class_name), lambda s: s.mask.nbytes)
    return replace(seg, mask=seg.mask.copy(), extra=dict(seg.extra))  # callers own what they get


def _landmarks(photo: Photo, digest: bytes, cfg: GenerateConfig) -> np.ndarray | None:
    def detect() -> np.ndarray | None:
        found = landmarks.detect(photo.rgb, cfg.pose.landmarks_model)
        return None if found is None else np.array(found, np.float64)

    points = photo_cache.get(("landmarks", digest, cfg.pose.landmarks_model), detect,
                             lambda p: 0 if p is None else p.nbytes)
    return None if points is None else points.copy()


def photo_layers(photo: Photo, job: Job, cfg: GenerateConfig, rng: np.random.Generator) -> SubjectLayers:
    """Segment, cut and affinely re-pose one photo.

    People (``generate.pose.landmarks``) get pose landmarks, detected once on the photo and
    carried on both layers as ``Layer.points``; ``meta["landmarks"]`` is None when none were found.
    Segmentation and landmarks come from ``photo_cache`` when this process has seen the photo.
    """
    digest = PhotoCache.digest(photo)
    seg = _segmented(photo, digest, job, cfg)
    if not segment.passes(seg, cfg.min_segment_score):
        raise BadInput("segmentation_low_score",
                       f"{seg.backend} score {seg.score:.3f} < generate.min_segment_score = {cfg.min_segment_score}")
    points = None
    meta: dict = {}
    if cfg.pose.landmarks and job.class_name in segment.PERSON_CLASSES:
        points = _landmarks(photo, digest, cfg)
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
    # utf-8-sig: spreadsheets save CSV with a byte-order mark, which would otherwise become part of the first
    # subject's name, and that subject would silently lose its class.
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8 CSV") from None
    for line, row in enumerate(rows, 1):
        if not row or row[0].strip().startswith("#") or (line == 1 and row[:2] == ["subject", "class"]):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ConfigError(f"{path}:{line}: expected 'subject,class', got {row!r}")
        classes[row[0].strip()] = row[1].strip()
    return classes


def _entry(path: Path) -> tuple[str, os.stat_result | None, str]:
    """What a folder entry is, following links: ("file" | "dir" | a reject reason, its stat, detail)."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return "dangling_symlink", None, f"symbolic link to {target!r}, which does not exist"
            except OSError as err:
                if err.errno == errno.ELOOP:
                    return "symlink_loop", None, f"symbolic link to {target!r} loops"
                raise
    except OSError as err:
        return "unreadable", None, f"{type(err).__name__}: {err.strerror or err}"
    if stat.S_ISREG(st.st_mode):
        return "file", st, ""
    if stat.S_ISDIR(st.st_mode):
        return "dir", st, ""
    reason, detail = special_file(st.st_mode)
    return reason, st, detail


def _walk(folder: Path, subject: str, seen: set[tuple[int, int]], files: list[Path],
          rejects: list[tuple[Path, str, str, str]]) -> None:
    """Every entry under ``folder`` (a subject's), depth first: regular files into ``files``, anything
    unusable into ``rejects`` as (path, subject, reason, detail)."""
    try:
        names = [e.name for e in os.scandir(folder)]
    except OSError as err:
        rejects.append((folder, subject, "unreadable_folder", f"{type(err).__name__}: {err.strerror or err}"))
        return
    for name in names:
        path = folder / name
        kind, st, detail = _entry(path)
        if kind == "file":
            files.append(path)
        elif kind == "dir":
            ident = (st.st_dev, st.st_ino)
            if ident in seen:
                rejects.append((path, subject, "symlink_loop", "a folder already listed (a link back up the tree)"))
            else:
                seen.add(ident)
                _walk(path, subject, seen, files, rejects)
        else:
            rejects.append((path, subject, kind, detail))


def inventory_folder(root: Path) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str, str, str]]]:
    """(items, rejects) of a photo folder (see the module docstring): items are (file path, subject, class)
    for every regular file in every subject folder, sorted; rejects are (path, subject, class, reason,
    detail) for every entry that is not one, sorted. Paths are relative to ``root`` (``generate.folder``),
    POSIX-style: a record or a reject names a photo the same way wherever the folder sits."""
    if not root.is_dir():
        raise ConfigError(f"generate.folder = {str(root)!r}: not a directory")
    classes = read_classes(root)
    try:
        top = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    except OSError as err:
        raise ConfigError(f"generate.folder = {str(root)!r}: cannot be listed: {err.strerror or err}") from None
    seen = {(root.stat().st_dev, root.stat().st_ino)}
    items: list[tuple[str, str, str]] = []
    rejects: list[tuple[Path, str, str, str]] = []
    for sub in top:
        kind, st, detail = _entry(sub)
        if kind == "file":
            continue  # classes.csv, a README: not a photo of a subject
        if kind != "dir":
            rejects.append((sub, sub.name, kind, detail))
            continue
        if (st.st_dev, st.st_ino) in seen:
            rejects.append((sub, sub.name, "symlink_loop", "a folder already listed (a link back up the tree)"))
            continue
        seen.add((st.st_dev, st.st_ino))
        files: list[Path] = []
        _walk(sub, sub.name, seen, files, rejects)
        cls = classes.get(sub.name, sub.name.replace("_", " "))
        items += [(f.relative_to(root).as_posix(), sub.name, cls) for f in sorted(files)]
    out = sorted((p.relative_to(root).as_posix(), subject, classes.get(subject, subject.replace("_", " ")), reason,
                  detail) for p, subject, reason, detail in rejects)
    return items, out


def scan_folder(root: Path) -> list[tuple[str, str, str]]:
    """(file path, subject, class) for every regular file in every subject folder, sorted.

    Every file is listed, images or not, so the run can account for each one
    (non-images are rejected with a reason rather than silently skipped); entries that are
    not regular files are ``inventory_folder``'s rejects.
    """
    items, _ = inventory_folder(root)
    if not items:
        raise ConfigError(f"generate.folder = {str(root)!r}: no files in subject subfolders")
    return items


@dataclass
class FolderSource:
    name: str = "folder"

    def plan(self, cfg: GenerateConfig, count: int, start: int) -> list[Job]:
        items = scan_folder(Path(cfg.folder))
        unknown = sorted(set(read_classes(Path(cfg.folder))) - {subject for _, subject, _ in items})
        if unknown:  # a typo there would otherwise leave its subject with the folder name as class, unsaid
            log.warning("%s names %d subject(s) with no photos in a subfolder of that name (their class is unused): %s",
                        Path(cfg.folder) / "classes.csv", len(unknown), ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else ""))
        return _cycle(self.name, items, cfg, count, start)

    def inventory(self, cfg: GenerateConfig) -> list[dict[str, str]]:
        """A reject row for every folder entry that is not a regular file (``inventory_folder``), once each."""
        _, rejects = inventory_folder(Path(cfg.folder))
        return [{"key": f"{self.name[:4]}-{slug(subject)}-entry{i:06d}", "subject_id": f"{self.name}:{subject}",
                 "source": self.name, "item": path, "reason": reason, "detail": detail}
                for i, (path, subject, _, reason, detail) in enumerate(rejects)]

    def layers(self, job: Job, cfg: GenerateConfig, rng: np.random.Generator, side: int) -> SubjectLayers:
        if Path(job.item).suffix.lower() not in IMAGE_SUFFIXES:
            raise BadInput("unsupported_extension", f"{Path(job.item).suffix or '(none)'} is not one of {IMAGE_SUFFIXES}")
        photo = load_photo(Path(cfg.folder) / job.item, cfg.max_pixels, cfg.min_side, work_size=cfg.image_size)
        return photo_layers(photo, job, cfg, rng)


register(PackagedSource())
register(FolderSource())

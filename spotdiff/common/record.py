"""The subject-group record: every view of one subject in one WebDataset sample.

A group holds three views of the same subject:

* ``anchor``: pose P0 on background B0,
* ``bg``: the same subject in the same pose P0 on a new background B1,
* ``pose``: the same subject in a new pose P1 on background B0,

each with a soft mask (uint8, 255 = subject), a caption and a JSON record of
factor labels. ``encode`` turns it into WebDataset members with standard
extensions (``anchor.jpg``, ``anchor.mask.png``, ``txt``, ``json``) so any
WebDataset reader decodes it without custom code.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
from PIL import Image

VIEWS = ("anchor", "bg", "pose")
KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
"""A sample key: what names a group in every tar (``KEY.anchor.jpg``, ...); no dots, no path separators."""
_KEY_RE = KEY_RE
VISIBLE = 0.5
"""Visibility above which a body landmark counts as visible (drawn on contact sheets, used in checks)."""

# Index pairs of BlazePose landmarks joined when drawing a skeleton: face outline, arms, torso, legs.
SKELETON = (
    (0, 2), (0, 5), (2, 7), (5, 8), (9, 10),
    (11, 12), (11, 13), (13, 15), (12, 14), (14, 16),
    (11, 23), (12, 24), (23, 24),
    (23, 25), (25, 27), (27, 29), (29, 31), (27, 31),
    (24, 26), (26, 28), (28, 30), (30, 32), (28, 32),
)


_POSE = {
    "yaw": "float64", "pitch": "float64", "roll": "float64",  # procedural renders (degrees)
    "identity": "bool",  # affine P0: the photo's own pose
    "flip": "bool", "rotation": "float64", "scale": "float64", "perspective": ["float64"],  # affine P1
    "homography": [["float64"]],  # affine P1: layer pixels -> pose-view pixels, 3 x 3
}
_LANDMARKS = [["float64"]]
"""One view's body landmarks: [x, y, visibility] per BlazePose point."""

LABELS: dict[str, Any] = {
    "key": "string", "subject_id": "string", "class": "string", "caption": "string",
    "source": "string", "item": "string", "index": "int64", "seed": "int64", "image_size": "int64",
    "background": {"B0": "string", "B1": "string"},
    "placement": {"side": "int64", "center": ["float64"], "pose_center": ["float64"]},
    "pose": {"kind": "string", "P0": _POSE, "P1": _POSE},
    "segment": {"backend": "string", "score": "float64", "backend_score": "float64", "predicted_iou": "float64",
                "stability": "float64"},
    "versions": {"spotdiff": "string", "numpy": "string", "opencv": "string", "pillow": "string"},
    # procedural renders
    "light": ["float64"], "orientation_markers": "bool",
    "subject": {"seed": "int64", "class_name": "string", "color_name": "string", "num_primitives": "int64",
                "primitive_kinds": {"ellipsoid": "int64", "box": "int64", "cylinder": "int64"}},
    # photos (packaged, folder, diffusion)
    "photo_size": ["int64"], "crop": {"offset": ["int64"], "photo": ["int64"]},
    "landmarks": {v: _LANDMARKS for v in ("anchor", "bg", "pose")},
    "diffusion": {"prompt": "string", "seed": "int64", "model": "string", "steps": "int64", "guidance": "float64",
                  "image_size": "int64", "scheduler": "string", "template": "int64", "attribute": "string",
                  "class": "string"},
    "harmonise": {"model": "string", "band": "int64"},
}
"""Schema of the ``json`` member: every label a group of any source can carry, with its type. A mapping is a
struct, ``[t]`` a list of ``t``, a string a value type (Arrow's and Hugging Face's names). A label that does not
apply to a group's source is absent from its record (a null once typed). The dataset cards declare this schema
(``hf_features``), so Hugging Face ``datasets`` types every label of every group instead of guessing from the
first few; the shard stage refuses a record that does not fit it (``label_problems``), so a label added to a
generator without a type here stops the build instead of being dropped by every typed reader."""

_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "int64": (int,), "float64": (float,), "bool": (bool,)}


def label_problems(record: Any, schema: Any = None, where: str = "") -> list[str]:
    """Where ``record`` (a parsed ``json`` member) does not fit ``LABELS``: labels the schema lacks, values
    of another type (an int where a float belongs too: typed readers would not give the same value back).
    Nulls fit anywhere. Empty when it fits."""
    schema = LABELS if schema is None else schema
    if record is None:
        return []
    if isinstance(schema, dict):
        if not isinstance(record, dict):
            return [f"{where or 'record'}: {type(record).__name__}, expected an object"]
        out = [f"{where}{k}: not in spotdiff.common.record.LABELS" for k in record if k not in schema]
        for k, v in record.items():
            if k in schema:
                out += label_problems(v, schema[k], f"{where}{k}.")
        return out
    name = where.rstrip(".")
    if isinstance(schema, list):
        if not isinstance(record, list):
            return [f"{name}: {type(record).__name__}, expected a list"]
        return [p for i, v in enumerate(record) for p in label_problems(v, schema[0], f"{where}{i}.")]
    ok = isinstance(record, _TYPES[schema]) and (schema == "bool" or not isinstance(record, bool))
    if ok and schema == "int64":
        ok = -(1 << 63) <= record < (1 << 63)
    return [] if ok else [f"{name}: {record!r} is not {schema}"]


def hf_feature(schema: Any) -> dict[str, Any]:
    """A ``LABELS`` node as a Hugging Face dataset-card feature (the YAML ``dataset_info.features`` form),
    without its name."""
    if isinstance(schema, dict):
        return {"struct": [{"name": k, **hf_feature(v)} for k, v in schema.items()]}
    if isinstance(schema, list):
        inner = hf_feature(schema[0])
        return {"list": inner.get("dtype", inner)}
    return {"dtype": schema}


def hf_features(names: list[str]) -> list[dict[str, Any]]:
    """Hugging Face card features of the WebDataset members ``names``: views as RGB images, masks as 8-bit grey
    images (``mode: L``, so every reader gets one channel), ``json`` as the ``LABELS`` struct, the rest strings."""
    out = []
    for n in names:
        if n.endswith(".mask.png"):
            out.append({"name": n, "dtype": {"image": {"mode": "L"}}})
        elif n.endswith((".jpg", ".png")):
            out.append({"name": n, "dtype": "image"})
        elif n == "json":
            out.append({"name": n, **hf_feature(LABELS)})
        else:
            out.append({"name": n, "dtype": "string"})
    return out


def member_names() -> list[str]:
    """Member suffixes of a group, in the fixed order they are written to tars."""
    names = []
    for v in VIEWS:
        names += [f"{v}.jpg", f"{v}.mask.png"]
    return names + ["json", "txt"]


def ordered_members(names: Iterable[str]) -> list[str]:
    """``names`` in the writer's order: ``member_names()`` first, then any others sorted."""
    names = set(names)
    return [n for n in member_names() if n in names] + sorted(names - set(member_names()))


@dataclass
class View:
    image: np.ndarray
    """RGB uint8, (H, W, 3)."""
    mask: np.ndarray
    """Soft subject mask, uint8 (H, W); 255 = subject, 0 = background."""


@dataclass
class SubjectGroup:
    key: str
    """Unique sample key: lowercase letters, digits, '-' and '_' (no dots: WebDataset splits on them)."""
    subject_id: str
    """Identity shared by every group of the same subject; splits are made on it."""
    class_name: str
    caption: str
    views: dict[str, View]
    meta: dict[str, Any] = field(default_factory=dict)
    """Factor labels: source, pose parameters, background ids, placement, seeds, backends."""

    def __post_init__(self) -> None:
        if not _KEY_RE.match(self.key):
            raise ValueError(f"sample key {self.key!r} must match {_KEY_RE.pattern}")
        if set(self.views) != set(VIEWS):
            raise ValueError(f"group {self.key}: views {sorted(self.views)} != {list(VIEWS)}")

    def record(self) -> dict[str, Any]:
        """The JSON record written as the ``json`` member."""
        return {"key": self.key, "subject_id": self.subject_id, "class": self.class_name,
                "caption": self.caption, **self.meta}

    def encode(self, jpeg_quality: int = 92) -> dict[str, bytes]:
        """Members keyed by suffix, in ``member_names()`` order. Deterministic bytes."""
        out: dict[str, bytes] = {}
        for name in VIEWS:
            view = self.views[name]
            out[f"{name}.jpg"] = encode_jpeg(view.image, jpeg_quality)
            out[f"{name}.mask.png"] = encode_png(view.mask)
        out["json"] = json.dumps(self.record(), sort_keys=True, separators=(",", ":")).encode()
        out["txt"] = self.caption.encode()
        return out


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    # 4:2:0 subsampling and no optimize pass: the common, fast setting; fixed so bytes never depend
    # on Pillow's defaults changing between minor versions.
    Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=quality, subsampling=2, optimize=False)
    return buf.getvalue()


def encode_png(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    # compress_level 1: masks are mostly flat, level 1 is ~5x faster than 6 for a few % more bytes.
    Image.fromarray(gray, "L").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def decode_members(members: dict[str, bytes]) -> SubjectGroup:
    """Inverse of ``SubjectGroup.encode`` (images decoded to arrays)."""
    rec = json.loads(members["json"])
    views = {}
    for name in VIEWS:
        img = np.asarray(Image.open(io.BytesIO(members[f"{name}.jpg"])).convert("RGB"))
        mask = np.asarray(Image.open(io.BytesIO(members[f"{name}.mask.png"])).convert("L"))
        views[name] = View(img, mask)
    meta = {k: v for k, v in rec.items() if k not in ("key", "subject_id", "class", "caption")}
    return SubjectGroup(rec["key"], rec["subject_id"], rec["class"], rec["caption"], views, meta)

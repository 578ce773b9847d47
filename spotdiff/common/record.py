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
from typing import Any

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


def member_names() -> list[str]:
    """Member suffixes of a group, in the fixed order they are written to tars."""
    names = []
    for v in VIEWS:
        names += [f"{v}.jpg", f"{v}.mask.png"]
    return names + ["json", "txt"]


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

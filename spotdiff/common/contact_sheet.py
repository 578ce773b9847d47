"""Contact sheets: a grid of subject groups a person can check at a glance.

Each row is one group: anchor | bg | pose | anchor mask | bg mask | pose mask, with its
key, class and split on the left. Groups whose record has pose landmarks get them drawn on
the views (visible points as dots, joined by skeleton lines), so a reviewer sees at once
whether the recorded points still sit on the body after the warp.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from spotdiff.common.record import SKELETON, VIEWS, VISIBLE
from spotdiff.common.tars import read_samples

THUMB = 128
LABEL_W = 170
HEADER_H = 18
_FACE_DETAIL = frozenset({1, 3, 4, 6, 9, 10})
"""BlazePose inner/outer eye corners and mouth corners: not dotted on thumbnails."""


def _thumb(data: bytes, mode: str, points: list | None = None) -> Image.Image:
    """Thumbnail of an image member, with ``points`` ([x, y, visibility] in the image's pixels) drawn."""
    img = Image.open(io.BytesIO(data)).convert(mode).convert("RGB")
    sx, sy = THUMB / img.width, THUMB / img.height
    img = img.resize((THUMB, THUMB), Image.BILINEAR)
    if points:
        # Records use pixel-centre coordinates; PIL draws in edge coordinates, hence the +0.5.
        xy = [((x + 0.5) * sx, (y + 0.5) * sy) for x, y, _ in points]
        seen = [v > VISIBLE for _, _, v in points]
        draw = ImageDraw.Draw(img)
        for a, b in SKELETON:
            if seen[a] and seen[b]:
                draw.line([xy[a], xy[b]], fill=(255, 220, 0), width=1)
        for i, ((x, y), ok) in enumerate(zip(xy, seen)):
            # The face has 11 points; at thumbnail size they merge into a blob, so only
            # nose, eyes and ears get dots (the skeleton's face lines still show the rest).
            if ok and i not in _FACE_DETAIL:
                draw.ellipse([x - 1, y - 1, x + 1, y + 1], fill=(255, 40, 40))
    return img


def _landmarks(members: dict[str, bytes]) -> dict[str, list]:
    """View name -> landmarks from the group's JSON record ({} when it has none)."""
    if "json" not in members:
        return {}
    return json.loads(members["json"]).get("landmarks") or {}


def render_rows(rows: list[tuple[str, dict[str, bytes]]]) -> Image.Image:
    """One sheet from (label, members) rows."""
    cols = [f"{v}" for v in VIEWS] + [f"{v} mask" for v in VIEWS]
    sheet = Image.new("RGB", (LABEL_W + THUMB * len(cols), HEADER_H + THUMB * len(rows)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(cols):
        draw.text((LABEL_W + c * THUMB + 4, 3), name, fill=(230, 230, 230))
    for r, (label, members) in enumerate(rows):
        y = HEADER_H + r * THUMB
        draw.multiline_text((4, y + 4), label, fill=(230, 230, 230), spacing=2)
        points = _landmarks(members)
        for c, v in enumerate(VIEWS):
            sheet.paste(_thumb(members[f"{v}.jpg"], "RGB", points.get(v)), (LABEL_W + c * THUMB, y))
            sheet.paste(_thumb(members[f"{v}.mask.png"], "L"), (LABEL_W + (c + len(VIEWS)) * THUMB, y))
    return sheet


def contact_sheet_for_shards(shard_dir: str | Path, n_groups: int) -> Image.Image:
    """Up to ``n_groups`` groups, spread over the splits, and within a split taken from each
    source in turn (so a small source is not hidden behind a large one)."""
    shard_dir = Path(shard_dir)
    index = pq.read_table(shard_dir / "index.parquet",
                          columns=["shard", "key", "split", "class", "source"]).to_pylist()
    splits = sorted({r["split"] for r in index}, key=("train", "val", "test").index)
    per_split = max(1, -(-n_groups // max(1, len(splits))))
    wanted = []
    for s in splits:
        by_source: dict[str, list[dict]] = {}
        for r in index:
            if r["split"] == s:
                by_source.setdefault(r["source"], []).append(r)
        queues = [iter(v) for _, v in sorted(by_source.items())]
        picked: list[dict] = []
        while queues and len(picked) < per_split:
            for q in list(queues):
                r = next(q, None)
                if r is None:
                    queues.remove(q)
                elif len(picked) < per_split:
                    picked.append(r)
        wanted += picked
    wanted = wanted[:n_groups]
    by_shard: dict[str, set[str]] = {}
    for r in wanted:
        by_shard.setdefault(r["shard"], set()).add(r["key"])
    found: dict[str, dict[str, bytes]] = {}
    for shard, keys in by_shard.items():
        for key, members in read_samples(shard_dir / shard):
            if key in keys:
                found[key] = members
    rows = [(f"{r['key']}\n{r['class']}\n{r['split']}", found[r["key"]]) for r in wanted]
    return render_rows(rows)

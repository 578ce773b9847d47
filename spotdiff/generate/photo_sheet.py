"""A contact sheet of photo segmentation a person can judge: photo | cut-out | outline, per photo.

``photo_sheet`` segments the photos of a photo source exactly as ``generate`` does (``load_photo`` at
``generate.image_size``, then ``segment.segment`` with ``generate.segment``) and draws, for each, the
original photo, the cut-out on a checkerboard (what every view of its group shows of the photo), and the
photo with the mask's outline in red, labelled with the file, the backend, the mask-quality score and
whether ``generate.min_segment_score`` keeps it. A subject cut off, background kept (a door frame, a
table top), a halo, or a full-frame rectangle is visible at a glance. ``spotdiff segments`` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

from spotdiff.common.images import BadInput, IMAGE_SUFFIXES, load_photo
from spotdiff.config import GenerateConfig
from spotdiff.generate import segment

THUMB = 160
LABEL_H = 28


@dataclass
class Row:
    item: str
    """The photo, as the group's record names it (path relative to the folder, or the packaged name)."""
    class_name: str
    backend: str
    score: float
    kept: bool
    reason: str
    """Why it is not kept ('' when kept)."""


def _fit(img: np.ndarray, side: int) -> Image.Image:
    h, w = img.shape[:2]
    f = side / max(h, w)
    return Image.fromarray(img).resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR)


def _checker(h: int, w: int, cell: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    light = ((yy // cell + xx // cell) % 2).astype(np.float32)
    return (150 + 60 * light)[..., None].repeat(3, axis=2)


def tiles(rgb: np.ndarray, mask: np.ndarray | None) -> list[np.ndarray]:
    """[photo, cut-out on a checkerboard, photo with the mask outline in red] (uint8 RGB); without a mask the
    last two are the photo greyed out."""
    if mask is None:
        grey = (rgb.astype(np.float32) * 0.35 + 60).astype(np.uint8)
        return [rgb, grey, grey]
    a = np.clip(mask, 0, 1)[..., None].astype(np.float32)
    cut = (rgb.astype(np.float32) * a + _checker(*mask.shape) * (1 - a) + 0.5).astype(np.uint8)
    outline = rgb.copy()
    contours = cv2.findContours((mask >= 0.5).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)[0]
    cv2.drawContours(outline, contours, -1, (255, 0, 0), max(1, round(max(mask.shape) / 160)))
    return [rgb, cut, outline]


def segment_items(items: list[tuple[str, str, str]], cfg: GenerateConfig):
    """(Row, photo rgb or None, mask or None) for every (path, item name, class) as ``generate`` segments it
    (a path ``packaged:<name>`` is a packaged photo)."""
    from spotdiff.generate.sources.photos import _packaged_photo

    for path, name, cls in items:
        try:
            if path.startswith("packaged:"):
                photo = _packaged_photo(path.split(":", 1)[1])
            else:
                photo = load_photo(path, cfg.max_pixels, cfg.min_side, work_size=cfg.image_size)
        except BadInput as err:
            yield Row(name, cls, "", 0.0, False, err.reason), None, None
            continue
        try:
            seg = segment.segment(cfg.segment, photo, cls)
        except BadInput as err:
            yield Row(name, cls, segment.choose(cfg.segment, photo, cls), 0.0, False, err.reason), photo.rgb, None
            continue
        kept = segment.passes(seg, cfg.min_segment_score)
        yield (Row(name, cls, seg.backend, seg.score, kept, "" if kept else "segmentation_low_score"),
               photo.rgb, seg.mask)


def folder_items(folder: Path) -> list[tuple[str, str, str]]:
    """(path, item, class) of every image of a photo folder (``generate.folder``'s layout), sorted."""
    from spotdiff.generate.sources.photos import scan_folder

    return [(str(folder / item), item, cls) for item, _, cls in scan_folder(folder)
            if Path(item).suffix.lower() in IMAGE_SUFFIXES]


def packaged_items() -> list[tuple[str, str, str]]:
    """(``packaged:<name>``, name, class) of the packaged photos."""
    from spotdiff.generate.sources.photos import PACKAGED

    return [(f"packaged:{name}", name, cls) for name, (cls, _) in PACKAGED.items()]


def photo_sheet(items: list[tuple[str, str, str]], cfg: GenerateConfig, per_row: int = 2, thumb: int = THUMB
                ) -> tuple[Image.Image, list[Row]]:
    """The sheet of ``items`` ((path, item, class)) and a row per photo. ``per_row`` photos per sheet row,
    three tiles of ``thumb`` pixels each."""
    cells = []
    rows = []
    for row, rgb, mask in segment_items(items, cfg):
        rows.append(row)
        cell = Image.new("RGB", (3 * thumb, thumb + LABEL_H), (24, 24, 24))
        if rgb is not None:
            for i, tile in enumerate(tiles(rgb, mask)):
                t = _fit(tile, thumb)
                cell.paste(t, (i * thumb + (thumb - t.width) // 2, LABEL_H + (thumb - t.height) // 2))
        draw = ImageDraw.Draw(cell)
        verdict = "kept" if row.kept else f"REJECTED: {row.reason}"
        draw.text((3, 1), f"{row.item} ({row.class_name})", fill=(230, 230, 230))
        draw.text((3, 14), f"{row.backend} score {row.score:.2f}  {verdict}",
                  fill=(120, 230, 120) if row.kept else (255, 110, 110))
        cells.append(cell)
    n_rows = max(1, -(-len(cells) // per_row))
    sheet = Image.new("RGB", (per_row * 3 * thumb + (per_row - 1) * 6, n_rows * (thumb + LABEL_H + 4)), (0, 0, 0))
    for i, cell in enumerate(cells):
        sheet.paste(cell, ((i % per_row) * (3 * thumb + 6), (i // per_row) * (thumb + LABEL_H + 4)))
    return sheet, rows

"""Shared fixtures: real photos from ../shared/data/dreambench-dev and a folder of bad inputs."""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DREAMBENCH = next((p for p in (ROOT.parent / "shared/data/dreambench-dev", ROOT / "shared/data/dreambench-dev")
                   if p.is_dir()), ROOT.parent / "shared/data/dreambench-dev")


@pytest.fixture(scope="session")
def dreambench() -> Path:
    if not DREAMBENCH.is_dir():
        pytest.skip(f"{DREAMBENCH} not present")
    return DREAMBENCH


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb as a reader first sees it)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def make_bad_folder(root: Path, dreambench: Path) -> dict[str, str | None]:
    """A folder source with every kind of awkward file. Returns file name -> expected reject reason
    (None: must be processed correctly)."""
    subj = root / "teapot"
    subj.mkdir(parents=True)
    good = dreambench / "teapot" / "00.jpg"
    photo = Image.open(good).convert("RGB")
    expected: dict[str, str | None] = {}

    shutil.copy(good, subj / "good.jpg"); expected["good.jpg"] = None
    (subj / "empty.jpg").write_bytes(b""); expected["empty.jpg"] = "empty_file"
    data = good.read_bytes()
    (subj / "truncated.jpg").write_bytes(data[: len(data) // 3]); expected["truncated.jpg"] = "corrupt"
    (subj / "text.jpg").write_text("this is not a picture\n"); expected["text.jpg"] = "not_an_image"
    photo.convert("CMYK").save(subj / "cmyk.jpg", quality=90); expected["cmyk.jpg"] = None
    grey16 = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(subj / "grey16.png"); expected["grey16.png"] = None
    pal = photo.convert("P", palette=Image.ADAPTIVE, colors=64)
    pal.info["transparency"] = 0
    pal.save(subj / "palette.png", transparency=0); expected["palette.png"] = None
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    photo.transpose(Image.ROTATE_90).save(subj / "exif_rotated.jpg", exif=exif.tobytes(), quality=90)
    expected["exif_rotated.jpg"] = None
    (subj / "bomb.png").write_bytes(png_header_only(20000, 20000)); expected["bomb.png"] = "decompression_bomb"
    (subj / "notes.txt").write_text("not an image at all"); expected["notes.txt"] = "unsupported_extension"
    return expected

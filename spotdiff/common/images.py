"""Safe photo loading: every failure becomes a ``BadInput`` with a reason a person can act on.

Handles what real folders contain: EXIF rotation, CMYK, 16-bit and palette images,
transparency, truncated or empty files, files that are not images at all, and
decompression bombs (rejected from the header, before any pixel is decoded, or wherever the
decoder refuses one: a PNG whose compressed ICC profile or text chunk inflates beyond Pillow's
limit). Only regular files are ever opened: a FIFO would block the reader forever, a device
(``/dev/zero``) would feed it without end. A JPEG or PNG the decoder warns about is corrupt, not a photo:
Pillow decodes a JPEG with damaged entropy-coded data without a word (libjpeg's warnings go nowhere) and
skips PNG chunk checksums, so ``load_photo`` decodes those formats once more with OpenCV and listens.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from spotdiff.common.native_log import quiet_native

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class BadInput(Exception):
    """An input that cannot be used; ``reason`` is a short machine-groupable code, ``detail`` the why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def special_file(mode: int) -> tuple[str, str] | None:
    """(reject reason, detail) for a file mode that is not a regular file or a folder; None otherwise."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "fifo", "a FIFO (named pipe): never opened, reading one can block forever"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device", f"a {'character' if stat.S_ISCHR(mode) else 'block'} device: never read"
    if stat.S_ISSOCK(mode):
        return "socket", "a socket: not a file"
    return "not_a_regular_file", f"file mode {oct(mode)}"


def open_regular(path: str | Path) -> IO[bytes]:
    """``path`` opened for reading if it is a regular file (following links); ``BadInput`` otherwise. The open
    never blocks (O_NONBLOCK: a FIFO swapped in after a directory listing is refused, not waited on)."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise BadInput("unreadable", f"{type(err).__name__}: {err.strerror or err}") from None
    if stat.S_ISDIR(st.st_mode):
        raise BadInput("not_a_regular_file", "a folder")
    special = special_file(st.st_mode)
    if special:
        raise BadInput(*special)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise BadInput("unreadable", f"{type(err).__name__}: {err.strerror or err}") from None
    special = special_file(os.fstat(fd).st_mode)
    if special:
        os.close(fd)
        raise BadInput(*special)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


_BOMB_MESSAGES = ("Decompressed data too large", "Too much memory used in text chunks")
"""What Pillow's PNG reader raises (ValueError) for a zlib bomb in an ICC profile or text chunk."""


def _decoder_error(err: Exception, reason: str, text: str) -> BadInput:
    """``BadInput`` for a decoder's ``err`` (``text``: its message as recorded): a bomb wherever the decoder
    says so, else ``reason``."""
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)) or \
            any(m in str(err) for m in _BOMB_MESSAGES):
        return BadInput("decompression_bomb", f"{type(err).__name__}: {text}")
    return BadInput(reason, f"{type(err).__name__}: {text}")


DECODER_FAULTS = (b"Corrupt JPEG data", b"Premature end of JPEG", b"Invalid SOS", b"Inconsistent progression",
                  b"libpng error")
"""Lines libjpeg and libpng print (through OpenCV, on fd 2) when they decode damaged data anyway. One flipped
bit in a dreambench photo's entropy-coded data: "Corrupt JPEG data: 163 extraneous bytes before marker 0xd9",
which Pillow decodes silently into a wrong picture."""

_PNG_WARNING = re.compile(rb"libpng warning: (?![a-z][A-Za-z]{3}: )")
"""A libpng warning is a fault too, unless it is about an ancillary chunk (a chunk name starting with a lower
case letter: iCCP, tEXt, pHYs... metadata, never pixels; "iCCP: known incorrect sRGB profile" is common)."""

STRICT_FORMATS = {"JPEG": 0, "MPO": 0, "PNG": 1}
"""Pillow formats decoded a second time to hear the decoder's warnings: 0 at an eighth of the size
(libjpeg still decodes every coefficient, so it still sees every fault), 1 at full size (PNG)."""


def _is_fault(line: bytes) -> bool:
    return line.startswith(DECODER_FAULTS) or bool(_PNG_WARNING.match(line))


def decode_heard(data: bytes, flags: int, fault: Callable[[bytes], bool]) -> tuple[np.ndarray | None, str | None]:
    """``cv2.imdecode(data, flags)`` and the first line the decoder printed on fd 2 that ``fault`` accepts
    (None when none): libjpeg and libpng report damage they decode anyway only there. QA's member decoding
    and ``decoder_fault`` share it, each with its own list of lines that count."""
    import cv2

    said: list[bytes] = []
    with quiet_native(fault, said):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    return img, said[0].decode(errors="replace").strip() if said else None


def decoder_fault(data: bytes, reduced: bool) -> str | None:
    """The first warning or error the JPEG or PNG decoder prints for ``data``, None when it prints none."""
    import cv2

    flags = (cv2.IMREAD_REDUCED_GRAYSCALE_8 if reduced else cv2.IMREAD_UNCHANGED) | cv2.IMREAD_IGNORE_ORIENTATION
    return decode_heard(data, flags, _is_fault)[1]


@dataclass
class Photo:
    rgb: np.ndarray
    """uint8 (H, W, 3), upright (EXIF orientation applied)."""
    alpha: np.ndarray | None
    """uint8 (H, W) when the file carries transparency that is actually used, else None."""
    source_size: tuple[int, int]
    """(width, height) of the file before any resizing, pixels."""
    box: tuple[float, float, float, float] | None = None
    """Optional hint of where the subject is: (x0, y0, x1, y1) as fractions of width and height."""


def _to_rgba_8bit(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB or RGBA, scaling high bit depths instead of clipping them."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return Image.fromarray((arr * 255 + 0.5).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return img.convert("RGBA")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX


def load_photo(path: str | Path, max_pixels: int, min_side: int = 1, work_size: int | None = None) -> Photo:
    """Open ``path`` as an upright 8-bit photo.

    ``max_pixels`` rejects files whose header promises more pixels (decompression bombs);
    ``min_side`` rejects tiny images; ``work_size``, when set, lets JPEG decode at reduced
    scale (draft mode) and shrinks the result so its short side is at most ``2 * work_size``
    -- the pipeline never needs more, and decoding is then several times faster.
    Raises ``BadInput`` for anything unusable.
    """
    path = Path(path)

    def said(err: Exception) -> str:  # the reason without this machine's path (it lands in rejects.parquet)
        return str(err).replace(str(path), path.name)

    with open_regular(path) as fh, warnings.catch_warnings():
        if os.fstat(fh.fileno()).st_size == 0:
            raise BadInput("empty_file", "file has 0 bytes")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(fh)
        except UnidentifiedImageError:
            raise BadInput("not_an_image", "Pillow cannot identify the file as an image") from None
        except OSError as err:
            raise BadInput("unreadable", said(err)) from None
        except (ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise _decoder_error(err, "corrupt", said(err)) from None
        strict = STRICT_FORMATS.get(img.format or "")
        with img:
            w, h = img.size
            if w * h > max_pixels:
                raise BadInput("decompression_bomb",
                               f"{w}x{h} = {w * h} pixels > generate.max_pixels = {max_pixels}")
            if min(w, h) < min_side:
                raise BadInput("too_small", f"{w}x{h}: short side < generate.min_side = {min_side}")
            try:
                if work_size and img.format == "JPEG":
                    img.draft("RGB", (2 * work_size, 2 * work_size))
                img.load()
                img = ImageOps.exif_transpose(img)
                img = _to_rgba_8bit(img)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
                raise _decoder_error(err, "corrupt", said(err)) from None
        if strict is not None:
            fh.seek(0)
            fault = decoder_fault(fh.read(), reduced=strict == 0)
            if fault:
                raise BadInput("corrupt", f"decoder warning: {fault}")
    if work_size:
        short = min(img.size)
        if short > 2 * work_size:
            f = 2 * work_size / short
            img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.BILINEAR)
    arr = np.asarray(img)
    alpha = None
    if arr.shape[2] == 4:
        alpha = np.ascontiguousarray(arr[:, :, 3])
        arr = arr[:, :, :3]
        if alpha.min() == 255:  # an alpha channel that hides nothing carries no segmentation
            alpha = None
    return Photo(np.ascontiguousarray(arr), alpha, (w, h))

"""Background bank: deterministic backgrounds drawn by seed, each regenerated exactly from its string id.

Kinds (``KINDS``):

* ``noise``: multi-octave value noise through a 2-3 colour palette (clouds, stone, marble, strata);
* ``gradient``: linear or radial 2-3 colour gradients at a random angle (studio backdrops);
* ``pattern``: stripes, plaid, checkerboard, dots or tiles with anti-aliased, optionally soft edges;
* ``horizon``: a simple outdoor place: sky, optional sun, clouds and hills, ground in perspective;
* ``photo``: a random square crop of a photo that ships inside scikit-learn / scikit-image;
* ``folder``: the same random crop of an image from a user's folder.

Ids are ``"<kind>:<n>"`` for the procedural kinds, ``"photo:<name>:<n>"`` and
``"folder:<path relative to the folder>:<n>"``; ``<n>`` seeds every random choice of that
background. An id does not hold the image size: procedural kinds are laid out in units of the
image side and crops in fractions of the photo, so one id at 256 and at 512 px is the same picture.

Procedural kinds work in float32 RGB in [0, 1] and end in ``_finish``, whose grain dithers away
the banding that smooth gradients would otherwise show in 8 bits. Smooth kinds (noise, gradient,
horizon) are rendered at half the side and enlarged there; patterns need full resolution for
their edges. The code avoids full-size temporaries where it can: on the VM this was written on,
touching fresh memory cost more than the arithmetic done in it.
"""

from __future__ import annotations

import colorsys
import functools
import math
import numbers
import os
from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import Callable

import cv2
import numpy as np

from spotdiff.common.images import BadInput, load_photo
from spotdiff.common.seeding import derive_seed
from spotdiff.errors import ConfigError

KINDS = ("noise", "gradient", "pattern", "horizon", "photo", "folder", "diffusion")

PHOTOS = ("china", "flower", "brick", "grass", "gravel")
"""Packaged photos used by the ``photo`` kind (all ship inside the installed wheels, no download).
china, flower: scikit-learn sample images (427 x 640 colour); brick, grass, gravel: scikit-image
textures (512 x 512 grey, tinted per draw). Subject-like images (astronaut, coffee, cat, rocket)
are left out on purpose: a background must not contain a second subject."""

FOLDER_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
CROP_SCALE = (0.4, 1.0)
"""Side of a photo crop as a fraction of the photo's short side."""
FOLDER_MAX_PIXELS = 40_000_000
"""Folder images whose header promises more pixels are rejected unread (decompression bombs)."""
FOLDER_CACHE = 8
"""Decoded folder images kept per bank; draws are random, so a bigger cache rarely hits."""
_ID_RANGE = 1 << 31
_MAX_ATTEMPTS = 64

_TINTS = {"brick": ((0.0, 0.09), (0.2, 0.55)), "grass": ((0.17, 0.29), (0.35, 0.7)),
          "gravel": ((0.05, 0.14), (0.03, 0.25))}
"""Grey texture -> (hue range, saturation range) of its tint, so grass reads green and brick red-brown."""


class BackgroundBank:
    """Deterministic backgrounds drawn by seed. Each background has a string id that regenerates it exactly."""

    def __init__(self, weights: dict[str, float], size: int, folder: Path | None = None, diffusion=None):
        """``weights``: kind -> relative weight (0 = never drawn; kinds left out count as 0).
        ``size``: side of every background, pixels. ``folder``: directory of images for the
        ``folder`` kind, searched recursively for .jpg/.jpeg/.png/.webp (needed only when that
        kind has weight > 0 or ``make`` gets a folder id). Raises ``ValueError`` for unknown
        kinds, negative or all-zero weights, and a folder kind without usable images.
        ``diffusion``: a ``DiffusionConfig`` for the ``diffusion`` kind (Stable Diffusion scenes)."""
        self.size = _check_size(size)
        self.folder = Path(folder) if folder is not None else None
        self._kinds, self._p = _check_weights(weights)
        self._files: list[str] = []
        self._bad: set[str] = set()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        if "folder" in self._kinds:
            self._files = _scan_folder(self.folder)
            self._probe_folder()
        if "photo" in self._kinds:
            for name in PHOTOS:  # fail at start-up, not in the middle of a run
                _packaged(name)
        self._diffusion = diffusion
        if "diffusion" in self._kinds:
            if diffusion is None or not diffusion.model:
                raise ConfigError("background kind 'diffusion' has weight > 0 but generate.diffusion.model is not set")
            from spotdiff.common.diffusion import load_pipeline

            load_pipeline(diffusion.model, "text2img", diffusion.device)  # fail at start-up, not mid-run

    def draw(self, seed: int, exclude: str | None = None) -> tuple[np.ndarray, str]:
        """A background and its id from ``seed`` (any int): rgb uint8 (size, size, 3).

        Never returns the id ``exclude``; deterministic in (seed, exclude). Folder images
        that turn out unreadable are skipped the same way, so a bad file never ends a run.
        """
        for attempt in range(_MAX_ATTEMPTS):
            bg_id = self._pick(seed, attempt)
            if bg_id == exclude:
                continue
            try:
                return self.make(bg_id), bg_id
            except _Unreadable:
                continue
        raise RuntimeError(f"no usable background after {_MAX_ATTEMPTS} attempts (seed {seed}, "
                           f"kinds {self._kinds}, folder {self.folder})")

    def make(self, bg_id: str) -> np.ndarray:
        """Regenerate the background ``bg_id`` exactly: rgb uint8 (size, size, 3).

        Any valid id works, whatever the weights; folder ids need the bank's folder,
        diffusion ids its Stable Diffusion settings.
        """
        if str(bg_id).startswith("diffusion:"):
            if self._diffusion is None:
                raise ValueError(f"background id {bg_id!r} needs generate.diffusion, but this bank has none")
            from spotdiff.generate.sources.diffusion import make_diffusion_background

            return make_diffusion_background(self._diffusion, bg_id, self.size)
        kind, name, n = _parse_id(bg_id)
        if kind == "photo":
            return _photo(name, n, self.size)
        if kind == "folder":
            return _crop(self._folder_image(name), _rng(n), self.size)
        return _PROCEDURAL[kind](n, self.size)

    def _pick(self, seed: int, attempt: int) -> str:
        """The id that ``draw(seed)`` tries at ``attempt``; kinds are taken in ``KINDS`` order,
        so the weights' dict order does not matter."""
        rng = np.random.default_rng(derive_seed("background", seed, attempt))
        kind = self._kinds[int(rng.choice(len(self._kinds), p=self._p))]
        n = int(rng.integers(_ID_RANGE))
        if kind == "photo":
            return f"photo:{PHOTOS[int(rng.integers(len(PHOTOS)))]}:{n}"
        if kind == "folder":
            return f"folder:{self._files[int(rng.integers(len(self._files)))]}:{n}"
        if kind == "diffusion":
            return f"diffusion:{int(rng.integers(len(self._diffusion.scene_prompts)))}:{n}"
        return f"{kind}:{n}"

    def _folder_image(self, rel: str) -> np.ndarray:
        """A folder image by relative path, decoded at no more than twice the output size."""
        if self.folder is None:
            raise ValueError(f"background id 'folder:{rel}:...' needs a folder, but this bank has none")
        if rel in self._cache:
            self._cache.move_to_end(rel)
            return self._cache[rel]
        path = self._resolve(rel)
        if rel in self._bad:
            raise _Unreadable(f"background kind 'folder': {path} is unreadable")
        try:
            rgb = load_photo(path, FOLDER_MAX_PIXELS, min_side=16, work_size=self.size).rgb
        except BadInput as err:
            self._bad.add(rel)  # a file's readability is fixed, so skipping it keeps draws deterministic
            raise _Unreadable(f"background kind 'folder': cannot read {path} ({err})") from None
        self._cache[rel] = rgb
        if len(self._cache) > FOLDER_CACHE:
            self._cache.popitem(last=False)
        return rgb

    def _resolve(self, rel: str) -> Path:
        """``folder / rel``, refusing paths that leave the folder or are not images."""
        parts = PurePosixPath(rel)
        if parts.is_absolute() or ".." in parts.parts or parts.suffix.lower() not in FOLDER_SUFFIXES:
            raise ValueError(f"background id 'folder:{rel}:...' is not an image path inside the folder {self.folder}")
        return self.folder / parts

    def _probe_folder(self) -> None:
        """Raise unless at least one folder image decodes (stops at the first that does)."""
        errors = []
        for rel in self._files:
            try:
                self._folder_image(rel)
                return
            except _Unreadable as err:
                errors.append(str(err))
        raise ConfigError(f"background kind 'folder': none of the {len(self._files)} images under "
                         f"{self.folder} could be read; first error: {errors[0]}")


class _Unreadable(ValueError):
    """A folder image that exists but cannot be decoded."""


# ----------------------------------------------------------------------------- validation, ids


def _check_size(size: int) -> int:
    """``size`` as an int, or ``ValueError`` unless it is an integer of at least 16 pixels."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"background size must be an int >= 16 pixels, got {size!r}")
    return int(size)


def _check_weights(weights: dict[str, float]) -> tuple[list[str], np.ndarray]:
    """Kinds with weight > 0 in ``KINDS`` order and their probabilities."""
    unknown = sorted(set(weights) - set(KINDS))
    if unknown:
        raise ConfigError(f"unknown background kind(s) {unknown} in weights {dict(weights)}; "
                         f"known kinds: {list(KINDS)}")
    bad = {k: w for k, w in weights.items() if not (isinstance(w, numbers.Real) and math.isfinite(w) and w >= 0)}
    if bad:
        raise ConfigError(f"background weights must be finite numbers >= 0, got {bad}")
    kinds = [k for k in KINDS if weights.get(k, 0) > 0]
    if not kinds:
        raise ConfigError(f"all background weights are 0 ({dict(weights)}); give at least one of "
                         f"{list(KINDS)} a weight > 0")
    p = np.array([weights[k] for k in kinds], np.float64)
    return kinds, p / p.sum()


def _scan_folder(folder: Path | None) -> list[str]:
    """Image paths under ``folder`` relative to it (posix, sorted so draws are stable)."""
    if folder is None:
        raise ConfigError("background kind 'folder' has weight > 0 but no folder was given")
    if not folder.is_dir():
        raise ConfigError(f"background kind 'folder': {folder} is not a directory")
    files = sorted(
        (Path(dirpath) / name).relative_to(folder).as_posix()
        for dirpath, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(FOLDER_SUFFIXES)
    )
    if not files:
        raise ConfigError(f"background kind 'folder': no {'/'.join(FOLDER_SUFFIXES)} images under {folder} "
                         "(searched recursively)")
    return files


def _parse_id(bg_id: str) -> tuple[str, str | None, int]:
    """(kind, photo name or folder path or None, number) of an id; ``ValueError`` if malformed."""
    kind, _, rest = str(bg_id).partition(":")
    name, sep, num = rest.rpartition(":") if kind in ("photo", "folder") else (None, ":", rest)
    if kind not in KINDS or not sep or not num.isdigit() or name == "":
        raise ValueError(f"malformed background id {bg_id!r}: expected '<kind>:<n>', 'photo:<name>:<n>' "
                         f"or 'folder:<relative path>:<n>' with kind in {list(KINDS)}")
    if kind == "photo" and name not in PHOTOS:
        raise ValueError(f"background id {bg_id!r}: unknown photo {name!r}; packaged photos: {list(PHOTOS)}")
    return kind, name, int(num)


# ----------------------------------------------------------------------------- shared helpers


def _rng(n: int, stream: int = 0) -> np.random.Generator:
    """Generator for stream ``stream`` of background number ``n``. Size-dependent draws (grain)
    use their own stream so they never shift the draws that lay out the picture."""
    return np.random.default_rng([n, stream])


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """Colour (3, 1, 1) float32 RGB in [0, 1] of hue (turns, wraps), saturation and value in [0, 1];
    shaped to broadcast against planar images."""
    rgb = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return np.array(rgb, np.float32).reshape(3, 1, 1)


def _palette(rng: np.random.Generator, k: int) -> np.ndarray:
    """``k`` harmonious colours (k, 3, 1, 1), darkest first. Values stay within a window of at most
    0.4 so contrast is moderate and a subject stays the most salient thing in the picture."""
    scheme = rng.integers(3)  # 0 analogous, 1 complementary accent, 2 monochrome
    h0 = rng.random()
    spread = (0.09, 0.0, 0.0)[scheme]
    hues = h0 + rng.uniform(-spread, spread, k)
    if scheme == 1:
        hues[rng.integers(k)] += 0.5
    sats = rng.uniform(0.12, 0.6, k) * (0.5 if scheme == 1 else 1.0)  # opposite hues: quieter
    lo = rng.uniform(0.3, 0.6)
    vals = np.sort(lo + rng.uniform(0.12, 0.4) * np.linspace(0.0, 1.0, k))
    return np.stack([_hsv(h, s, v) for h, s, v in zip(hues, sats, vals)])


@functools.lru_cache(maxsize=8)
def _axes(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in units of the image side: x (1, size) and y (size, 1), each in [0, 1].
    Cached per size and read-only."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size)
    c.setflags(write=False)
    return c[None, :], c[:, None]


_GRAIN_SHIFT = 64
"""Grain is cut from a shared tile at one of 64 x 64 offsets chosen by the background's number."""


@functools.lru_cache(maxsize=4)
def _grain_tile(size: int) -> np.ndarray:
    """Luminance noise, uniform in [-0.5, 0.5) and equal in the three channels, (size + 64)^2 x 3
    float32, made once per size and process: fresh noise for every background would cost more
    than drawing a whole gradient."""
    side = size + _GRAIN_SHIFT
    grey = np.random.default_rng(0x5EED).random((side, side), np.float32) - np.float32(0.5)
    tile = cv2.merge([grey, grey, grey])
    tile.setflags(write=False)
    return tile


def _wrap(v: np.ndarray, period: float) -> np.ndarray:
    """``v`` modulo ``period`` (np.mod is an order of magnitude slower for float32)."""
    return v - np.floor(v * (1.0 / period)) * period


def _ramp(t: np.ndarray, colours: np.ndarray, smooth: bool = False) -> np.ndarray:
    """Map ``t`` (h, w) in [0, 1] through evenly spaced colour stops (k, 3, 1, 1) -> planar (3, h, w).
    ``smooth`` eases in and out of every stop, so a smooth ``t`` shows no crease at the stops
    (a plain piecewise-linear ramp reads as a faint line along each inner stop)."""
    k = len(colours)
    out = np.empty((3,) + t.shape, np.float32)
    out[:] = colours[0]
    for i in range(k - 1):
        seg = np.clip(t * (k - 1) - i, 0.0, 1.0) if k > 2 else t
        if smooth:
            seg = _smoothstep(seg)
        out += seg[None] * (colours[i + 1] - colours[i])
    return out


def _smoothstep(t: np.ndarray) -> np.ndarray:
    """3t^2 - 2t^3 of t clipped to [0, 1]: eases in and out with zero slope at both ends."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _aa(signed: np.ndarray, width: float) -> np.ndarray:
    """Coverage in [0, 1] of a shape from its signed distance (inside > 0); ``width`` is the edge
    width in the same units (one pixel = anti-aliased, more = soft/defocused). Works in place:
    ``signed`` is overwritten and returned."""
    signed *= np.float32(1.0 / width)
    signed += 0.5
    return np.clip(signed, 0.0, 1.0, out=signed)


def _upsample(grid: np.ndarray, w: int, h: int, wrap: bool) -> np.ndarray:
    """Bicubic resize of a noise grid to (h, w); ``wrap`` keeps it tileable (needs integer factors)."""
    if not wrap:
        return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    gy, gx = grid.shape
    fx, fy, pad = w // gx, h // gy, 2
    big = cv2.resize(np.pad(grid, pad, mode="wrap"), ((gx + 2 * pad) * fx, (gy + 2 * pad) * fy),
                     interpolation=cv2.INTER_CUBIC)
    return big[pad * fy:pad * fy + h, pad * fx:pad * fx + w]


def _fractal(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int], octaves: int,
             persistence: float, wrap: bool = False) -> np.ndarray:
    """Value noise (h, w) float32, zero mean and unit variance.

    ``cells`` = (across, down) random values of the coarsest octave; each further octave doubles
    them and scales its amplitude by ``persistence``. Octaves are summed at grid resolution and
    resized once, so the cost is one full-size resize whatever the octave count.
    """
    cx, cy = cells
    acc = rng.random((cy, cx), np.float32) - 0.5
    amp = 1.0
    for _ in range(1, octaves):
        cx, cy, amp = cx * 2, cy * 2, amp * persistence
        acc = _upsample(acc, cx, cy, wrap)
        acc += amp * (rng.random((cy, cx), np.float32) - 0.5)
    acc = (acc - acc.mean()) / (acc.std() + 1e-6)
    return _upsample(acc, shape[1], shape[0], wrap)


def _work_size(size: int) -> int:
    """Resolution at which smooth kinds are rendered before ``_finish`` enlarges them: half the
    side (a quarter of the work and memory) loses nothing visible in gradients, noise and skies."""
    return max(16, (size + 1) // 2)


def _finish(img: np.ndarray, n: int, size: int, grain: float = 2.0, vignette: float = 0.0) -> np.ndarray:
    """Float32 RGB in [0, 1], planar (3, w, w) or interleaved (w, w, 3), -> uint8 (size, size, 3).

    Applies ``vignette`` (how much the corners darken, 0 = none), enlarges bilinearly to ``size``
    if w is smaller, and adds luminance grain of +-``grain``/2 levels at full resolution, which
    also dithers gradients against banding. Consumes ``img``. Works in place wherever it can:
    touching fresh megabytes costs more here than the arithmetic.
    """
    img = cv2.merge(list(img)) if img.shape[0] == 3 else np.ascontiguousarray(img)
    work = img.shape[0]
    # A separable vignette (row falloff x column falloff) needs only two in-place products with
    # small vectors; the column vector is repeated per channel to match the interleaved rows.
    c = _axes(work)[0][0] - 0.5
    fall = 1.0 - np.float32(2.0 * vignette) * c * c
    flat = img.reshape(work, work * 3)  # a view: img is contiguous
    flat *= fall[:, None] * np.float32(255.0 / grain)
    flat *= np.repeat(fall, 3)[None, :]
    if work != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    dy, dx = _rng(n, 99).integers(_GRAIN_SHIFT, size=2)
    cv2.add(img, _grain_tile(size)[dy:dy + size, dx:dx + size], dst=img)
    # convertScaleAbs scales, rounds and saturates in one pass; its abs only turns the grain's
    # -0.x below pure black into +0.x, which rounds to 0 or 1.
    return cv2.convertScaleAbs(img, alpha=grain)


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """a + (b - a) t for a planar image (3, h, w) and a colour (3, 1, 1) or image, coverage t
    broadcastable to (h, w). One temporary only: fresh megabytes are slow to touch."""
    out = b - a
    out *= t[None]
    out += a
    return out


# ----------------------------------------------------------------------------- noise


def _noise(n: int, size: int) -> np.ndarray:
    """Fractal noise through a palette: soft clouds, ridged stone, marble veins or horizontal strata."""
    rng, work = _rng(n), _work_size(size)
    style = ("cloud", "ridged", "marble", "strata")[rng.integers(4)]
    cells = int(rng.integers(2, 6))
    stretch = 4 if style == "strata" else 1  # strata: features four times wider than tall
    field = _fractal(_rng(n, 1), (work, work), (cells, cells * stretch), int(rng.integers(4, 7)),
                     rng.uniform(0.42, 0.62))
    if style == "cloud":
        t = 0.5 + rng.uniform(0.18, 0.28) * field
    elif style == "ridged":
        t = 1.0 - np.abs(field) * rng.uniform(0.35, 0.5)
    else:
        x, y = _axes(work)
        a = rng.uniform(0, math.pi)
        along = (x * math.cos(a) + y * math.sin(a)) if style == "marble" else y
        t = 0.5 + 0.5 * np.sin(along * (2 * math.pi * rng.uniform(1.5, 4.0)) + rng.uniform(0.8, 2.0) * field)
        t = cv2.pow(np.maximum(t, 0.0), rng.uniform(0.6, 1.6))  # uneven bands look less like a sine
    colours = _palette(rng, int(rng.integers(2, 4)))
    if rng.random() < 0.5:
        colours = colours[::-1]
    return _finish(_ramp(np.clip(t, 0.0, 1.0), colours), n, size, 2.0, rng.uniform(0.0, 0.3))


# ----------------------------------------------------------------------------- gradient


def _gradient(n: int, size: int) -> np.ndarray:
    """Linear gradient at a random angle, or a radial glow around a random centre."""
    rng, work = _rng(n), _work_size(size)
    colours = _palette(rng, int(rng.integers(2, 4)))
    colours = colours[rng.permutation(len(colours))]
    x, y = _axes(work)
    if rng.random() < 0.5:
        a = rng.uniform(0, 2 * math.pi)
        c, s = math.cos(a), math.sin(a)
        t = ((x - 0.5) * c + (y - 0.5) * s) / (abs(c) + abs(s)) + 0.5
    else:
        cx, cy = rng.uniform(0.1, 0.9, 2)
        squash = rng.uniform(0.7, 1.4)  # elliptical glow
        t = np.sqrt((x - cx) ** 2 + ((y - cy) * squash) ** 2) / rng.uniform(0.6, 1.3)
    return _finish(_ramp(np.clip(t, 0.0, 1.0), colours, smooth=True), n, size, 2.5, rng.uniform(0.0, 0.35))


# ----------------------------------------------------------------------------- pattern


def _pattern(n: int, size: int) -> np.ndarray:
    """Stripes, plaid, checkerboard, dots or tiles, at a random scale, angle and phase.

    Edges are drawn from signed distances, so they are anti-aliased at any angle; a random
    edge width stands in for defocus blur at no cost. Each style returns coverage maps and
    the colour that each adds, so one ``cv2.transform`` paints the picture.
    """
    rng = _rng(n)
    style = tuple(_PATTERNS)[rng.integers(len(_PATTERNS))]
    period = rng.uniform(1 / 18, 1 / 5)  # fraction of the side
    angle = (0.0, math.pi / 4, rng.uniform(0, math.pi))[rng.integers(3)]
    soft = rng.uniform(0.05, 0.3) if rng.random() < 0.35 else 0.0  # defocus, as a fraction of the period
    soft_px = max(1.0, soft * period * size)
    x, y = _axes(size)
    c, s = math.cos(angle) / period, math.sin(angle) / period
    u0, v0 = rng.random(2)
    # Pattern coordinates in periods; sums of a row and a column, so one full-size array each.
    u, v = (y * s + np.float32(u0)) + x * c, (y * c + np.float32(v0)) - x * s
    colours = _palette(rng, 3)[rng.permutation(3)].reshape(3, 3)  # one colour per row
    colours = colours.mean(axis=0) + (colours - colours.mean(axis=0)) * 0.75  # repeats are busy: calmer
    maps, mix = _PATTERNS[style](rng, u, v, soft_px / (period * size), colours)
    # cv2.transform is several times faster on three channels than on one or two, so pad the maps
    # to three with repeats of the first, which get zero columns in the matrix.
    src = cv2.merge(maps + maps[:1] * (3 - len(maps)))
    mix = np.concatenate([mix[:, :-1], np.zeros((3, 4 - mix.shape[1]), np.float32), mix[:, -1:]], axis=1)
    return _finish(cv2.transform(src, mix), n, size, 2.0, rng.uniform(0.05, 0.35))


def _mix(base: np.ndarray, *adds: np.ndarray) -> np.ndarray:
    """Matrix for ``cv2.transform``: colour = base + sum_i map_i * adds[i] (colours (3,))."""
    return np.stack(adds + (base,), axis=1).astype(np.float32)


def _band(f: np.ndarray, duty: float, edge: float) -> np.ndarray:
    """Coverage of stripes ``duty`` periods wide, centred on half-periods of ``f`` (in periods)."""
    d = np.floor(f)
    np.subtract(f, d, out=d)
    d -= 0.5
    np.abs(d, out=d)
    np.subtract(np.float32(duty / 2), d, out=d)
    return _aa(d, edge)


def _parity(f: np.ndarray) -> np.ndarray:
    """1.0 where floor(f) is odd, else 0.0 (float np.mod is slow)."""
    return (np.floor(f).astype(np.int32) & 1).astype(np.float32)


def _stripes(rng, u, v, edge, colours):
    return [_band(u, rng.uniform(0.2, 0.6), edge)], _mix(colours[0], colours[1] - colours[0])


def _plaid(rng, u, v, edge, colours):
    """Two translucent stripe sets; where they cross the colours stack, as in woven fabric:
    lerp(lerp(c0, c1, a), c2, b) = c0 + a (c1 - c0) + b (c2 - c0) - ab (c1 - c0)."""
    a = _band(u, rng.uniform(0.2, 0.5), edge) * np.float32(rng.uniform(0.4, 0.7))
    b = _band(v, rng.uniform(0.2, 0.5), edge) * np.float32(rng.uniform(0.3, 0.6))
    d1 = colours[1] - colours[0]
    return [a, b, a * b], _mix(colours[0], d1, colours[2] - colours[0], -d1)


def _checker(rng, u, v, edge, colours):
    a, b = _band(u, 0.5, edge), _band(v, 0.5, edge)
    return [a + b - 2 * a * b], _mix(colours[0], colours[1] - colours[0])  # soft XOR: corners stay smooth


def _dots(rng, u, v, edge, colours):
    """Dots on a square or hexagonal lattice."""
    if rng.random() < 0.5:
        v = v / np.float32(0.866)  # hexagonal rows are sqrt(3)/2 periods apart
        u = u + 0.5 * _parity(v)
    du, dv = u - np.floor(u) - 0.5, v - np.floor(v) - 0.5
    dist = np.sqrt(du * du + dv * dv)
    return [_aa(np.float32(rng.uniform(0.15, 0.38)) - dist, edge)], _mix(colours[0], colours[1] - colours[0])


def _tiles(rng, u, v, edge, colours):
    """Square or brick-bond tiles with grout (colour 0), each tile a slightly different shade of
    colour 1: colour = c0 + m (c1 - c0) + m shade c1."""
    aspect = float(rng.choice([1.0, 2.0, 3.0]))
    row = np.floor(v)
    ut = u / np.float32(aspect)
    if aspect > 1 or rng.random() < 0.3:
        ut += 0.5 * _parity(v)  # running bond: odd rows shifted half a tile
    col = np.floor(ut)
    fu, fv = (ut - col) * np.float32(aspect), v - row
    inside = np.minimum(np.minimum(fu, aspect - fu), np.minimum(fv, 1.0 - fv))
    inside -= np.float32(rng.uniform(0.02, 0.06))
    shades = rng.uniform(-1.0, 1.0, 256).astype(np.float32) * np.float32(rng.uniform(0.04, 0.12))
    # Tile (row, col) -> shade through a 16 x 16 table: "& 15" is a mod 16 that also works below zero.
    shade = np.take(shades, (row.astype(np.int32) & 15) * 16 + (col.astype(np.int32) & 15))
    m = _aa(inside, edge)
    return [m, m * shade], _mix(colours[0], colours[1] - colours[0], colours[1])


_PATTERNS: dict[str, Callable] = {"stripes": _stripes, "plaid": _plaid, "checker": _checker,
                                  "dots": _dots, "tiles": _tiles}


# ----------------------------------------------------------------------------- horizon

_SKIES = {  # mood -> (zenith hsv ranges, horizon hsv ranges, light on the land)
    "day": (((0.56, 0.61), (0.4, 0.65), (0.65, 0.85)), ((0.54, 0.6), (0.1, 0.25), (0.88, 0.97)), 1.0),
    "golden": (((0.58, 0.64), (0.3, 0.5), (0.6, 0.8)), ((0.06, 0.11), (0.3, 0.5), (0.9, 0.98)), 0.85),
    "overcast": (((0.55, 0.62), (0.04, 0.12), (0.6, 0.75)), ((0.55, 0.62), (0.02, 0.07), (0.82, 0.9)), 0.8),
    "dusk": (((0.64, 0.72), (0.35, 0.55), (0.3, 0.45)), ((0.0, 0.07), (0.4, 0.6), (0.8, 0.92)), 0.6),
}
_LANDS = {  # terrain -> (hue, saturation, value ranges, texture contrast)
    "grass": ((0.2, 0.3), (0.4, 0.65), (0.35, 0.55), 0.3),
    "dry": ((0.1, 0.15), (0.3, 0.5), (0.5, 0.7), 0.25),
    "sand": ((0.08, 0.12), (0.2, 0.38), (0.68, 0.82), 0.15),
    "dirt": ((0.05, 0.09), (0.3, 0.5), (0.3, 0.45), 0.28),
    "rock": ((0.55, 0.65), (0.04, 0.12), (0.35, 0.55), 0.3),
    "snow": ((0.55, 0.62), (0.02, 0.08), (0.85, 0.95), 0.08),
}
_SILHOUETTES = {  # style -> (cells across, octaves, height range as a fraction of the side)
    "hills": ((3, 6), 3, (0.03, 0.12)),
    "mountains": ((4, 8), 5, (0.08, 0.22)),
    "trees": ((40, 80), 2, (0.015, 0.04)),
}
_TILE = 256
"""Side of the ground texture tile, texels."""


def _land_colour(rng: np.random.Generator, light: float, terrain: str | None = None) -> np.ndarray:
    """A terrain colour (random terrain unless given), dimmed by the sky's ``light``."""
    terrain = terrain or tuple(_LANDS)[rng.integers(len(_LANDS))]
    return _hsv(*(rng.uniform(lo, hi) for lo, hi in _LANDS[terrain][:3])) * light


def _horizon(n: int, size: int) -> np.ndarray:
    """Sky over a ground plane in perspective, with optional sun, clouds, hills and a tree line."""
    rng, work = _rng(n), _work_size(size)
    mood = ("day", "day", "golden", "overcast", "dusk")[rng.integers(5)]
    zen_r, hor_r, light = _SKIES[mood]
    zenith, horizon = (_hsv(*(rng.uniform(lo, hi) for lo, hi in r)) for r in (zen_r, hor_r))
    terrain = tuple(_LANDS)[rng.integers(len(_LANDS))]
    ground = _land_colour(rng, light, terrain)
    haze = horizon * 0.8 + ground * 0.2  # air colour in the distance, a little of the land in it
    hz = rng.uniform(0.35, 0.62)  # horizon height, fraction of the side from the top
    rows = int(math.ceil(hz * work))
    sky = _sky(rng, work, rows, hz, zenith, horizon, mood)
    _hills(rng, sky, hz, light, haze)
    land = _ground(rng, work, rows, hz, ground, haze, _LANDS[terrain][3])
    return _finish(np.concatenate([sky, land], axis=1), n, size, 2.0, rng.uniform(0.0, 0.25))


def _sky(rng, size, rows, hz, zenith, horizon, mood) -> np.ndarray:
    """Sky rows, planar (3, rows, size): gradient zenith -> horizon, then sun glow and clouds."""
    x, y = _axes(size)
    y = y[:rows]
    sky = _ramp(np.broadcast_to((y / hz) ** rng.uniform(0.6, 1.4), (rows, size)), np.stack([zenith, horizon]))
    if mood != "overcast" and rng.random() < 0.6:
        low = mood in ("golden", "dusk")
        sx, sy = rng.uniform(0.1, 0.9), hz * (rng.uniform(0.7, 0.95) if low else rng.uniform(0.15, 0.6))
        d = np.sqrt((x - sx) ** 2 + (y - sy) ** 2)
        sun = _hsv(rng.uniform(0.04, 0.1) if low else 0.13, 0.6 if low else 0.15, 1.0)
        glow = np.exp(-(d / rng.uniform(0.08, 0.2)) ** 2) * rng.uniform(0.4, 0.8)
        glow = np.maximum(glow, _aa(rng.uniform(0.012, 0.03) - d, 1.5 / size))
        sky = _lerp(sky, sun, glow)
    if rng.random() < 0.65:
        cells = int(rng.integers(3, 7))
        field = _fractal(rng, (rows, size), (cells, max(1, round(cells * hz * 2.5))), 5, 0.5)
        cover = _smoothstep((field - rng.uniform(-0.2, 1.2)) / rng.uniform(0.8, 1.6))
        tint = {"day": 0.9, "golden": 0.75, "overcast": 0.55, "dusk": 0.45}[mood]
        cloud = horizon * (1 - tint) + tint
        sky = _lerp(sky, cloud * (1 - 0.15 * cover[None]), cover * rng.uniform(0.5, 0.9))
    return sky


def _hills(rng, sky, hz, light, haze) -> None:
    """Paint 0-2 silhouettes (far hills or mountains, then near hills or a tree line) onto ``sky``
    in place. Farther layers take more of the haze colour, as distant land does."""
    rows, size = sky.shape[1:]
    y = _axes(size)[1][:rows]
    for layer in range(int(rng.integers(0, 3))):
        style = tuple(_SILHOUETTES)[rng.integers(3) if layer else rng.integers(2)]
        cells, octaves, height = _SILHOUETTES[style]
        profile = _fractal(rng, (1, size), (int(rng.integers(*cells)), 1), octaves, 0.5)[0]
        if style == "mountains":
            profile = -np.abs(profile)  # ridged peaks
        profile = (profile - profile.min()) / (np.ptp(profile) + 1e-6)
        top = hz - np.minimum(hz * 0.7, rng.uniform(*height) * (0.3 + 0.7 * profile) + 0.01)
        far = rng.uniform(0.35, 0.6) if layer == 0 else rng.uniform(0.1, 0.3)
        body = _land_colour(rng, light, "grass" if style == "trees" else None) * (0.6 if style == "trees" else 0.85)
        foot = np.clip((y - top) / (hz - top), 0, 1)  # 0 at the crest, 1 at the horizon: haze pools low
        colour = _ramp(np.broadcast_to(foot, (rows, size)),
                       np.stack([body + (haze - body) * far, body + (haze - body) * min(1.0, far + 0.25)]))
        sky[:] = _lerp(sky, colour, _aa(y - top[None, :], 1.0 / size))


def _mipmaps(tile: np.ndarray, levels: int) -> list[np.ndarray]:
    """Pyramid of a tileable ``tile``: level l is 2^l times smaller (wrap-padded before each
    pyrDown, so every level still tiles), and the last level is flat. Texture seen with a
    footprint of 2^l texels per pixel reads level l without aliasing."""
    out = [tile]
    for _ in range(1, levels - 1):
        out.append(cv2.pyrDown(np.pad(out[-1], 4, mode="wrap"))[2:-2, 2:-2])
    return out + [np.zeros((1, 1), np.float32)]


def _ground(rng, size, rows, hz, ground, haze, contrast) -> np.ndarray:
    """Ground rows, planar (3, size - rows, size): a noise texture laid on a plane seen in perspective,
    filtered by distance (mipmaps) and fading into haze at the horizon."""
    tile = _fractal(rng, (_TILE, _TILE), (8, 8), 5, rng.uniform(0.6, 0.75), wrap=True)
    if rng.random() < 0.25:  # furrows or planks running away from the viewer, edges 2 texels soft
        per_tile = int(rng.integers(4, 12))
        f = np.arange(_TILE, dtype=np.float32) * (per_tile / _TILE)  # in furrow periods
        tile = tile * 0.6 + 1.4 * (_band(f, rng.uniform(0.4, 0.8), 2.0 * per_tile / _TILE) - 0.5)
    levels = _mipmaps(tile, 7)
    x = _axes(size)[0] - 0.5
    dy = _axes(size)[1][rows:, 0] - hz  # > 0: distance below the horizon, image sides
    reach = rng.uniform(0.4, 1.2)  # tiles across the image one image side below the horizon: texture scale
    tex = np.zeros((len(dy), size), np.float32)
    # The same tile at a second, incommensurate scale hides the repeats a single tile shows in the distance.
    for scale, weight in ((1.0, 0.8), (0.31, 0.6)):
        depth = (reach * scale / dy)[:, None]
        mapx = _wrap(x * (depth * _TILE) + np.float32(rng.uniform(0, _TILE)), _TILE)
        mapy = np.broadcast_to(_wrap(depth * _TILE + rng.uniform(0, _TILE), _TILE), mapx.shape).astype(np.float32)
        # Texels per pixel: across grows as 1/dy, along as 1/dy^2; their geometric mean picks the level.
        level = np.log2(np.maximum(reach * scale * _TILE / (size * dy ** 1.5), 1.0))
        tex += weight * _sample_levels(levels, mapx, mapy, level)
    h, s, v = colorsys.rgb_to_hsv(*ground.ravel())
    shades = np.stack([_hsv(h + 0.015, s * 1.1, v * 0.7), ground, _hsv(h - 0.02, s * 0.9, v * 1.2)])  # hue varies too
    t = 0.5 + 0.5 * contrast * tex - rng.uniform(0.0, 0.3) * (dy[:, None] / (1.0 - hz))  # darker foreground
    land = _ramp(np.clip(t, 0.0, 1.0), shades)
    mist = np.exp(-dy / rng.uniform(0.02, 0.07))
    return _lerp(land, haze, mist[:, None])


def _sample_levels(levels: list[np.ndarray], mapx, mapy, level: np.ndarray) -> np.ndarray:
    """Sample mip ``levels`` at (mapx, mapy), row r blending levels floor(level[r]) and the next.
    ``level`` grows monotonically down-to-up, so each integer level is one band of rows."""
    level = np.clip(level, 0.0, len(levels) - 1.001)
    lo = level.astype(np.intp)
    out = np.empty(mapx.shape, np.float32)
    for lv in np.unique(lo):
        band = np.flatnonzero(lo == lv)
        rows = slice(band[0], band[-1] + 1)
        a, b = (_remap(levels[i], mapx[rows], mapy[rows]) for i in (lv, lv + 1))
        out[rows] = a + (b - a) * (level[rows] - lv)[:, None]
    return out


def _remap(level: np.ndarray, mapx: np.ndarray, mapy: np.ndarray) -> np.ndarray:
    """Sample a pyramid level at level-0 texel coordinates (bilinear, wrapping)."""
    if level.shape == (1, 1):
        return np.full(mapx.shape, level[0, 0], np.float32)
    k = np.float32(level.shape[1] / _TILE)
    # Pixel centres: texel u of level 0 is at u * k - 0.5 + k / 2 of a level k times smaller.
    return cv2.remap(level, mapx * k + (k / 2 - 0.5), mapy * k + (k / 2 - 0.5), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_WRAP)


_PROCEDURAL: dict[str, Callable[[int, int], np.ndarray]] = {
    "noise": _noise, "gradient": _gradient, "pattern": _pattern, "horizon": _horizon}


# ----------------------------------------------------------------------------- photos


_PHOTO_CACHE: dict[str, np.ndarray] = {}


def _packaged(name: str) -> np.ndarray:
    """A packaged photo, uint8 (h, w, 3) colour or (h, w) grey, loaded once per process."""
    if name not in _PHOTO_CACHE:
        if name in ("china", "flower"):
            from sklearn.datasets import load_sample_image

            img = load_sample_image(f"{name}.jpg")
        else:
            import skimage.data

            img = getattr(skimage.data, name)()
        img = np.ascontiguousarray(img, dtype=np.uint8)
        img.setflags(write=False)  # shared by every draw: never modified in place
        _PHOTO_CACHE[name] = img
    return _PHOTO_CACHE[name]


def _crop(img: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Random square crop (side ``CROP_SCALE`` of the short side, random place, maybe mirrored)
    resized to (size, size). Drawn in fractions, so it is the same crop at any decode size."""
    h, w = img.shape[:2]
    side = max(1, round(min(h, w) * rng.uniform(*CROP_SCALE)))
    x0, y0 = round(rng.random() * (w - side)), round(rng.random() * (h - side))
    crop = img[y0:y0 + side, x0:x0 + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = np.ascontiguousarray(crop)
    if side == size:
        return crop.copy() if np.shares_memory(crop, img) else crop
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


def _photo(name: str, n: int, size: int) -> np.ndarray:
    """Crop of a packaged photo; grey textures get a natural tint (a dark-to-light colour ramp)."""
    out = _crop(_packaged(name), _rng(n), size)
    if out.ndim == 3:
        return out
    rng = _rng(n, 1)
    (h0, h1), (s0, s1) = _TINTS[name]
    hue, sat = rng.uniform(h0, h1), rng.uniform(s0, s1)
    g = np.linspace(0.0, 1.0, 256)
    lut = np.stack([_hsv(hue + 0.03 * (1 - t), sat * (1.1 - 0.5 * t), 0.06 + 0.9 * t).ravel() for t in g])
    lut = np.clip(lut * 255 + 0.5, 0, 255).astype(np.uint8).reshape(1, 256, 3)
    return cv2.LUT(cv2.merge([out, out, out]), lut)

"""Procedural 3D subjects: seeded compositions of primitives, rendered by vectorised ray casting.

A subject is a handful of ellipsoids, boxes and capped cylinders with colours and
object-space textures, arranged after an archetype ("snowman", "desk lamp", ...) with
proportions, colours and details drawn from a seed, so the supply of identities is unbounded.
``render`` draws it under any 3D rotation with orthographic projection and returns an
exact supersampled coverage mask, so every pose is a real 3D view: parts occlude each
other, shading follows the fixed light, and the texture turns with the object. On request
(``markers``) a subject also carries two orientation markers (a magenta ball out of its front, a
cyan one out of its back), so its yaw is visible and means the same thing across identities.

Conventions (object and view space alike): x to the right, y up, z towards the viewer;
an archetype's front faces +z, its base rests near y = 0. Angles are degrees. Pose
(yaw, pitch, roll) = object rotation ``Rz(roll) @ Rx(pitch) @ Ry(yaw)``: positive yaw
turns the front to the viewer's right, positive pitch tilts the top towards the viewer
(a view from above), positive roll turns the image counter-clockwise.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

KINDS = ("ellipsoid", "box", "cylinder")
TEXTURES = ("plain", "stripes", "checker", "dots", "noise")
FILL = 0.47
"""Radius of the subject's bounding sphere on the canvas, as a fraction of the image side."""


@dataclass(frozen=True)
class Primitive:
    """One solid part of a subject. Lengths are object units, angles degrees, colours 0..255 sRGB."""

    kind: str
    """"ellipsoid" | "box" | "cylinder" (capped, axis = local z)."""
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    """Radii (ellipsoid), half-extents (box), (radius x, radius y, half-height) (cylinder)."""
    rotation: tuple[float, float, float]
    """Local Euler angles about x, then y, then z: local -> object is ``Rz @ Ry @ Rx``."""
    color: tuple[int, int, int]
    color2: tuple[int, int, int]
    """The texture's second colour (unused by "plain")."""
    texture: str
    """"plain" | "stripes" | "checker" | "dots" | "noise", evaluated in the part's local frame."""
    texture_scale: float
    """Texture frequency, cycles per object unit."""
    shininess: float
    """Blinn-Phong exponent; 0 = matte (no highlight)."""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown primitive kind {self.kind!r}; known: {KINDS}")
        if self.texture not in TEXTURES:
            raise ValueError(f"unknown texture {self.texture!r}; known: {TEXTURES}")
        if min(self.size) <= 0:
            raise ValueError(f"primitive sizes must be positive, got {self.size}")


@dataclass(frozen=True)
class ProceduralSubject:
    """A seeded subject: its class noun and colour word (for captions) and its parts."""

    seed: int
    class_name: str
    color_name: str
    """Plain English name of the dominant colour, e.g. "red"."""
    primitives: tuple[Primitive, ...]

    def to_json(self) -> dict:
        """JSON-serialisable description: class, colour, seed, number and kinds of primitives."""
        kinds = Counter(p.kind for p in self.primitives)
        return {
            "seed": int(self.seed),
            "class_name": self.class_name,
            "color_name": self.color_name,
            "num_primitives": len(self.primitives),
            "primitive_kinds": {k: kinds[k] for k in KINDS if kinds[k]},
        }


# ----------------------------------------------------------------------------- rotations


def _rx(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def euler_matrix(rotation: tuple[float, float, float]) -> np.ndarray:
    """Local -> object rotation of a primitive: angles about x, y, z (degrees), applied in that order."""
    rx, ry, rz = rotation
    return _rz(rz) @ _ry(ry) @ _rx(rx)


def pose_matrix(rotation: tuple[float, float, float]) -> np.ndarray:
    """Object -> view rotation for (yaw, pitch, roll) degrees: yaw first, then pitch, then roll."""
    yaw, pitch, roll = rotation
    return _rz(roll) @ _rx(pitch) @ _ry(yaw)


def _along(direction) -> tuple[float, float, float]:
    """Euler angles that turn a primitive's local +z axis onto ``direction``."""
    d = np.asarray(direction, float)
    d = d / np.linalg.norm(d)
    return (-math.degrees(math.asin(float(np.clip(d[1], -1, 1)))), math.degrees(math.atan2(d[0], d[2])), 0.0)


UP = _along((0, 1, 0))
"""Rotation that stands a cylinder upright (local z -> object y)."""


# ----------------------------------------------------------------------------- bounds


def _fibonacci_sphere(n: int) -> np.ndarray:
    """n nearly evenly spread unit vectors."""
    i = np.arange(n) + 0.5
    y = 1 - 2 * i / n
    r = np.sqrt(1 - y * y)
    phi = i * math.pi * (3 - math.sqrt(5))
    return np.stack([r * np.cos(phi), y, r * np.sin(phi)], axis=1)


def _extreme_points(p: Primitive) -> np.ndarray:
    """Object-space points whose farthest one from any centre bounds the primitive.

    Exact for boxes (corners); cylinders use their rims, ellipsoids a dense surface sample
    (both off by well under 1 %, which the bounding sphere's margin covers).
    """
    if p.kind == "box":
        local = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * p.size
    elif p.kind == "cylinder":
        a = np.linspace(0, 2 * math.pi, 96, endpoint=False)
        rim = np.stack([np.cos(a) * p.size[0], np.sin(a) * p.size[1], np.full_like(a, p.size[2])], axis=1)
        local = np.concatenate([rim, rim * (1, 1, -1)])
    else:
        half = _fibonacci_sphere(200)
        local = np.concatenate([half, -half]) * p.size  # antipodal pairs: symmetric parts get exact centres
    return local @ euler_matrix(p.rotation).T + p.center


@lru_cache(maxsize=1024)
def bounding_sphere(primitives: tuple[Primitive, ...]) -> tuple[tuple[float, float, float], float]:
    """(centre, radius) of a near-minimal sphere around all primitives, object units.

    Pose-independent, so a subject keeps one scale and one pivot in every view. The
    centre is refined by Badoiu-Clarkson steps towards the farthest point; the radius
    gets a 1 % margin for the sampled (curved) surfaces.
    """
    pts = np.concatenate([_extreme_points(p) for p in primitives])
    centre = (pts.min(axis=0) + pts.max(axis=0)) / 2
    best, best_r = centre.copy(), np.linalg.norm(pts - centre, axis=1).max()
    for i in range(1, 200):
        far = pts[np.argmax(((pts - centre) ** 2).sum(axis=1))]
        centre = centre + (far - centre) / (i + 1)
        r = np.linalg.norm(pts - centre, axis=1).max()
        if r < best_r:
            best, best_r = centre.copy(), r
    return tuple(float(v) for v in best), float(best_r * 1.01)


def _part_radius(p: Primitive) -> float:
    """Radius of a sphere around the primitive's centre that contains it (for screen culling)."""
    sx, sy, sz = p.size
    if p.kind == "ellipsoid":
        return max(p.size)
    if p.kind == "cylinder":
        return math.hypot(max(sx, sy), sz)
    return math.sqrt(sx * sx + sy * sy + sz * sz)


# ----------------------------------------------------------------------------- ray / primitive hits
# Rays are orthographic: one direction d for all, origins o = (ox, oy, oz) as broadcastable
# arrays, both in the primitive's local frame. Each returns the entry distance t (inf = miss);
# all origins lie outside the subject, so the entry is the visible surface.


def _slab(o: np.ndarray, d: float, half: float, lo, hi):
    """Narrow the interval [lo, hi] to where the ray lies within |coordinate| <= half."""
    if abs(d) < 1e-9:  # parallel to the slab: inside for all t, or never
        outside = np.abs(o) > half
        return np.where(outside, np.inf, lo), hi
    t1, t2 = (-half - o) / d, (half - o) / d
    if d < 0:
        t1, t2 = t2, t1
    return np.maximum(lo, t1), np.minimum(hi, t2)


def _hit_ellipsoid(o, d, size):
    """Quadratic on the unit sphere after scaling the local frame by 1/radii."""
    ox, oy, oz = (o[i] / size[i] for i in range(3))
    dx, dy, dz = (d[i] / size[i] for i in range(3))
    a = dx * dx + dy * dy + dz * dz
    b = ox * dx + oy * dy + oz * dz
    disc = b * b - a * (ox * ox + oy * oy + oz * oz - 1)
    return np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / a, np.inf)


def _hit_box(o, d, size):
    lo, hi = -np.inf, np.inf
    for i in range(3):
        lo, hi = _slab(o[i], d[i], size[i], lo, hi)
    return np.where(lo <= hi, lo, np.inf)


def _hit_cylinder(o, d, size):
    """Infinite elliptic cylinder (quadratic in x, y) intersected with the slab |z| <= half-height."""
    ox, oy = o[0] / size[0], o[1] / size[1]
    dx, dy = d[0] / size[0], d[1] / size[1]
    a = dx * dx + dy * dy
    c = ox * ox + oy * oy - 1
    if a < 1e-12:  # ray along the axis: inside the tube for all t, or never
        lo, hi = np.where(c <= 0, -np.inf, np.inf), np.inf
    else:
        b = ox * dx + oy * dy
        disc = b * b - a * c
        root = np.sqrt(np.maximum(disc, 0))
        lo = np.where(disc >= 0, (-b - root) / a, np.inf)
        hi = (-b + root) / a
    lo, hi = _slab(o[2], d[2], size[2], lo, hi)
    return np.where(lo <= hi, lo, np.inf)


_HITS = {"ellipsoid": _hit_ellipsoid, "box": _hit_box, "cylinder": _hit_cylinder}


def _normal_local(kind: str, p, size):
    """Outward surface normals (unnormalised) at local surface points; p and result are (x, y, z) arrays."""
    px, py, pz = p
    sx, sy, sz = (np.float32(v) for v in size)
    if kind == "ellipsoid":
        return px / (sx * sx), py / (sy * sy), pz / (sz * sz)
    zero = np.zeros_like(px)
    if kind == "box":  # the face is the axis along which the point is outermost
        qx, qy, qz = np.abs(px) / sx, np.abs(py) / sy, np.abs(pz) / sz
        on_x = (qx >= qy) & (qx >= qz)
        on_y = ~on_x & (qy >= qz)
        on_z = ~on_x & ~on_y
        return np.where(on_x, np.sign(px), zero), np.where(on_y, np.sign(py), zero), np.where(on_z, np.sign(pz), zero)
    radial = (px / sx) ** 2 + (py / sy) ** 2
    cap = (pz / sz) ** 2 >= radial
    return (np.where(cap, zero, px / (sx * sx)), np.where(cap, zero, py / (sy * sy)),
            np.where(cap, np.sign(pz), zero))


# ----------------------------------------------------------------------------- textures


def _hash01(ix, iy, iz) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point."""
    h = (ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791)
    h = ((h ^ (h >> 13)) * 1274126177) & 0x7FFFFFFF
    return (((h ^ (h >> 16)) & 0xFFFF) * (1 / 65536.0)).astype(np.float32)


def _value_noise(q) -> np.ndarray:
    """Smooth 3D value noise in [0, 1] at points q = (x, y, z) arrays, lattice spacing 1."""
    cells = [np.floor(c) for c in q]
    u = [(c - f) * (c - f) * (3 - 2 * (c - f)) for c, f in zip(q, cells)]  # smoothstep: no creases at cell borders
    i = [f.astype(np.int64) for f in cells]
    out = np.zeros_like(q[0])
    for cx in (0, 1):
        wx = u[0] if cx else 1 - u[0]
        for cy in (0, 1):
            wxy = wx * (u[1] if cy else 1 - u[1])
            for cz in (0, 1):
                out += wxy * (u[2] if cz else 1 - u[2]) * _hash01(i[0] + cx, i[1] + cy, i[2] + cz)
    return out


def _texture_weight(prim: Primitive, p) -> np.ndarray | None:
    """How much of ``color2`` (0..1) shows at local points p = (x, y, z) arrays; None for plain."""
    s = np.float32(prim.texture_scale)
    # The offset keeps pattern edges off the planes where box faces and caps lie (no flicker).
    q = [c * s + np.float32(0.37) for c in p]
    if prim.texture == "stripes":
        axis = 2 if prim.kind == "cylinder" else 1  # rings around a cylinder, bands across the rest
        return np.clip(0.5 + 3 * np.sin(np.float32(2 * math.pi) * q[axis]), 0, 1)
    if prim.texture == "checker":
        return ((np.floor(q[0]) + np.floor(q[1]) + np.floor(q[2])) % 2).astype(np.float32)
    if prim.texture == "dots":
        f = [c - np.floor(c) - np.float32(0.5) for c in q]
        return np.clip((0.3 - np.sqrt(f[0] * f[0] + f[1] * f[1] + f[2] * f[2])) * 12, 0, 1)
    if prim.texture == "noise":
        n = 0.65 * _value_noise(q) + 0.35 * _value_noise([c * np.float32(2.7) + np.float32(5.1) for c in q])
        return np.clip((n - 0.3) * 2.2, 0, 1)
    return None


# ----------------------------------------------------------------------------- rendering

AMBIENT = 0.2
"""Constant light share; a sky term adds up to 0.15 more on upward faces."""
DIFFUSE = 0.85
SPECULAR = 0.45
"""Peak highlight strength for exponents >= 60 (weaker for broader lobes)."""
# Colours are treated as gamma-2 encoded: shading happens in linear light (colour squared) and
# is encoded back with a square root, so shadows fall off like a real render, at the cost of
# a sqrt instead of a much slower pow(1 / 2.2).


@dataclass
class _Grid:
    """Ray grid of one render: n x n rays, ray (row, col) at view-plane (xs[col], ys[row]), object units."""

    n: int
    xs: np.ndarray
    ys: np.ndarray
    origin: np.ndarray
    """Object-space point where view-plane coordinates (0, 0) lie, in front of the subject."""
    axes: np.ndarray
    """Rows: object-space directions of view x, view y, and the ray direction."""
    pose: np.ndarray
    centre: np.ndarray
    step: float
    """Ray spacing, object units."""


def _make_grid(subject: ProceduralSubject, rotation, size: int, supersample: int) -> _Grid:
    centre, radius = bounding_sphere(subject.primitives)
    centre = np.asarray(centre)
    pose = pose_matrix(rotation)
    n = size * supersample
    step = radius / (FILL * size) / supersample
    coords = ((np.arange(n) + 0.5) - n / 2) * step
    # View-space basis vectors expressed in object space are the rows of the pose matrix.
    axes = np.stack([pose[0], pose[1], -pose[2]])
    origin = centre + 2 * radius * pose[2]
    return _Grid(n, coords.astype(np.float32), (-coords).astype(np.float32), origin, axes, pose, centre, step)


def _window(grid: _Grid, prim: Primitive) -> tuple[slice, slice]:
    """Rows and columns of rays that can hit ``prim`` (its bounding circle on the view plane)."""
    v = grid.pose @ (np.asarray(prim.center) - grid.centre)
    rad = _part_radius(prim) / grid.step + 1
    col, row = v[0] / grid.step + grid.n / 2 - 0.5, -v[1] / grid.step + grid.n / 2 - 0.5
    c0, c1 = max(0, math.floor(col - rad)), min(grid.n, math.ceil(col + rad) + 1)
    r0, r1 = max(0, math.floor(row - rad)), min(grid.n, math.ceil(row + rad) + 1)
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _local_rays(grid: _Grid, prim: Primitive):
    """Ray origins of ``prim``'s local frame as base + x * ax + y * ay (x, y view-plane coordinates),
    and the ray direction d; all float32 3-vectors."""
    rot = euler_matrix(prim.rotation)
    base = (grid.origin - np.asarray(prim.center)) @ rot  # row vector @ R == R.T @ vector
    ax, ay, d = grid.axes @ rot
    return tuple(v.astype(np.float32) for v in (base, ax, ay, d))


def _cast(grid: _Grid, primitives) -> tuple[np.ndarray, np.ndarray, list]:
    """Nearest hit over all primitives: depth (n, n), primitive index (n, n, -1 = none), windows."""
    depth = np.full((grid.n, grid.n), np.inf, np.float32)
    index = np.full((grid.n, grid.n), -1, np.int16)
    windows = []
    for i, prim in enumerate(primitives):
        rows, cols = _window(grid, prim)
        windows.append((rows, cols))
        if rows.start == rows.stop or cols.start == cols.stop:
            continue
        base, ax, ay, d = _local_rays(grid, prim)
        x, y = grid.xs[cols][None, :], grid.ys[rows][:, None]
        o = [base[k] + x * ax[k] + y * ay[k] for k in range(3)]
        t = _HITS[prim.kind](o, d, prim.size)
        closer = t < depth[rows, cols]
        np.copyto(depth[rows, cols], t, where=closer)
        np.copyto(index[rows, cols], i, where=closer)
    return depth, index, windows


def _shade(prim: Primitive, p, to_view: np.ndarray, light: np.ndarray, half: np.ndarray) -> list[np.ndarray]:
    """Encoded colour channels in [0, 1] of ``prim`` at local surface points p, lit in view space."""
    nl = _normal_local(prim.kind, p, prim.size)
    m = to_view.astype(np.float32)
    n = [m[j, 0] * nl[0] + m[j, 1] * nl[1] + m[j, 2] * nl[2] for j in range(3)]
    inv = 1 / np.maximum(np.sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]), np.float32(1e-12))
    n = [c * inv for c in n]
    ndl = n[0] * light[0] + n[1] * light[1] + n[2] * light[2]
    lit = np.float32(AMBIENT + 0.075) + np.float32(0.075) * n[1] + np.float32(DIFFUSE) * np.maximum(ndl, 0)
    spec = 0
    if prim.shininess > 0:
        ndh = np.maximum(n[0] * half[0] + n[1] * half[1] + n[2] * half[2], 0)
        # Broad lobes (low exponents) get a weaker peak, roughly energy-conserving, so glossy flat
        # faces do not wash out whole under the directional light.
        strength = SPECULAR * min(1.0, (prim.shininess + 8) / 68)
        spec = np.where(ndl > 0, ndh ** np.float32(prim.shininess), 0) * np.float32(strength)
    w = _texture_weight(prim, p)
    out = []
    for k in range(3):
        c1, c2 = (np.float32(c[k] / 255) ** 2 for c in (prim.color, prim.color2))
        albedo = c1 if w is None else c1 + (c2 - c1) * w
        out.append(np.sqrt(np.clip(albedo * lit + spec, 0, 1)))
    return out


def render(subject: ProceduralSubject, rotation: tuple[float, float, float], size: int,
           light: tuple[float, float, float] = (0.4, 0.6, 0.7), supersample: int = 2
           ) -> tuple[np.ndarray, np.ndarray]:
    """Render ``subject`` rotated by (yaw, pitch, roll) degrees, orthographic, on a size x size canvas.

    ``light`` is the direction towards the light in view space (x right, y up, z to the
    viewer; default: from the upper right front), normalised here. ``supersample`` s casts
    s x s rays per pixel. Returns (rgb uint8 (size, size, 3), alpha float32 (size, size)):
    alpha is the fraction of a pixel's rays that hit; rgb is the mean colour of those rays
    (not premultiplied, so edges carry no dark fringe) and 0 where alpha is 0. The
    bounding sphere maps to a circle of radius 0.47 * size at the canvas centre, so the
    subject has the same scale in every pose and never touches the border.
    """
    if size < 1 or supersample < 1:
        raise ValueError(f"size and supersample must be >= 1, got {size}, {supersample}")
    grid = _make_grid(subject, rotation, size, supersample)
    depth, index, windows = _cast(grid, subject.primitives)
    light_v = np.asarray(light, np.float64) / np.linalg.norm(light)
    half = light_v + (0, 0, 1)  # Blinn-Phong half vector, viewer along +z
    half /= np.linalg.norm(half)
    light_v, half = light_v.astype(np.float32), half.astype(np.float32)
    planes = np.zeros((3, grid.n * grid.n), np.float32)
    flat_depth = depth.ravel()
    for i, (prim, (rows, cols)) in enumerate(zip(subject.primitives, windows)):
        rr, cc = np.nonzero(index[rows, cols] == i)
        if not len(rr):
            continue
        rr, cc = rr + rows.start, cc + cols.start
        flat = rr * grid.n + cc
        x, y, t = grid.xs[cc], grid.ys[rr], flat_depth[flat]
        base, ax, ay, d = _local_rays(grid, prim)
        p = [base[k] + x * ax[k] + y * ay[k] + t * d[k] for k in range(3)]
        for k, channel in enumerate(_shade(prim, p, grid.pose @ euler_matrix(prim.rotation), light_v, half)):
            planes[k, flat] = channel
    return _resolve(index >= 0, planes.reshape(3, grid.n, grid.n), size, supersample)


def _resolve(hit: np.ndarray, planes: np.ndarray, size: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Average s x s ray blocks: coverage -> alpha, mean colour of the hitting rays -> rgb."""
    # Summing strided sub-grids is much faster than reducing over short reshaped axes.
    count = sum(hit[i::s, j::s].astype(np.float32) for i in range(s) for j in range(s))
    total = sum(planes[:, i::s, j::s] for i in range(s) for j in range(s))
    rgb = total / np.maximum(count, 1)
    rgb8 = np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return np.ascontiguousarray(rgb8), (count / np.float32(s * s)).astype(np.float32)


# ----------------------------------------------------------------------------- subjects

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (200, 35, 35), "orange": (235, 120, 25), "yellow": (242, 200, 35), "green": (55, 155, 65),
    "blue": (40, 90, 205), "purple": (120, 55, 170), "pink": (238, 120, 170), "white": (236, 236, 230),
    "black": (38, 38, 42), "brown": (125, 78, 42), "grey": (135, 138, 142), "teal": (25, 150, 150),
}
"""Named base colours; subjects jitter them slightly, names stay true for captions."""

BRIGHT = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "teal")


def _rgb(v) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.clip(np.round(v), 0, 255))


def _r4(v) -> tuple[float, ...]:
    """Plain floats rounded to 4 decimals: short, stable numbers in JSON and hashes."""
    return tuple(round(float(x), 4) for x in v)


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return _rgb((1 - t) * np.asarray(a, float) + t * np.asarray(b, float))


@dataclass(frozen=True)
class _Material:
    """Surface fields of a Primitive, shared by the parts of one subject that look alike."""

    color: tuple[int, int, int]
    color2: tuple[int, int, int] = (255, 255, 255)
    texture: str = "plain"
    texture_scale: float = 1.0
    shininess: float = 0.0


class _Builder:
    """Collects primitives for one subject; all randomness comes from ``rng``."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.parts: list[Primitive] = []

    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def colour(self, name: str) -> tuple[int, int, int]:
        """The named colour, jittered a little per subject."""
        return _rgb(np.asarray(PALETTE[name]) + self.rng.integers(-12, 13, size=3))

    def matte(self, name_or_rgb, shininess: float = 0.0) -> _Material:
        rgb = self.colour(name_or_rgb) if isinstance(name_or_rgb, str) else name_or_rgb
        return _Material(rgb, rgb, "plain", 1.0, shininess)

    def material(self, name: str, p_plain: float = 0.4, textures=TEXTURES[1:], shiny=(0, 10, 25, 60)) -> _Material:
        """A main-part material: the named colour, often with a texture in a contrasting colour."""
        rgb = self.colour(name)
        shininess = float(self.pick(shiny))
        if self.rng.random() < p_plain:
            return _Material(rgb, rgb, "plain", 1.0, shininess)
        texture = self.pick(textures)
        if texture == "noise":  # mottling in a shade of the same colour reads as a natural surface
            second = _mix(rgb, (0, 0, 0) if sum(rgb) > 300 else (255, 255, 255), self.u(0.2, 0.35))
        else:
            others = [c for c in ("white", "black", "yellow", "red", "blue", "green") if c != name]
            second = self.colour(self.pick(others))
        scale = self.u(3, 6) if texture != "dots" else self.u(3.5, 6)
        return _Material(rgb, second, texture, scale, shininess)

    def add(self, kind: str, center, size, mat: _Material, rotation=(0.0, 0.0, 0.0)) -> None:
        self.parts.append(Primitive(kind, _r4(center), _r4(size), _r4(rotation), mat.color, mat.color2,
                                    mat.texture, round(float(mat.texture_scale), 4), float(mat.shininess)))

    def ball(self, center, radius: float, mat: _Material) -> None:
        self.add("ellipsoid", center, (radius, radius, radius), mat)

    def rod(self, a, b, radius: float, mat: _Material) -> None:
        """A cylinder from point a to point b."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        self.add("cylinder", (a + b) / 2, (radius, radius, np.linalg.norm(b - a) / 2), mat, _along(b - a))

    def disc(self, center, radius: float, half_height: float, mat: _Material, depth_ratio: float = 1.0) -> None:
        """An upright cylinder (axis = y); depth_ratio < 1 flattens it front to back."""
        self.add("cylinder", center, (radius, radius * depth_ratio, half_height), mat, UP)


def _on_sphere(center, radius: float, direction) -> np.ndarray:
    d = np.asarray(direction, float)
    return np.asarray(center, float) + radius * d / np.linalg.norm(d)


def _robot(b: _Builder) -> str:
    name = b.pick(("red", "blue", "yellow", "grey", "white", "teal", "orange", "green"))
    body = b.material(name, p_plain=0.6, textures=("stripes", "checker", "noise"), shiny=(20, 40, 80))
    metal = b.matte(b.pick(("grey", "black", "white")), 30)
    w, h, dep = b.u(0.38, 0.5), b.u(0.42, 0.58), b.u(0.25, 0.32)
    leg = b.u(0.35, 0.5)
    for sx in (-1, 1):
        b.disc((sx * w * 0.5, leg / 2 + 0.05, 0), 0.1, leg / 2, metal)
        b.add("box", (sx * w * 0.5, 0.06, 0.07), (0.14, 0.06, 0.2), body)
    by = leg + h
    b.add("box", (0, by, 0), (w, h, dep), body)
    panel = b.material(b.pick(("white", "black", "yellow")), p_plain=0.3, textures=("checker", "stripes"))
    b.add("box", (0, by + 0.05, dep), (w * 0.5, h * 0.35, 0.025), panel)
    b.add("box", (0, by, -dep - 0.09), (w * 0.6, h * 0.55, 0.1), metal)  # backpack: front and back differ
    hw, hh, hd = b.u(0.24, 0.34), b.u(0.2, 0.27), b.u(0.22, 0.28)
    hy = by + h + 0.07 + hh
    b.disc((0, by + h + 0.04, 0), 0.1, 0.05, metal)
    b.add("box", (0, hy, 0), (hw, hh, hd), body if b.rng.random() < 0.6 else metal)
    eye = b.matte(b.pick(("yellow", "teal", "red", "white")), 80)
    for sx in (-1, 1):
        b.add("ellipsoid", (sx * hw * 0.45, hy + hh * 0.15, hd), (0.065, 0.065, 0.04), eye)
    b.add("box", (0, hy - hh * 0.5, hd), (hw * 0.45, 0.025, 0.02), metal)
    b.rod((0, hy + hh, 0), (0, hy + hh + 0.2, 0), 0.02, metal)
    b.ball((0, hy + hh + 0.22, 0), 0.055, b.matte("red", 60))
    arm = b.u(0.45, 0.6)
    for sx, direction in ((-1, (-0.25, -1, b.u(-0.2, 0.2))), (1, (b.u(0.1, 0.5), b.u(-0.4, 0.6), 1))):
        shoulder = np.array([sx * (w + 0.08), by + h - 0.12, 0])
        hand = _on_sphere(shoulder, arm, direction)
        b.ball(shoulder, 0.1, metal)
        b.rod(shoulder, hand, 0.075, body)
        b.ball(hand, 0.1, metal)
    return name


def _snowman(b: _Builder) -> str:
    snow = _Material(b.colour("white"), _rgb((205, 215, 235)), "noise", b.u(3, 5), 0.0)
    r1 = b.u(0.55, 0.65)
    r2, r3 = r1 * b.u(0.68, 0.78), r1 * b.u(0.48, 0.55)
    y1 = r1
    y2 = y1 + (r1 + r2) * 0.78
    y3 = y2 + (r2 + r3) * 0.82
    for y, r in ((y1, r1), (y2, r2), (y3, r3)):
        b.ball((0, y, 0), r, snow)
    coal = b.matte("black", 20)
    for sx in (-1, 1):
        b.ball(_on_sphere((0, y3, 0), r3 * 0.97, (sx * 0.35, 0.3, 0.88)), 0.045, coal)
    b.add("ellipsoid", _on_sphere((0, y3, 0), r3 + 0.1, (0, -0.05, 1)), (0.045, 0.045, 0.2),
          b.matte("orange"), _along((b.u(-0.2, 0.2), -0.15, 1)))
    for k in range(3):
        b.ball(_on_sphere((0, y2, 0), r2, (0, 0.4 - 0.35 * k, 1)), 0.05, coal)
    accent = b.pick(("red", "blue", "green", "purple", "black", "orange", "teal"))
    hat = b.matte(accent if b.rng.random() < 0.5 else "black", 15)
    tilt = b.u(-14, 14)
    top = np.array([0, y3 + r3 * 0.8, 0])
    b.add("cylinder", top, (r3 * 1.15, r3 * 1.15, 0.03), hat, (-90, 0, tilt))
    up = _rz(tilt) @ np.array([0, 1, 0])
    hat_h = b.u(0.14, 0.24)
    b.add("cylinder", top + up * hat_h, (r3 * 0.72, r3 * 0.72, hat_h), hat, (-90, 0, tilt))
    scarf = b.material(accent, p_plain=0.3, textures=("stripes", "checker"), shiny=(0,))
    neck = y2 + (r2 + r3) * 0.82 * 0.5 + 0.02
    b.disc((0, neck, 0), r3 * 0.98, 0.07, scarf)
    side = b.pick((-1, 1))
    b.add("box", (side * r3 * 0.45, neck - 0.2, r3 * 0.85), (0.08, 0.2, 0.025), scarf, (b.u(-10, 10), 0, side * 8))
    stick = b.matte("brown")
    for sx in (-1, 1):
        root = _on_sphere((0, y2, 0), r2 * 0.9, (sx, 0.25, 0))
        tip = root + np.array([sx * b.u(0.45, 0.6), b.u(-0.1, 0.5), b.u(-0.25, 0.25)])
        b.rod(root, tip, 0.025, stick)
        b.rod(tip * 0.6 + root * 0.4, tip * 0.6 + root * 0.4 + np.array([sx * 0.08, 0.15, 0]), 0.018, stick)
    return "white"


def _mushroom(b: _Builder) -> str:
    name = b.pick(("red", "red", "orange", "brown", "purple", "yellow", "blue"))
    dots = b.colour("white") if name != "white" else b.colour("red")
    cap_mat = (_Material(b.colour(name), dots, "dots", b.u(3.5, 5), float(b.pick((0, 20, 40))))
               if b.rng.random() < 0.7 else b.material(name, p_plain=0.5, textures=("noise",)))
    stem = b.matte(_rgb((235, 228, 205)), 0)
    if b.rng.random() < 0.6:
        moss = b.material("green", 0.2, ("noise",), (0,))
        b.add("ellipsoid", (0, 0.04, 0), (b.u(0.8, 1.0), 0.08, b.u(0.65, 0.85)), moss)

    def one(x: float, z: float, s: float, tilt_x: float, tilt_z: float) -> None:
        r, hh = s * b.u(0.15, 0.22), s * b.u(0.32, 0.45)
        b.disc((x, hh + 0.03, z), r, hh, stem)
        b.ball((x, 0.08 * s, z), r * 1.25, stem)
        cap_r, cap_h = s * b.u(0.55, 0.75), s * b.u(0.25, 0.38)
        b.add("ellipsoid", (x, 2 * hh + cap_h * 0.35, z), (cap_r, cap_h, cap_r), cap_mat, (tilt_x, 0, tilt_z))
        b.add("ellipsoid", (x, 2 * hh + cap_h * 0.05, z), (r * 1.6, cap_h * 0.45, r * 1.6), stem, (tilt_x, 0, tilt_z))

    one(0, 0, 1.0, b.u(-12, 12), b.u(-12, 12))
    side = b.pick((-1, 1))
    one(side * b.u(0.55, 0.7), b.u(0.15, 0.35), b.u(0.4, 0.55), b.u(0, 15), -side * b.u(10, 25))
    return name


def _desk_lamp(b: _Builder) -> str:
    name = b.pick(("red", "black", "white", "yellow", "blue", "green", "teal", "grey"))
    shell = b.matte(name, float(b.pick((30, 60, 100))))
    metal = b.matte("grey", 40)
    base_r = b.u(0.32, 0.42)
    b.disc((0, 0.05, 0), base_r, 0.05, shell)
    b.disc((base_r * 0.55, 0.11, base_r * 0.4), 0.05, 0.02, b.matte("black"))  # switch: breaks the symmetry
    foot = np.array([0, 0.1, -0.05])
    joint = np.array([b.u(-0.1, 0.1), b.u(0.85, 1.05), -b.u(0.2, 0.35)])
    end = joint + np.array([b.u(-0.1, 0.1), b.u(-0.05, 0.2), b.u(0.55, 0.75)])
    b.ball(foot, 0.07, metal)
    b.rod(foot, joint, 0.035, metal)
    b.ball(joint, 0.065, metal)
    b.rod(joint, end, 0.035, metal)
    b.ball(end, 0.06, metal)
    axis = np.array([0, -1, b.u(0.4, 0.8)])
    axis /= np.linalg.norm(axis)
    sr, sh = b.u(0.2, 0.27), b.u(0.14, 0.2)
    b.add("cylinder", end + axis * sh * 0.8, (sr, sr, sh), shell, _along(axis))
    b.add("ellipsoid", end + axis * sh * 0.2, (sr * 0.75, sr * 0.75, sh * 0.9), shell, _along(axis))  # round back
    b.ball(end + axis * sh * 1.85, sr * 0.55, _Material(_rgb((255, 244, 200)), shininess=80))
    return name


def _bottle(b: _Builder) -> str:
    name = b.pick(("green", "blue", "brown", "white", "teal", "red", "purple"))
    glass = b.matte(name, float(b.pick((60, 100))))
    w, dr, hh = b.u(0.3, 0.42), b.u(0.55, 0.8), b.u(0.48, 0.65)
    b.disc((0, hh, 0), w, hh, glass, dr)
    sh = b.u(0.16, 0.26)
    b.add("ellipsoid", (0, 2 * hh, 0), (w, sh, w * dr), glass)
    nr, nh = b.u(0.09, 0.13), b.u(0.15, 0.25)
    b.disc((0, 2 * hh + sh * 0.7 + nh, 0), nr, nh, glass)
    cap_name = b.pick(("red", "yellow", "white", "black", "grey"))
    b.disc((0, 2 * hh + sh * 0.7 + 2 * nh + 0.04, 0), nr * 1.25, 0.06, b.matte(cap_name, 30))
    label = b.material(b.pick(("white", "yellow", "red", "black")), 0.25, ("stripes", "checker", "dots"), (0,))
    b.disc((0, hh * b.u(0.8, 1.0), 0), w * 1.015, hh * b.u(0.3, 0.45), label, dr)
    return name


def _mug(b: _Builder) -> str:
    name = b.pick(BRIGHT + ("white", "black"))
    body = b.material(name, 0.45, ("stripes", "dots", "checker"), (30, 60))
    lift = 0.06 if b.rng.random() < 0.4 else 0.0  # sometimes on a saucer
    r, hh = b.u(0.38, 0.48), b.u(0.36, 0.5)
    if lift:
        b.disc((0, 0.03, 0), r * b.u(1.45, 1.6), 0.03, b.matte("white", 40))
    b.disc((0, lift + hh, 0), r, hh, body)
    b.disc((0, lift + 2 * hh, 0), r * 0.86, 0.004, b.matte(_rgb((60, 35, 20)), 60))  # the drink, level with the rim
    arc_r, tube = b.u(0.2, 0.28), 0.055
    centre = np.array([r - 0.02, lift + hh, 0])
    angles = np.radians(np.linspace(-75, 75, 7))
    pts = [centre + arc_r * np.array([math.cos(a), math.sin(a), 0]) for a in angles]
    handle = b.matte(body.color, body.shininess)
    for p, q in zip(pts[:-1], pts[1:]):
        b.rod(p, q, tube, handle)
    for p in pts[1:-1]:
        b.ball(p, tube, handle)
    return name


def _rocket(b: _Builder) -> str:
    name = b.pick(("white", "red", "grey", "blue", "orange", "yellow"))
    body = b.matte(name, 40)
    accent_name = b.pick([c for c in ("red", "blue", "black", "yellow", "orange", "teal") if c != name])
    accent = b.matte(accent_name, 40)
    r, hh = b.u(0.24, 0.31), b.u(0.55, 0.75)
    base = 0.16
    b.disc((0, base / 2, 0), r * 0.6, base / 2, b.matte("black", 30))
    y0 = base
    b.disc((0, y0 + hh, 0), r, hh, body)
    b.add("ellipsoid", (0, y0 + 2 * hh, 0), (r, b.u(0.38, 0.55), r), accent)
    band = b.material(accent_name, 0.3, ("checker", "stripes"), (40,))
    b.disc((0, y0 + hh * b.u(0.4, 0.7), 0), r * 1.02, 0.07, band)
    b.add("cylinder", (0, y0 + hh * 1.45, r), (0.1, 0.1, 0.03), b.matte("grey", 40), (0, 0, 0))
    b.add("cylinder", (0, y0 + hh * 1.45, r + 0.02), (0.075, 0.075, 0.03), b.matte(_rgb((120, 200, 240)), 100))
    offset = b.u(0, 120)
    fz, fy = b.u(0.18, 0.25), b.u(0.2, 0.28)
    for k in range(3):
        a = offset + 120 * k
        radial = np.array([math.sin(math.radians(a)), 0, math.cos(math.radians(a))])
        b.add("box", radial * (r + fz * 0.8) + (0, y0 + fy * 0.9, 0), (0.025, fy, fz), accent, (b.u(-25, -15), a, 0))
    if b.rng.random() < 0.5:  # a side booster: breaks the body's turn symmetry
        x = b.pick((-1, 1)) * (r + 0.1)
        b.disc((x, y0 + hh * 0.55, 0), 0.1, hh * 0.5, body)
        b.add("ellipsoid", (x, y0 + hh * 1.05, 0), (0.1, 0.18, 0.1), accent)
    return name


def _chair(b: _Builder) -> str:
    name = b.pick(("brown", "brown", "red", "blue", "green", "white", "black", "yellow"))
    wood = (_Material(b.colour(name), _mix(PALETTE[name], (0, 0, 0), 0.35), "noise", b.u(2, 4), 10.0)
            if name == "brown" else b.matte(name, float(b.pick((0, 20)))))
    w, d, seat_y = b.u(0.42, 0.5), b.u(0.38, 0.46), b.u(0.8, 0.95)
    leg = b.u(0.035, 0.05)
    b.add("box", (0, seat_y, 0), (w, 0.05, d), wood)
    for sx in (-1, 1):
        for sz in (-1, 1):
            half = (seat_y - 0.05) / 2
            b.add("box", (sx * (w - leg - 0.02), half, sz * (d - leg - 0.02)), (leg, half, leg), wood)
    back_h = b.u(0.7, 0.9)
    lean = b.u(6, 14)
    up = _rx(-lean) @ np.array([0, 1, 0])
    for sx in (-1, 1):
        root = np.array([sx * (w - leg - 0.02), seat_y, -(d - leg - 0.02)])
        b.add("box", root + up * back_h / 2, (leg, back_h / 2, leg), wood, (-lean, 0, 0))
    slats = int(b.rng.integers(1, 4))
    for k in range(slats):
        c = np.array([0, seat_y, -(d - leg - 0.02)]) + up * back_h * (0.92 - 0.22 * k)
        b.add("box", c, (w - 0.02, 0.07 if slats > 1 else 0.16, 0.025), wood, (-lean, 0, 0))
    if b.rng.random() < 0.5:
        cushion = b.material(b.pick([c for c in BRIGHT if c != name]), 0.3, ("checker", "stripes", "dots"), (0,))
        b.add("ellipsoid", (0, seat_y + 0.06, 0.02), (w * 0.85, 0.08, d * 0.85), cushion)
    return name


def _cactus(b: _Builder) -> str:
    green = b.colour("green")
    skin = (_Material(green, _rgb((240, 235, 190)), "dots", b.u(6, 9), 10.0) if b.rng.random() < 0.6
            else _Material(green, _mix(green, (0, 0, 0), 0.35), "noise", b.u(4, 7), 10.0))
    pot_name = b.pick(("orange", "brown", "white", "blue", "pink", "yellow"))
    pot = b.material(pot_name, 0.6, ("stripes", "checker"), (0, 20))
    pr, ph = b.u(0.35, 0.45), b.u(0.25, 0.35)
    b.disc((0, ph, 0), pr, ph, pot)
    b.disc((0, 2 * ph, 0), pr * 1.1, 0.06, pot)
    b.disc((0, 2 * ph + 0.065, 0), pr * 0.98, 0.01, b.matte(_rgb((70, 45, 30))))
    tr, th = b.u(0.17, 0.23), b.u(0.5, 0.75)
    y0 = 2 * ph + 0.05
    b.disc((0, y0 + th, 0), tr, th, skin)
    b.ball((0, y0 + 2 * th, 0), tr, skin)
    sides = [b.pick((-1, 1))]
    if b.rng.random() < 0.6:
        sides.append(-sides[0])
    for k, sx in enumerate(sides):
        ar = tr * b.u(0.6, 0.75)
        y = y0 + th * (b.u(0.7, 1.0) if k == 0 else b.u(1.1, 1.4))
        elbow = np.array([sx * b.u(0.3, 0.4), y, b.u(-0.1, 0.1)])
        b.rod((0, y, 0), elbow, ar, skin)
        b.ball(elbow, ar, skin)
        tip = elbow + np.array([0, b.u(0.25, 0.45), 0])
        b.rod(elbow, tip, ar, skin)
        b.ball(tip, ar, skin)
    if b.rng.random() < 0.5:
        flower = b.matte(b.pick(("pink", "red", "yellow")), 20)
        b.add("ellipsoid", (0, y0 + 2 * th + tr * 0.9, 0), (0.1, 0.07, 0.1), flower)
    return "green"


def _duck(b: _Builder) -> str:
    name = "yellow" if b.rng.random() < 0.5 else b.pick(("red", "blue", "pink", "white", "green", "orange", "purple"))
    body = b.material(name, 0.6, ("dots", "stripes"), (40, 80))
    rx, ry, rz = b.u(0.45, 0.55), b.u(0.34, 0.42), b.u(0.6, 0.72)
    b.add("ellipsoid", (0, ry, 0), (rx, ry, rz), body)
    hr = b.u(0.3, 0.36)
    turn = b.u(-25, 25)
    head = np.array([0, 2 * ry + hr * 0.45, rz * 0.45])
    b.ball(head, hr, body)
    face = _ry(turn)
    beak_name = "orange" if name != "orange" else "red"
    b.add("ellipsoid", head + face @ np.array([0, -0.1 * hr, hr * 0.95]), (hr * 0.5, hr * 0.16, hr * 0.55),
          b.matte(beak_name, 60), (b.u(-5, 10), turn, 0))
    for sx in (-1, 1):
        b.ball(head + face @ (hr * 0.93 * np.array([sx * 0.42, 0.35, 0.83]) / np.linalg.norm([0.42, 0.35, 0.83])),
               0.045, b.matte("black", 80))
        b.add("ellipsoid", (sx * rx * 0.88, ry * 1.1, -0.05), (0.08, ry * 0.5, rz * 0.55), body, (-15, 0, sx * -10))
    b.add("ellipsoid", (0, ry * 1.5, -rz * 0.9), (0.16, 0.1, 0.22), body, (-35, 0, 0))
    return name


def _teddy(b: _Builder) -> str:
    name = b.pick(("brown", "brown", "white", "pink", "grey", "blue", "yellow"))
    fur = _Material(b.colour(name), _mix(PALETTE[name], (0, 0, 0), 0.15), "noise", b.u(9, 13), 0.0)
    light = b.matte(_mix(PALETTE[name], (255, 240, 220), 0.55))
    dark = b.matte("black", 60)
    bx, by, bz = b.u(0.36, 0.48), b.u(0.42, 0.55), b.u(0.3, 0.4)
    body_y = 0.12 + by
    b.add("ellipsoid", (0, body_y, 0), (bx, by, bz), fur)
    b.add("ellipsoid", (0, body_y - 0.03, bz * 0.55), (bx * 0.6, by * 0.6, bz * 0.55), light)  # belly
    hr = b.u(0.3, 0.4)
    head = np.array([0, body_y + by + hr * 0.55, 0.02])
    b.ball(head, hr, fur)
    ear, leg = b.u(0.1, 0.16), b.u(0.22, 0.34)
    for sx in (-1, 1):
        b.add("ellipsoid", head + (sx * hr * 0.72, hr * 0.72, -0.05), (ear, ear, ear * 0.55), fur)
        b.ball(_on_sphere(head, hr * 0.95, (sx * 0.38, 0.25, 0.9)), 0.04, dark)
        foot = np.array([sx * bx * 0.55, 0.14, bz * 0.7 + leg])
        b.add("ellipsoid", (sx * bx * 0.55, 0.14, bz * 0.7 + leg / 2), (0.14, 0.14, leg * 0.75), fur)  # sitting
        b.add("ellipsoid", foot + (0, 0, 0.02), (0.11, 0.11, 0.03), light)
    b.add("ellipsoid", head + (0, -hr * 0.25, hr * 0.85), (hr * 0.42, hr * 0.3, hr * 0.3), light)  # muzzle
    b.add("ellipsoid", head + (0, -hr * 0.15, hr * 1.12), (0.06, 0.04, 0.04), dark)
    wave, arm = b.pick((-1, 1)), b.u(0.3, 0.42)
    for sx in (-1, 1):
        shoulder = np.array([sx * bx * 0.9, body_y + by * 0.55, 0.05])
        if sx == wave:  # one paw up: the bear has a left and a right
            direction = (sx * b.u(0.4, 1.0), 1.0, b.u(0.0, 0.6))
        else:
            direction = (sx * b.u(0.2, 0.5), -1, b.u(0.2, 0.8))
        hand = _on_sphere(shoulder, arm, direction)
        b.add("ellipsoid", (shoulder + hand) / 2, (0.12, 0.12, arm * 0.75), fur, _along(hand - shoulder))
    if b.rng.random() < 0.5:
        bow = b.matte(b.pick([c for c in ("red", "blue", "yellow", "green") if c != name]), 30)  # a bow tie
        neck = np.array([0, body_y + by * 0.82, bz * 0.6 + 0.04])
        for sx in (-1, 1):
            b.add("ellipsoid", neck + (sx * 0.08, 0, 0), (0.09, 0.055, 0.035), bow, (0, 0, sx * 20))
        b.ball(neck + (0, 0, 0.02), 0.04, bow)
    return name


def _house(b: _Builder) -> str:
    name = b.pick(("white", "yellow", "pink", "blue", "green", "orange", "red", "grey"))
    wall = b.material(name, 0.7, ("noise",), (0,))
    roof_name = b.pick([c for c in ("red", "brown", "grey", "black", "blue") if c != name])
    roof = b.material(roof_name, 0.5, ("stripes", "checker"), (0, 20))
    w, h, d = b.u(0.5, 0.65), b.u(0.38, 0.5), b.u(0.5, 0.7)
    b.add("box", (0, h, 0), (w, h, d), wall)
    s = w / math.sqrt(2)
    b.add("box", (0, 2 * h, 0), (s, s, d * 0.998), wall, (0, 0, 45))  # gable prism; its lower half hides in the walls
    slope = w * math.sqrt(2) * 1.08 / 2
    for sx in (-1, 1):
        mid = np.array([sx * w / 2, 2 * h + w / 2, 0]) + np.array([sx, 1, 0]) * 0.03 / math.sqrt(2)
        b.add("box", mid + (sx * 0.03, -0.03, 0), (slope, 0.03, d * 1.1), roof, (0, 0, -sx * 45))
    side = b.pick((-1, 1))
    b.add("box", (side * w * 0.5, 2 * h + w * 0.75, -d * 0.3), (0.08, w * 0.4, 0.08), b.matte("brown"))
    door_x = b.u(-0.25, 0.25) * w
    b.add("box", (door_x, 0.22, d), (0.11, 0.22, 0.02), b.matte(b.pick(("brown", "red", "blue", "green")), 20))
    glass = b.matte(_rgb((150, 200, 235)), 90)
    win_x = door_x + (0.3 if door_x < 0 else -0.3) * w * 1.3
    b.add("box", (win_x, h * 1.05, d), (0.1, 0.09, 0.02), glass)
    for z in (-d * 0.4, d * 0.35):
        b.add("box", (side * w, h * 1.05, z), (0.02, 0.1, 0.1), glass)
    return name


ARCHETYPES: dict[str, Callable[[_Builder], str]] = {
    "robot toy": _robot, "snowman": _snowman, "mushroom": _mushroom, "desk lamp": _desk_lamp,
    "bottle": _bottle, "mug": _mug, "rocket": _rocket, "chair": _chair, "cactus": _cactus,
    "rubber duck": _duck, "teddy bear": _teddy, "toy house": _house,
}
"""Class noun -> builder. A builder adds the parts and returns the dominant colour's name."""


MARKER_COLOR = (235, 20, 235)
"""The front marker's colour (magenta): one colour for every subject, used by no palette colour."""
BACK_MARKER_COLOR = (20, 235, 235)
"""The back marker's colour (cyan), likewise shared by every subject and used by no palette colour."""
MARKER_RADIUS = 0.25
"""Radius of the marker balls, object units (subjects are ~2 units tall)."""


def _orientation_markers(b: _Builder) -> None:
    """A magenta ball on a short stalk sticking out of the subject's front (+z), and a cyan one out of
    its back (-z), at mid height.

    Archetypes face +z, but their fronts look different from one another (a duck's beak, a mug's
    handle side, a lamp's shade), so the front is not one visible thing across identities. The markers
    are: the same two balls, in the same place relative to each subject's body, for every subject. They
    show where the subject faces in every view - magenta in the middle when it faces the viewer (yaw
    near 0), cyan in the middle from the back, magenta on the viewer's right and cyan on the left at
    yaw +90 and the reverse at -90 - so absolute yaw is a visible, identity-independent label (the pose
    label the evaluation's leakage probe reads). Adds parts only; draws no random numbers, so the rest
    of the subject is what its seed gave before.
    """
    pts = np.concatenate([_extreme_points(p) for p in b.parts])
    y = float((pts[:, 1].min() + pts[:, 1].max()) / 2)
    for z, colour in ((float(pts[:, 2].max()) + 2 * MARKER_RADIUS, MARKER_COLOR),
                      (float(pts[:, 2].min()) - 2 * MARKER_RADIUS, BACK_MARKER_COLOR)):
        mat = _Material(colour, colour, "plain", 1.0, 40.0)
        b.rod((0.0, y, 0.0), (0.0, y, z), 0.04, mat)
        b.ball((0.0, y, z), MARKER_RADIUS, mat)


def make_subject(seed: int, markers: bool = False) -> ProceduralSubject:
    """Deterministic subject for ``seed``: archetype, proportions, colours and textures from
    ``numpy.random.default_rng(seed)``. Any seed >= 0 gives a valid subject. ``markers`` adds the
    front and back markers (``_orientation_markers``) that make yaw visible across identities
    (params ``generate.procedural.markers``; default off)."""
    b = _Builder(np.random.default_rng(seed))
    class_name = b.pick(tuple(ARCHETYPES))
    color_name = ARCHETYPES[class_name](b)
    if markers:
        _orientation_markers(b)
    return ProceduralSubject(int(seed), class_name, color_name, tuple(b.parts))


def contact_sheet(seeds, yaws=(0, 60, 120, 200), size: int = 160, pitch: float = 15.0,
                  background: int = 128) -> np.ndarray:
    """RGB uint8 grid for eyeballing: one row per seed, one column per yaw, on flat grey."""
    rows = []
    for seed in seeds:
        subject = make_subject(seed)
        tiles = []
        for yaw in yaws:
            rgb, alpha = render(subject, (yaw, pitch, 0), size)
            a = alpha[..., None]
            tiles.append((rgb * a + background * (1 - a)).astype(np.uint8))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


if __name__ == "__main__":  # python -m spotdiff.generate.sources.procedural [out.png] [seed,seed,...]
    import sys

    import cv2

    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/procedural_sheet.png"
    seeds = [int(s) for s in sys.argv[2].split(",")] if len(sys.argv) > 2 else list(range(10))
    cv2.imwrite(out, contact_sheet(seeds)[..., ::-1])
    print(out, [make_subject(s).class_name for s in seeds])

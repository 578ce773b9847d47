"""Prepare the ground-truth mask benchmark of ``bench/bench_segment.py`` (never downloads anything).

    .venv/bin/python bench/segment_data.py [--horses /work/.mirror/shenshutao+image_segmentation/repo/.git]
                                           [--out bench/data/segment] [--composites 160]

Two sets, written under ``--out`` (git-ignored) as ``<set>/<id>.jpg`` (the photo) and ``<set>/<id>.png``
(its mask, 255 = subject), listed in ``<out>/index.csv``:

* ``weizmann``: the Weizmann Horse Database (Borenstein & Ullman, "Class-specific, top-down
  segmentation", ECCV 2002): 328 real photos of horses, each with a hand-made figure-ground mask. Read
  from a git snapshot of github.com/shenshutao/image_segmentation, commit
  ``2653401d6ea617026895aac17059eb57e017abcb``, folder ``weizmann_horse_db`` (``--horses`` takes that
  repository's git directory, or any folder with ``rgb/`` and ``figure_ground/``). Licence: none stated;
  the authors published it for research. It is not redistributed here: nothing of it is committed.
  The masks come at the size of the database's grey copies; the colour photo is shrunk to that size
  (the same frame: photos whose grey copy does not match are left out and counted).
* ``composite``: cut-outs with exact alpha on real photo backgrounds, made here from what the
  installed packages ship: the project's procedural 3D subjects (``render``: alpha = ray coverage) and
  horses cut from ``weizmann`` by their masks, placed at a seeded scale and position (a fifth of them
  crossing the border, as a subject cut by the frame) on crops of the background bank's photos
  (scikit-learn china/flower, scikit-image brick/grass/gravel, tinted). Mask = the pasted alpha.

Deterministic: the same inputs write the same files.
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import spotdiff  # noqa: E402,F401 -- first: it pins the CPU dispatch of numpy and cv2
import numpy as np  # noqa: E402
import cv2  # noqa: E402
from PIL import Image  # noqa: E402

from spotdiff.generate.background.bank import BackgroundBank  # noqa: E402
from spotdiff.generate.sources.procedural import make_subject, render  # noqa: E402

DEFAULT_HORSES = Path("/work/.mirror/shenshutao+image_segmentation/repo/.git")
HORSES_COMMIT = "2653401d6ea617026895aac17059eb57e017abcb"
COMPOSITE_SIDE = 384
MIN_ALIGN = 0.9
"""Least correlation between the colour photo's grey, shrunk to the mask's size, and the database's
grey copy: below it the two are not the same frame and the photo is left out."""


class _Reader:
    """Files of the horse database: from a git directory (``git show``) or a plain folder."""

    def __init__(self, src: Path):
        self.src = src
        self.git = src.name == ".git" or (src / "HEAD").is_file()
        if self.git:
            self.commit = subprocess.run(["git", "--git-dir", str(src), "rev-parse", "HEAD"], check=True,
                                         capture_output=True, text=True).stdout.strip()

    def names(self) -> list[str]:
        if self.git:
            out = subprocess.run(["git", "--git-dir", str(self.src), "ls-tree", "--name-only", "HEAD",
                                  "weizmann_horse_db/rgb/"], check=True, capture_output=True, text=True).stdout
            return sorted(Path(p).name for p in out.split())
        return sorted(p.name for p in (self.src / "rgb").glob("*.jpg"))

    def read(self, folder: str, name: str) -> Image.Image:
        if self.git:
            data = subprocess.run(["git", "--git-dir", str(self.src), "show", f"HEAD:weizmann_horse_db/{folder}/{name}"],
                                  check=True, capture_output=True).stdout
        else:
            data = (self.src / folder / name).read_bytes()
        return Image.open(io.BytesIO(data))


def _save(out: Path, rgb: np.ndarray, mask: np.ndarray) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(out.with_suffix(".jpg"), quality=92)
    Image.fromarray(mask).save(out.with_suffix(".png"), optimize=True)


def prepare_horses(src: Path, out: Path) -> tuple[list[dict], list[tuple[np.ndarray, np.ndarray]], int]:
    """Rows of the ``weizmann`` set, the (rgb, mask) pairs, and how many photos were left out."""
    reader = _Reader(src)
    if reader.git and reader.commit != HORSES_COMMIT:
        print(f"note: {src} is at {reader.commit}, the benchmark was prepared from {HORSES_COMMIT}")
    rows, pairs, dropped = [], [], 0
    for name in reader.names():
        rgb = np.asarray(reader.read("rgb", name).convert("RGB"))
        fg = np.asarray(reader.read("figure_ground", name).convert("L"))
        grey = np.asarray(reader.read("gray", name).convert("L")).astype(np.float32)
        h, w = fg.shape
        small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        mine = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
        align = float(np.corrcoef(mine.ravel(), grey.ravel())[0, 1]) if grey.shape == mine.shape else 0.0
        if align < MIN_ALIGN:
            dropped += 1
            continue
        mask = np.where(fg >= 128, 255, 0).astype(np.uint8)  # the masks are JPEGs of binary images
        ident = Path(name).stem
        _save(out / "weizmann" / ident, small, mask)
        rows.append({"set": "weizmann", "id": ident, "class": "horse", "source": "Weizmann Horse Database",
                     "licence": "none stated (research)"})
        pairs.append((small, mask))
    return rows, pairs, dropped


def _place(bg: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, rng: np.random.Generator, cut: bool
           ) -> tuple[np.ndarray, np.ndarray]:
    """Paste (rgb, alpha in [0, 1]) onto ``bg`` at a random scale and position; (image, mask uint8)."""
    side = bg.shape[0]
    ys, xs = np.nonzero(alpha > 0.01)
    rgb, alpha = rgb[ys.min():ys.max() + 1, xs.min():xs.max() + 1], alpha[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    f = rng.uniform(0.35, 0.8) * side / max(alpha.shape)
    w, h = max(8, round(alpha.shape[1] * f)), max(8, round(alpha.shape[0] * f))
    rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = np.clip(cv2.resize(alpha.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA), 0, 1)
    if cut:  # cross one border by 10-30% of the subject
        edge = int(rng.integers(4))
        x = rng.uniform(0, side - w) if edge in (0, 1) else (-rng.uniform(0.1, 0.3) * w if edge == 2
                                                          else side - w + rng.uniform(0.1, 0.3) * w)
        y = rng.uniform(0, side - h) if edge in (2, 3) else (-rng.uniform(0.1, 0.3) * h if edge == 0
                                                          else side - h + rng.uniform(0.1, 0.3) * h)
    else:
        x, y = rng.uniform(0.02 * side, max(0.02 * side, 0.98 * side - w)), rng.uniform(0.02 * side, max(0.02 * side, 0.98 * side - h))
    x, y = int(round(x)), int(round(y))
    canvas_a = np.zeros((side, side), np.float32)
    canvas_c = np.zeros((side, side, 3), np.float32)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(side, x + w), min(side, y + h)
    canvas_a[y0:y1, x0:x1] = alpha[y0 - y:y1 - y, x0 - x:x1 - x]
    canvas_c[y0:y1, x0:x1] = rgb[y0 - y:y1 - y, x0 - x:x1 - x]
    a = canvas_a[..., None]
    img = np.clip(canvas_c * a + bg.astype(np.float32) * (1 - a) + 0.5, 0, 255).astype(np.uint8)
    return img, np.clip(canvas_a * 255 + 0.5, 0, 255).astype(np.uint8)


def composite_items(n: int, horses: list[tuple[np.ndarray, np.ndarray]], side: int = COMPOSITE_SIDE, seed: int = 15
                    ) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """``n`` composites (id, class, rgb, mask): even indices procedural renders, odd ones horse cut-outs
    (procedural only when ``horses`` is empty)."""
    bank = BackgroundBank({"photo": 1.0}, side)
    items = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        bg, _ = bank.draw(seed * 100_000 + i)
        cut = rng.random() < 0.2
        if horses and i % 2:
            rgb, mask = horses[int(rng.integers(len(horses)))]
            if rng.random() < 0.5:
                rgb, mask = rgb[:, ::-1], mask[:, ::-1]
            cls, alpha = "horse", mask.astype(np.float32) / 255.0
        else:
            subject = make_subject(int(rng.integers(1 << 30)))
            rot = (float(rng.uniform(-180, 180)), float(rng.uniform(-10, 30)), float(rng.uniform(-15, 15)))
            rgb, alpha = render(subject, rot, side, supersample=2)
            cls = subject.class_name
        img, m = _place(bg, np.ascontiguousarray(rgb), alpha, rng, cut)
        items.append((f"c{i:04d}", cls, img, m))
    return items


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--horses", type=Path, default=DEFAULT_HORSES,
                    help="git directory of shenshutao/image_segmentation, or a folder with rgb/ figure_ground/ gray/")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/data/segment")
    ap.add_argument("--composites", type=int, default=160)
    args = ap.parse_args(argv)

    rows, pairs = [], []
    if args.horses.exists():
        rows, pairs, dropped = prepare_horses(args.horses, args.out)
        print(f"weizmann: {len(rows)} photos ({dropped} left out: colour photo not the grey copy's frame)")
    else:
        print(f"weizmann: {args.horses} not found, set skipped (composites use procedural subjects only)")
    for ident, cls, img, mask in composite_items(args.composites, pairs):
        _save(args.out / "composite" / ident, img, mask)
        rows.append({"set": "composite", "id": ident, "class": cls, "source": "composite (this script)",
                     "licence": "procedural: project; horse cut-outs: as weizmann; backgrounds: packaged photos"})
    print(f"composite: {args.composites} images")
    with (args.out / "index.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CPU time of one ``sam`` segmentation with the real vit_b architecture (random weights, nothing downloaded).

    .venv/bin/python bench/bench_sam.py [--photo PATH] [--side 512] [--device cpu]

Builds ``sam_model_registry["vit_b"]()`` without a checkpoint -- random weights cost
exactly what trained ones do -- wraps it with ``SamSegmenter.from_model`` and times
``__call__`` on one photo resized so its long side is ``--side`` pixels. SAM resizes
every photo to 1024 px on its long side before its image encoder, so the time hardly
depends on ``--side``. Prints the first call (includes one-off kernel warm-up) and a
second call on the same photo, which is the per-image cost in a long run, in ms/image.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import torch  # noqa: E402
from segment_anything import sam_model_registry  # noqa: E402

from spotdiff.common.images import Photo, load_photo  # noqa: E402
from spotdiff.generate.segment.sam import SamConfig, SamSegmenter  # noqa: E402

DEFAULT_PHOTO = ROOT / "data/photos/dreambench-dev/teapot/00.jpg"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    ap.add_argument("--side", type=int, default=512, help="long side of the photo, pixels")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    args = ap.parse_args()

    photo = load_photo(args.photo, max_pixels=40_000_000)
    h, w = photo.rgb.shape[:2]
    f = args.side / max(h, w)
    rgb = cv2.resize(photo.rgb, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    photo = Photo(rgb, None, photo.source_size)

    t0 = time.perf_counter()
    model = sam_model_registry["vit_b"]()  # checkpoint=None: random weights, no file read
    segmenter = SamSegmenter.from_model(model, SamConfig(model_type="vit_b", device=args.device))
    build_s = time.perf_counter() - t0

    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        segmenter(photo, "teapot")
        times.append(time.perf_counter() - t0)
    print(f"sam vit_b (random weights) on {segmenter.device}, {torch.get_num_threads()} torch threads, "
          f"photo {rgb.shape[1]}x{rgb.shape[0]}: build {build_s:.1f} s, "
          f"first call {times[0] * 1e3:.0f} ms, {times[1] * 1e3:.0f} ms/image")


if __name__ == "__main__":
    main()

"""Images/s of the ``embedded`` image encoder on CPU, next to merely decoding + resizing the same photos.

    .venv/bin/python bench/bench_embed.py [--batch-size 32] [--repeats 3] [--json PATH]

Inputs: every dreambench-dev photo (``*/0*.jpg``). Three rates, each the best of ``--repeats``
passes over all photos, measured in the same run:

- decode+resize: JPEG file -> RGB array (PIL) -> shorter side resized and centre-cropped to the
  encoder's input size (``encoder.preprocess``): the least any embedding pipeline pays per photo.
- embed: ``encoder.embed`` on the decoded arrays (resize + crop + normalise + model), batch
  ``--batch-size``.
- model only: ``encoder.embed`` on arrays already cropped to the input size, so resizing is skipped.

The ratio embed / decode+resize says how much slower embedding is than just reading the photos.
The default embedded model is tiny (4 layers, 128 wide): a ViT-B/32 (openai/clip-vit-base-patch32) ran
about 40x slower model-only (4 images/s against 160) on the 2-core machine this was written on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from spotdiff.model.embed import EmbedConfig, ImageEncoder  # noqa: E402

DREAMBENCH = ROOT / "data/photos/dreambench-dev"


def best_rate(n_images: int, run: Callable[[], object], repeats: int) -> float:
    """Images per second of the fastest of ``repeats`` calls of ``run`` (each processes ``n_images``)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return n_images / best


def decode(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    paths = sorted(DREAMBENCH.glob("*/0*.jpg"))
    if not paths:
        sys.exit(f"no photos under {DREAMBENCH}")
    t0 = time.perf_counter()
    encoder = ImageEncoder.from_config(EmbedConfig(device="cpu", batch_size=args.batch_size))
    build_s = time.perf_counter() - t0
    photos = [decode(p) for p in paths]
    crops = [encoder.preprocess(p) for p in photos]
    encoder.embed(crops[: args.batch_size])  # warm-up: first-call allocations and kernel selection

    n = len(paths)
    decode_resize = best_rate(n, lambda: [encoder.preprocess(decode(p)) for p in paths], args.repeats)
    embed = best_rate(n, lambda: encoder.embed(photos), args.repeats)
    model_only = best_rate(n, lambda: encoder.embed(crops), args.repeats)

    result = {
        "photos": n, "photo_sizes": sorted({f"{p.shape[1]}x{p.shape[0]}" for p in photos}),
        "image_size": encoder.image_size, "batch_size": args.batch_size, "identity": encoder.identity,
        "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "build_s": build_s,
        "decode_resize_images_per_s": decode_resize, "embed_images_per_s": embed,
        "model_only_images_per_s": model_only, "embed_vs_decode_resize": embed / decode_resize,
    }
    print(f"embedded encoder ({encoder.identity.split(':config')[0]}, {encoder.image_size} px, batch "
          f"{args.batch_size}) on CPU, {torch.get_num_threads()} torch threads / {os.cpu_count()} cores, "
          f"{n} photos {', '.join(result['photo_sizes'])}; build {build_s:.1f} s (mostly importing transformers)")
    print(f"  decode+resize {decode_resize:7.1f} images/s")
    print(f"  embed         {embed:7.1f} images/s  (= {embed / decode_resize:.2f} x decode+resize)")
    print(f"  model only    {model_only:7.1f} images/s  (inputs already {encoder.image_size} px)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Streaming subject groups from the shards against decoding the same JPEGs from loose files.

    .venv/bin/python bench/bench_stream.py [--shards data/shards] [--split train] [--repeats 3]

First every view JPEG (anchor, bg, pose) of every group of ``--split`` is extracted to a temporary
folder, one file per image. Then, one process, the cases take turns for ``--repeats`` rounds (so a
busy moment on a shared machine hits all of them alike) and the best round of each counts:

* ``stream``: ``spotdiff.model.data.GroupStream`` over the split's tars, one plain epoch, no shuffle
  buffer: tar reading, grouping, json parsing and decoding of the 3 views of every group;
* ``loose``: for every group, open its 3 loose JPEG files, read and decode them with the same
  decoder (``spotdiff.model.data.decode_image``);

each at the stored size (``native``) and resized to ``--size`` px (PIL bicubic). A last row streams
through ``group_loader`` with ``--workers`` DataLoader worker processes (worker start included).
Both sides read from the page cache after the first round (the files are small and just written):
this compares the per-sample overhead of streaming tars with that of one file per image, not disks.

Prints a table and writes ``bench/out/stream.json``. Throughput unit: groups (3 decoded views) / s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotdiff.model.data import GroupStream, decode_image, group_loader, shard_urls  # noqa: E402
from spotdiff.sample import VIEWS  # noqa: E402
from spotdiff.tars import read_samples  # noqa: E402


def extract(urls: list[str], folder: Path) -> list[list[Path]]:
    """Write every view JPEG of every group to ``folder``; returns the files per group, in tar order."""
    groups = []
    for url in urls:
        for key, members in read_samples(url):
            files = []
            for view in VIEWS:
                path = folder / f"{key}.{view}.jpg"
                path.write_bytes(members[f"{view}.jpg"])
                files.append(path)
            groups.append(files)
    return groups


def timed_rounds(cases: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each ``case()`` per round, the cases taking turns; checks each returns the same count."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    counts: dict[str, int] = {}
    for _ in range(repeats):
        for name, fn in cases.items():
            t = time.perf_counter()
            n = fn()
            times[name].append(time.perf_counter() - t)
            if counts.setdefault(name, n) != n:
                raise RuntimeError(f"{name}: {n} groups this round, {counts[name]} before")
    return times


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default=str(ROOT / "data/shards"), help="shard folder (default %(default)s)")
    ap.add_argument("--split", default="train")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=224, help="resized case: pixels square (default %(default)s)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the loader row")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "bench/out/stream.json"))
    args = ap.parse_args(argv)

    load_at_start = os.getloadavg()
    urls = shard_urls(args.shards, args.split)
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        groups = extract(urls, Path(tmp))
        n = len(groups)

        def stream(size):
            return lambda: sum(1 for _ in GroupStream(urls, decode_size=size))

        def loose(size):
            def run():
                for files in groups:
                    for path in files:
                        with open(path, "rb") as f:
                            decode_image(f.read(), "RGB", size)
                return len(groups)
            return run

        def loader():
            stream_ = GroupStream(urls, decode_size=args.size)
            return sum(len(b["keys"]) for b in group_loader(stream_, args.batch_size, num_workers=args.workers))

        cases = {"stream_native": stream(None), "loose_native": loose(None),
                 f"stream_{args.size}": stream(args.size), f"loose_{args.size}": loose(args.size),
                 f"loader_{args.workers}w_{args.size}": loader}
        times = timed_rounds(cases, args.repeats)

    rows = {name: {"best_s": round(min(t), 4), "median_s": round(statistics.median(t), 4),
                   "groups_per_s": round(n / min(t), 1)} for name, t in times.items()}
    ratios = {f"stream_vs_loose_{s}": round(rows[f"loose_{s}"]["best_s"] / rows[f"stream_{s}"]["best_s"], 3)
              for s in ("native", args.size)}
    summary = {
        "split": args.split, "shards": len(urls), "groups": n, "images_per_group": len(VIEWS),
        "repeats": args.repeats, "cores": len(os.sched_getaffinity(0)),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "cases": rows, **ratios,
    }
    print(f"load average at start: {load_at_start[0]:.2f} {load_at_start[1]:.2f} {load_at_start[2]:.2f} "
          f"({summary['cores']} cores); {n} groups x {len(VIEWS)} views from {len(urls)} {args.split} shards, "
          f"best of {args.repeats}")
    print(f"{'case':<20}{'best s':>10}{'median s':>10}{'groups/s':>10}")
    for name, r in rows.items():
        print(f"{name:<20}{r['best_s']:>10.3f}{r['median_s']:>10.3f}{r['groups_per_s']:>10.1f}")
    for name, r in ratios.items():
        print(f"{name}: {r:.3f} (stream groups/s divided by loose groups/s)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":  # the guard matters: DataLoader workers may re-import this file
    main()

"""QA's near-duplicate search at growing sizes: all pairs (issue 4's search, kept as the
fallback) against multi-index hashing (issue 19), on the same entries, in the same run.

    .venv/bin/python bench/bench_duplicates.py [--gen data/generated] [--sizes 600 2500 10000]

Entries are synthetic groups grown from the real hashes of ``--gen`` (QA's own perceptual hash
of every view): each synthetic view is a real view's hash with every bit flipped with
probability ``--flip`` (0.2: two copies of one real view are ~80 bits apart, nearer than two
real views, so bands collide more often than on real data), in random subjects, and 1% of the
groups are planted near copies (0-24 bits) of an earlier group's view. For each size the two
searches take turns (A B A B ...) and the best and median of ``--repeats`` are kept, with
``uptime``'s load average before and after and tracemalloc's peak (numpy reports its buffers).
Both must give the same decisions: every distance below ``min_hash_distance`` the same, the
rest NaN in the new search. Writes ``bench/out/duplicates.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import spotdiff  # noqa: E402,F401  (before numpy: the CPU pins)
import numpy as np  # noqa: E402

from spotdiff.common.record import VIEWS  # noqa: E402
from spotdiff.config.qa import QaConfig  # noqa: E402
from spotdiff.qa import duplicates  # noqa: E402
from spotdiff.qa.run import score_samples  # noqa: E402
from spotdiff.shard.run import iter_generated  # noqa: E402


def all_pairs(entries: list[duplicates.HashEntry], min_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Issue 4's search, as it was: every pair compared, one float32 matrix product per block of
    rows, the exact least distance whatever it is."""
    rows = [(i, j) for i, e in enumerate(entries) if e.phash is not None for j in range(len(VIEWS))]
    bits = np.concatenate([e.phash for e in entries if e.phash is not None]).astype(np.float32)
    nbits = bits.shape[1]
    sample = np.array([i for i, _ in rows])
    subjects = {s: k for k, s in enumerate(dict.fromkeys(entries[i].subject_id for i, _ in rows))}
    subject = np.array([subjects[entries[i].subject_id] for i, _ in rows])
    ones = bits.sum(axis=1)
    best_same = np.full(len(rows), np.nan)
    best_other = np.full(len(rows), np.nan)
    for r0 in range(0, len(rows), duplicates.BLOCK):
        r1 = min(r0 + duplicates.BLOCK, len(rows))
        c1 = int(np.searchsorted(sample, sample[r1 - 1], side="left"))
        if c1 == 0:
            continue
        dist = (ones[r0:r1, None] + ones[None, :c1] - 2 * bits[r0:r1] @ bits[:c1].T) / nbits
        earlier = sample[None, :c1] < sample[r0:r1, None]
        same_subject = subject[None, :c1] == subject[r0:r1, None]
        for mask, best in ((earlier & same_subject, best_same), (earlier & ~same_subject, best_other)):
            d = np.where(mask, dist, np.inf).min(axis=1)
            best[r0:r1] = np.where(np.isfinite(d), d, np.nan)
    return best_same, best_other


def bucketed(entries: list[duplicates.HashEntry], min_distance: float) -> tuple[list, list]:
    same, other = duplicates.nearest_earlier(entries, min_distance)
    flat = lambda per: np.array([x[v] for x in per for v in VIEWS])  # noqa: E731
    return flat(same), flat(other)


def synthetic(real: np.ndarray, groups: int, flip: float, seed: int = 0) -> list[duplicates.HashEntry]:
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(real), groups)
    bits = real[pick] ^ (rng.random((groups, 3, real.shape[-1])) < flip).astype(np.uint8)
    for g in rng.choice(np.arange(1, groups), max(1, groups // 100), replace=False):
        src = bits[rng.integers(0, g), rng.integers(0, 3)].copy()
        src[rng.choice(real.shape[-1], int(rng.integers(0, 25)), replace=False)] ^= 1
        bits[g, rng.integers(0, 3)] = src
    subjects = rng.integers(0, max(1, groups // 3), groups)
    return [duplicates.HashEntry(f"s{s}", b, None) for s, b in zip(subjects, bits)]


def timed(fn, *args) -> tuple[float, int, object]:
    tracemalloc.start()
    t = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gen", default=str(ROOT / "data/generated"), help="generate output (default %(default)s)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[600, 2500, 10000], help="groups")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--flip", type=float, default=0.2)
    ap.add_argument("--out", default=str(ROOT / "bench/out/duplicates.json"))
    args = ap.parse_args()

    cfg = QaConfig(workers=1)
    real = np.stack([r.phash for r in score_samples(list(iter_generated(args.gen)), cfg) if r.phash is not None])
    threshold = cfg.duplicates.min_hash_distance
    rows = []
    for groups in args.sizes:
        entries = synthetic(real, groups, args.flip)
        load0 = os.getloadavg()[0]
        runs: dict[str, list[tuple[float, int]]] = {"all_pairs": [], "bucketed": []}
        outs = {}
        for _ in range(args.repeats):
            for name, fn in (("all_pairs", all_pairs), ("bucketed", bucketed)):
                s, peak, outs[name] = timed(fn, entries, threshold)
                runs[name].append((s, peak))
        for want, got in zip(outs["all_pairs"], outs["bucketed"]):
            below = want < threshold  # NaN (nothing earlier) compares False
            assert np.array_equal(want[below], got[below]) and np.isnan(got[~below]).all(), "decisions differ"
        row = {"groups": groups, "views": 3 * groups, "failing_views": int(sum((w < threshold).sum() for w in outs["all_pairs"])),
               "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2)}
        for name, r in runs.items():
            row[f"{name}_best_s"] = round(min(s for s, _ in r), 4)
            row[f"{name}_median_s"] = round(statistics.median(s for s, _ in r), 4)
            row[f"{name}_peak_mb"] = round(max(p for _, p in r) / 1e6, 1)
        row["speed_up_best"] = round(row["all_pairs_best_s"] / row["bucketed_best_s"], 1)
        print(json.dumps(row))
        rows.append(row)
    for a, b in zip(rows, rows[1:]):
        for name in ("all_pairs", "bucketed"):
            growth = b[f"{name}_best_s"] / a[f"{name}_best_s"]
            print(f"{name}: {a['groups']} -> {b['groups']} groups ({b['groups'] / a['groups']:.1f}x): "
                  f"{growth:.1f}x the time (exponent {math.log(growth) / math.log(b['groups'] / a['groups']):.2f})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"cores": len(os.sched_getaffinity(0)), "flip": args.flip,
                                          "threshold": threshold, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

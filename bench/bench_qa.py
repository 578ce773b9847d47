"""QA throughput against decode-only throughput of the same samples, measured in the same run.

    .venv/bin/python bench/bench_qa.py [--gen data/generated] [--repeats 3]

The samples (every group of ``--gen``, the demo build by default) are read into memory
once; then, one process, best of ``--repeats`` rounds in which the cases take turns:

* ``decode_only``: ``spotdiff.common.record.decode_members`` (the project's decoder: PIL, 3 JPEG
  views + 3 PNG masks + JSON) of every sample;
* ``decode_only_opencv``: the same members through OpenCV, the decoder QA uses;
* ``qa_per_sample``: ``spotdiff.qa.run.score_samples`` (decode, every measurement, identity
  descriptors, every per-sample check);
* ``qa_cross_sample``: the duplicate checks over all samples (exact + the hash search; ``bench_duplicates.py`` grows it);
* ``run_qa``: the whole stage end to end, on one worker and on every core, outputs and
  report included (22 histograms and ~20 contact sheets: a fixed ~6-9 s, not per sample).

Writes ``bench/out/qa.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotdiff.config.qa import QaConfig  # noqa: E402
from spotdiff.qa.run import run_qa  # noqa: E402
from spotdiff.qa import duplicates, measure  # noqa: E402
from spotdiff.qa.run import score_samples  # noqa: E402
from spotdiff.common.record import VIEWS, decode_members  # noqa: E402
from spotdiff.shard.run import iter_generated  # noqa: E402


def best_rates(fns: dict, n: int, repeats: int) -> dict[str, float]:
    """Samples per second of each ``fn()`` over ``n`` samples, best of ``repeats``, the
    functions taking turns (so a busy moment on a shared machine hits all of them alike)."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: n / s for name, s in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gen", default=str(ROOT / "data/generated"), help="generate output (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench/out/qa.json"))
    args = ap.parse_args()

    samples = list(iter_generated(args.gen))
    n = len(samples)
    cfg = QaConfig(workers=1)

    def opencv_decode():
        for _, m in samples:
            for v in VIEWS:
                measure.decode_image(m[f"{v}.jpg"])
                measure.decode_mask(m[f"{v}.mask.png"])
            json.loads(m["json"])

    results = []
    rates = best_rates({"decode": lambda: [decode_members(m) for _, m in samples], "decode_cv": opencv_decode,
                        "qa": lambda: results.append(score_samples(samples, cfg))}, n, args.repeats)
    decode, decode_cv, per_sample = rates["decode"], rates["decode_cv"], rates["qa"]
    scored = results[-1]
    entries = [duplicates.HashEntry(r.subject_id, r.phash, r.digests) for r in scored]
    cross = best_rates({"cross": lambda: duplicates.duplicate_values(entries, cfg.duplicates.min_hash_distance)}, n, args.repeats)["cross"]
    end_to_end = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 0):
            stats = run_qa(args.gen, Path(tmp) / "qa", QaConfig(workers=workers), progress=False)
            end_to_end[workers] = stats.seconds
    size = scored[0].outcomes["size"].score if scored and scored[0].outcomes.get("size") else None
    summary = {
        "cores": len(os.sched_getaffinity(0)),
        "samples": n,
        "image_size": size,
        "decode_only_samples_per_s": round(decode, 1),
        "decode_only_opencv_samples_per_s": round(decode_cv, 1),
        "qa_per_sample_samples_per_s": round(per_sample, 1),
        "qa_per_sample_vs_decode_only": round(per_sample / decode, 3),
        "qa_cross_sample_samples_per_s": round(cross, 1),
        "run_qa_seconds_1_worker": end_to_end[1],
        "run_qa_seconds_all_cores": end_to_end[0],
        "run_qa_accepted": stats.accepted,
    }
    print(json.dumps(summary, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":  # the guard matters: workers are spawned and re-import this file
    main()

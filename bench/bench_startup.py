"""Start-up cost of one stage process: what `dvc repro` pays per stage before any work, and what the retired
stage host (one warm process that every stage forked from) saved.

Each round starts, for every stage and interleaved, a fresh `python` that imports the stage's ``run``
module and the heavy modules its ``run`` imports lazily, and a bare `python -c pass` as the baseline.
Reported per stage: median wall seconds of the import process, and minus the baseline.

    .venv/bin/python bench/bench_startup.py            # 3 rounds, ~1 min; JSON in bench/out/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotdiff.stages import STAGES  # noqa: E402

LAZY = {
    "generate": ["cv2", "pyarrow.parquet", "tqdm"],
    "qa": ["spotdiff.qa.report", "spotdiff.common.contact_sheet", "spotdiff.common.pool", "tqdm"],
    "shard": ["spotdiff.common.contact_sheet"],
    "train": ["spotdiff.model.embed", "spotdiff.model.curves", "tqdm"],
    "evaluate": ["spotdiff.evaluate.plots", "spotdiff.model.trained", "spotdiff.model.embed"],
    "publish": [],
}
"""Modules each stage's ``run`` imports inside functions (found in its code), on top of its module imports."""


def timed(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    load = os.getloadavg()
    times: dict[str, list[float]] = {"baseline": [], **{name: [] for name in STAGES}}
    for _ in range(args.rounds):
        for name, stage in STAGES.items():
            times["baseline"].append(timed("pass"))
            times[name].append(timed(f"import {stage.entry}; " + "".join(f"import {m}; " for m in LAZY[name])))
    base = statistics.median(times["baseline"])
    rows = {name: {"median_s": round(statistics.median(v), 3), "over_baseline_s": round(statistics.median(v) - base, 3)}
            for name, v in times.items()}
    total = sum(r["over_baseline_s"] for n, r in rows.items() if n != "baseline")
    result = {"load_average_start": load, "load_average_end": os.getloadavg(), "rounds": args.rounds,
              "stages": rows, "sum_over_baseline_s": round(total, 2)}
    out = ROOT / "bench/out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| stage | import process s (median) | minus bare `python` s |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['median_s']:.2f} | {r['over_baseline_s']:.2f} |")
    print(f"sum over stages: {total:.1f} s; load average {load} -> {os.getloadavg()}")


if __name__ == "__main__":
    main()

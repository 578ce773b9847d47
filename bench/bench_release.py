"""``publish`` and ``spotdiff verify`` against ``sha256sum`` of the same release, in the same run.

    .venv/bin/python bench/bench_release.py [--shards data/shards] [--qa data/qa] [--model data/train]
                                            [--eval data/eval] [--repeats 3]

Each round, in turn: ``spotdiff publish`` (a whole process) into a temporary folder, ``sha256sum`` of
the release it wrote, ``spotdiff verify`` of it (a whole process, imports included), ``verify()``
in this process, ``hashlib.file_digest`` in this process. Best and median of ``--repeats`` rounds, the
load average before and after, and the release's sha256 (the same every round, or the bench fails).
The machine's page cache holds the files after the first round: this measures CPU, not the disk.
Compare code versions by running this file with ``PYTHONPATH`` at each checkout (the commands run
``python -m flows`` from there). Writes ``bench/out/release.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = Path(os.environ.get("PYTHONPATH", "").split(os.pathsep)[0] or ROOT)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, cwd=CODE, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for role, default in (("shards", "data/shards"), ("qa", "data/qa"), ("model", "data/train"), ("eval", "data/eval")):
        ap.add_argument(f"--{role}", default=str(ROOT / default))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench/out/release.json"))
    args = ap.parse_args()

    sys.path.insert(0, str(CODE))
    from spotdiff.publish.verify import verify

    py = sys.executable
    times: dict[str, list[float]] = {k: [] for k in ("publish", "sha256sum", "verify_cli", "verify_in_process",
                                                     "file_digest_in_process")}
    digests = set()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        release = Path(tmp) / "spotdiff10k-0.1.0.tar"
        for _ in range(args.repeats):
            times["publish"].append(timed(lambda: run(
                py, "-m", "flows", "publish", "-q", "--shards", args.shards, "--qa", args.qa, "--model", args.model,
                "--eval", args.eval, "--params-file", str(ROOT / "params.yaml"),
                "--requirements", str(ROOT / "requirements.lock"), "--out", tmp, "--version", "0.1.0")))
            times["sha256sum"].append(timed(lambda: run("sha256sum", str(release))))
            times["verify_cli"].append(timed(lambda: run(py, "-m", "flows", "verify", str(release))))
            times["verify_in_process"].append(timed(lambda: verify(release)))

            def digest():
                with open(release, "rb") as f:
                    digests.add(hashlib.file_digest(f, "sha256").hexdigest())

            times["file_digest_in_process"].append(timed(digest))
        size = release.stat().st_size
    assert len(digests) == 1, "publish wrote different bytes"
    summary = {"code": str(CODE), "release_bytes": size, "release_sha256": digests.pop(), "rounds": args.repeats,
               "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2)}
    for name, ts in times.items():
        summary[f"{name}_best_s"] = round(min(ts), 3)
        summary[f"{name}_median_s"] = round(statistics.median(ts), 3)
    summary["verify_cli_over_sha256sum"] = round(summary["verify_cli_median_s"] / summary["sha256sum_median_s"], 2)
    summary["verify_in_process_over_sha256sum"] = round(summary["verify_in_process_median_s"]
                                                        / summary["sha256sum_median_s"], 2)
    print(json.dumps(summary, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()

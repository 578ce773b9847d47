"""The whole pipeline at a given size, stage by stage, as `dvc repro` runs it: one `spotdiff <stage>`
process per stage, outputs under ``--root`` (outside the repository's data/ unless you say so).

Per stage: wall seconds, CPU seconds (user + system of the stage process and every worker it waited
for), peak RSS of the largest of those processes, bytes the stage left on disk, and groups per second
of wall time. The machine's load average is recorded before and after each stage, because these
machines are shared: CPU seconds are the figure that load disturbs least.

    .venv/bin/python bench/bench_full.py --groups 10000 --size 512 --root /work/full10k   # SpotDiff10k
    .venv/bin/python bench/bench_full.py --groups 600 --root /tmp/full600                  # the demo size
    .venv/bin/python bench/bench_full.py --groups 2500 --stages qa,shard --root /work/g2500 # some stages again
    .venv/bin/python bench/bench_full.py --groups 2500 --size 512 --root /work/k2500 \
        --interrupt generate=300 --interrupt train=400                                     # kill, then resume

``--interrupt STAGE=SECONDS`` sends SIGINT (Ctrl-C) to the stage's whole process group SECONDS after it
started, records that attempt (its wall and CPU seconds, its exit status), and runs the stage again, which
resumes (generate: the finished chunks in ``<out>.partial/``; train: its last checkpoint). The stage's row
then holds the rerun's figures and the killed attempt under ``interrupted``; the run's total counts both.
The total row ends with the release's sha256, to compare with an uninterrupted run of the same params.

Results are appended, one JSON object per stage and one for the run, to ``bench/out/full.jsonl``.
A stage that fails stops the run (its stderr tail is printed); stages already measured are kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotdiff.stages import PIPELINE, STAGES, paths_under  # noqa: E402

OUT = ROOT / "bench/out/full.jsonl"


def disk_bytes(paths: list[Path]) -> int:
    """Bytes of the files under ``paths`` (files or folders that exist)."""
    total = 0
    for p in paths:
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def run_stage(name: str, root: Path, overrides: list[str], params: Path, interrupt_after: float | None = None) -> dict:
    """One stage as its own process; rusage from wait4 covers it and the workers it waited for.
    ``interrupt_after``: seconds after which the stage's process group gets SIGINT; the attempt is returned
    (``interrupted``: True) instead of failing the run."""
    stage = STAGES[name]
    paths = paths_under(stage, root)
    argv = [str(Path(sys.executable).parent / "spotdiff"), name, "-q", "-p", str(params)]
    for o in overrides:
        argv += ["-S", o]
    for role, path in paths.items():
        argv += ["--" + role.replace("_", "-"), str(path)]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                start_new_session=interrupt_after is not None)
        fired: list[bool] = []

        def interrupt() -> None:  # as a terminal's Ctrl-C: the whole group, workers included
            fired.append(True)
            os.killpg(proc.pid, signal.SIGINT)

        timer = threading.Timer(interrupt_after, interrupt) if interrupt_after is not None else None
        if timer is not None:
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, not by Popen: wait4 gives its rusage
        if timer is not None:
            timer.cancel()
            timer.join()
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        out, err = out.read(), err.read()
    if fired:  # a stage that ended before the signal is an ordinary run
        return {"stage": name, "interrupted": True, "after_s": interrupt_after, "exit": code, "wall_s": round(wall, 1),
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "stderr_tail": err.decode()[-400:]}
    if code != 0:
        sys.exit(f"{name} failed (exit {code}):\n{err.decode()[-3000:]}")
    return {"stage": name, "wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024), "disk_mib": round(disk_bytes(
                [paths[r] for r in stage.outputs]) / 2**20, 1), "load_before": round(load0, 2),
            "load_after": round(os.getloadavg()[0], 2), "summary": out.decode().strip().splitlines()[-1:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=600, help="generate.n_groups (default 600, the demo)")
    ap.add_argument("--size", type=int, default=None, help="generate.image_size in px (default: params.yaml's)")
    ap.add_argument("--root", type=Path, required=True, help="where the stage outputs go (created)")
    ap.add_argument("--stages", default=",".join(PIPELINE),
                    help="comma-separated stages, in pipeline order (default: the pipeline's, as dvc.yaml; "
                         "add pretrain to time the opt-in stage)")
    ap.add_argument("-p", "--params", type=Path, default=ROOT / "params.yaml", help="params file (default: params.yaml)")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides (repeatable)")
    ap.add_argument("--interrupt", action="append", default=[], metavar="STAGE=SECONDS",
                    help="Ctrl-C the stage after SECONDS, then run it again to resume (repeatable)")
    args = ap.parse_args(argv)
    interrupts = {}
    for item in args.interrupt:
        stage, _, secs = item.partition("=")
        try:
            interrupts[stage] = float(secs)
        except ValueError:
            ap.error(f"--interrupt {item!r}: expected STAGE=SECONDS")
        if stage not in STAGES:
            ap.error(f"--interrupt {item!r}: unknown stage {stage!r}")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        ap.error(f"unknown stage(s) {unknown}; stages: {', '.join(STAGES)}")
    overrides = [f"generate.n_groups={args.groups}", *([f"generate.image_size={args.size}"] if args.size else []), *args.set]
    args.root.mkdir(parents=True, exist_ok=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    rows = []
    t0 = time.perf_counter()
    for name in stages:
        row = {"run": run_id, "commit": git, "groups": args.groups, "size": args.size, "overrides": overrides,
               **run_stage(name, args.root, overrides, args.params, interrupts.get(name))}
        if row.get("interrupted"):  # it got the signal: run it again, which resumes
            killed = {k: row[k] for k in ("after_s", "exit", "wall_s", "cpu_s", "stderr_tail")}
            print(f"{name:9s} interrupted after {killed['wall_s']} s (exit {killed['exit']}), "
                  f"cpu {killed['cpu_s']} s; running it again", flush=True)
            row = {"run": run_id, "commit": git, "groups": args.groups, "size": args.size, "overrides": overrides,
                   **run_stage(name, args.root, overrides, args.params), "interrupted": killed}
        row["groups_per_s"] = round(args.groups / row["wall_s"], 2) if row["wall_s"] else None
        rows.append(row)
        with OUT.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name:9s} wall {row['wall_s']:8.1f} s  cpu {row['cpu_s']:8.1f} s  peak {row['peak_rss_mib']:6d} MiB  "
              f"disk {row['disk_mib']:9.1f} MiB  {row['groups_per_s']} groups/s  load {row['load_before']}->"
              f"{row['load_after']}  {' '.join(row['summary'])[:120]}", flush=True)
    release = sorted((args.root / "release").glob("*.tar"))
    total = {"run": run_id, "commit": git, "groups": args.groups, "size": args.size, "stage": "total",
             "wall_s": round(time.perf_counter() - t0, 1),
             "cpu_s": round(sum(r["cpu_s"] + r.get("interrupted", {}).get("cpu_s", 0) for r in rows), 1),
             "release_sha256": {p.name: sha256_file(p) for p in release},
             "peak_rss_mib": max(r["peak_rss_mib"] for r in rows), "disk_mib": round(sum(r["disk_mib"] for r in rows), 1)}
    with OUT.open("a") as f:
        f.write(json.dumps(total) + "\n")
    print(f"total     wall {total['wall_s']:8.1f} s  cpu {total['cpu_s']:8.1f} s  peak {total['peak_rss_mib']} MiB  "
          f"disk {total['disk_mib']} MiB  release {total['release_sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

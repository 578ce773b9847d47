"""The whole pipeline at a given size, stage by stage, as `dvc repro` runs it: one `spotdiff <stage>`
process per stage, outputs under ``--root`` (outside the repository's data/ unless you say so).

Per stage: wall seconds, CPU seconds (user + system of the stage process and every worker it waited
for), peak RSS of the largest of those processes, bytes the stage left on disk, and groups per second
of wall time. The machine's load average is recorded before and after each stage, because these
machines are shared: CPU seconds are the figure that load disturbs least.

    .venv/bin/python bench/bench_full.py --groups 10000 --size 512 --root /work/full10k   # SpotDiff10k
    .venv/bin/python bench/bench_full.py --groups 600 --root /tmp/full600                  # the demo size
    .venv/bin/python bench/bench_full.py --groups 2500 --stages qa,shard --root /work/g2500 # some stages again

Results are appended, one JSON object per stage and one for the run, to ``bench/out/full.jsonl``.
A stage that fails stops the run (its stderr tail is printed); stages already measured are kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotdiff.stages import STAGES, paths_under  # noqa: E402

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


def run_stage(name: str, root: Path, overrides: list[str], params: Path) -> dict:
    """One stage as its own process; rusage from wait4 covers it and the workers it waited for."""
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
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, not by Popen: wait4 gives its rusage
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        out, err = out.read(), err.read()
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
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages, in pipeline order (default: all)")
    ap.add_argument("-p", "--params", type=Path, default=ROOT / "params.yaml", help="params file (default: params.yaml)")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides (repeatable)")
    args = ap.parse_args(argv)
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
               **run_stage(name, args.root, overrides, args.params)}
        row["groups_per_s"] = round(args.groups / row["wall_s"], 2) if row["wall_s"] else None
        rows.append(row)
        with OUT.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name:9s} wall {row['wall_s']:8.1f} s  cpu {row['cpu_s']:8.1f} s  peak {row['peak_rss_mib']:6d} MiB  "
              f"disk {row['disk_mib']:9.1f} MiB  {row['groups_per_s']} groups/s  load {row['load_before']}->"
              f"{row['load_after']}  {' '.join(row['summary'])[:120]}", flush=True)
    total = {"run": run_id, "commit": git, "groups": args.groups, "size": args.size, "stage": "total",
             "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(sum(r["cpu_s"] for r in rows), 1),
             "peak_rss_mib": max(r["peak_rss_mib"] for r in rows), "disk_mib": round(sum(r["disk_mib"] for r in rows), 1)}
    with OUT.open("a") as f:
        f.write(json.dumps(total) + "\n")
    print(f"total     wall {total['wall_s']:8.1f} s  cpu {total['cpu_s']:8.1f} s  peak {total['peak_rss_mib']} MiB  "
          f"disk {total['disk_mib']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

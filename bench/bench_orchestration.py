"""Orchestration overhead of the whole pipeline: `spotdiff run` (one Prefect server, one flow run over
`dvc repro`, a task per stage, each stage its own `spotdiff <stage>` process) against the sum of the
stage functions' own times, called in one process with the same params, in the same run.

    .venv/bin/python bench/bench_orchestration.py              # demo profile, ~6 min; JSON in bench/out/
    .venv/bin/python bench/bench_orchestration.py --also no-prefect   # plain `dvc repro` too, ~9 min
    .venv/bin/python bench/bench_orchestration.py --repeat 2   # two rounds, medians (noisy machines)
    .venv/bin/python bench/bench_orchestration.py --groups 100 # quicker, smaller profile

Every side works in a fresh copy of the repository (git HEAD plus the working tree's changes)
and starts with an empty feature cache, so none reuses another's work. Overhead = orchestrated wall
time / library time - 1, for `dvc repro` (the issue's measure, target <= 15%) and for the whole
`spotdiff run` (which also starts the Prefect server: a fresh clone creates its database first).

Both sides pay each stage's imports once (the library side imports a stage's modules inside its first
call), so neither is warmer than the other; with ``--repeat`` the sides take turns (run, library, run,
library, ...), and the load average is recorded around every run, since the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def copy_repo(dest: Path, groups: int | None) -> Path:
    """A clone of the repository at ``dest`` with the working tree's changes (tracked and new files not
    ignored by git), sharing the venv."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    if diff:
        subprocess.run(["git", "apply"], cwd=dest, input=diff, check=True)
    new = subprocess.run(["git", "ls-files", "-z", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         check=True).stdout.decode().split("\0")
    for name in filter(None, new):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    shared = ROOT.parent / "shared"
    if shared.exists() and not (dest.parent / "shared").exists():
        (dest.parent / "shared").symlink_to(shared)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    # One cache path for both sides (it is recorded in params.yaml), emptied before each side runs.
    params["train"]["cache_dir"] = str(dest.parent / "feature-cache")
    if groups:
        params["generate"]["n_groups"] = groups
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def release_members(tar_path: Path) -> dict[str, str]:
    """sha256 of every release member but dvc.lock and the top SHA256SUMS: the library side has no
    dvc.lock of this run (dvc never ran there), so only the data, model and metrics can be compared."""
    import hashlib
    import tarfile

    with tarfile.open(tar_path) as tar:
        return {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in tar.getmembers()
                if m.isfile() and m.name.count("/") >= 1 and m.name.split("/", 1)[1] not in ("dvc.lock", "SHA256SUMS")}


def library_times(repo: Path) -> dict[str, float]:
    """Each stage's library function, in order, in this process; seconds per stage."""
    os.chdir(repo)
    sys.path.insert(0, str(repo))
    from spotdiff.config import load_params
    from spotdiff.stages import STAGES

    p = load_params("params.yaml")
    stages = {name: (lambda stage=stage: stage.load()(p, stage.paths(), progress=False)) for name, stage in STAGES.items()}
    times = {}
    try:
        for name, fn in stages.items():
            t0 = time.perf_counter()
            fn()
            times[name] = time.perf_counter() - t0
            print(f"  library {name}: {times[name]:.1f} s", flush=True)
    finally:
        os.chdir(ROOT)  # the next round deletes this copy
        sys.path.remove(str(repo))
    return times


VARIANTS = {"no-prefect": ["--no-prefect"]}
"""`spotdiff run` variants the bench can time next to the default (one Prefect flow run, a task per stage)."""


def orchestrated_run(repo: Path, extra: list[str]) -> dict:
    """``spotdiff run`` in ``repo``: total wall time, dvc repro's share and each stage's wall time inside it
    (from the moment dvc announces a stage to the next announcement)."""
    # The shared venv's editable install points at the original checkout: PYTHONPATH makes every process
    # (stage commands, spawned workers) import this copy's code.
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(repo)}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(repo / ".venv/bin/spotdiff"), "run", *extra], cwd=repo, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    marks, lines, dvc_end = [], [], None
    for line in proc.stdout:
        lines.append(line)
        if m := re.match(r"Running stage '(\w+)'", line):
            marks.append((m.group(1), time.perf_counter() - t0))
        elif line.startswith("run: dvc repro finished"):
            dvc_end = time.perf_counter() - t0
    end = time.perf_counter() - t0
    if proc.wait() != 0:
        sys.exit("spotdiff run failed:\n" + "".join(lines[-40:]))
    dvc = float(re.search(r"dvc repro finished in ([0-9.]+) s", "".join(lines)).group(1))
    stages = {name: round((marks[i + 1][1] if i + 1 < len(marks) else dvc_end) - at, 2)
              for i, (name, at) in enumerate(marks)}
    return {"total_s": round(end, 2), "dvc_repro_s": dvc, "before_dvc_s": round(dvc_end - dvc, 2),
            "after_dvc_s": round(end - dvc_end, 2), "stages_s": stages,
            "load": [round(load, 2), round(os.getloadavg()[0], 2)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=None, help="generate.n_groups (default: params.yaml's)")
    ap.add_argument("--also", action="append", default=[], choices=sorted(VARIANTS),
                    help="also time this variant of `spotdiff run`, for comparison (repeatable): no-prefect = "
                         "plain `dvc repro`, no Prefect server or flow run")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds; each round times every variant, then the library, and pairs them (default: 1)")
    ap.add_argument("--work", default="/tmp/spotdiff-bench-orchestration", help="scratch folder (emptied)")
    args = ap.parse_args()
    work = Path(args.work)
    load = os.getloadavg()
    rounds = []
    for i in range(args.repeat):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        runs = {}
        for name, extra in [("default", []), *[(v, VARIANTS[v]) for v in args.also]]:
            shutil.rmtree(work / "feature-cache", ignore_errors=True)
            runs[name] = orchestrated_run(copy_repo(work / name, args.groups), extra)
            print(f"  round {i + 1}: spotdiff run {' '.join(extra)}: {runs[name]}", flush=True)
        shutil.rmtree(work / "feature-cache", ignore_errors=True)
        library = copy_repo(work / "library", args.groups)
        library_load = os.getloadavg()[0]
        times = library_times(library)
        t_lib = sum(times.values())
        for r in runs.values():
            r["overhead_dvc_repro"] = round(r["dvc_repro_s"] / t_lib - 1, 4)
            r["overhead_total"] = round(r["total_s"] / t_lib - 1, 4)
        same = all(release_members(t) == release_members(library / "data/release" / t.name)
                   for t in (work / "default/data/release").glob("*.tar"))
        rounds.append({"library_s": {k: round(v, 2) for k, v in times.items()}, "library_total_s": round(t_lib, 2),
                       "library_load": [round(library_load, 2), round(os.getloadavg()[0], 2)],
                       "runs": runs, "same_release_content": same})
    result = {"load_average_start": load, "load_average_end": os.getloadavg(), "groups": args.groups,
              "rounds": rounds,
              "median_overhead_dvc_repro": {n: statistics.median(r["runs"][n]["overhead_dvc_repro"] for r in rounds)
                                            for n in rounds[0]["runs"]}}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "orchestration.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n| round | run | dvc repro s | stage functions s | overhead | whole `spotdiff run` s | overhead |\n"
          "|---|---|---|---|---|---|---|")
    for i, rd in enumerate(rounds, 1):
        for name, r in rd["runs"].items():
            print(f"| {i} | {name} | {r['dvc_repro_s']:.1f} | {rd['library_total_s']:.1f} | "
                  f"{100 * r['overhead_dvc_repro']:.1f}% | {r['total_s']:.1f} | {100 * r['overhead_total']:.1f}% |")
    print("median dvc repro overhead: " + ", ".join(f"{n} {100 * v:.1f}%"
                                                    for n, v in result["median_overhead_dvc_repro"].items()))
    for i, rd in enumerate(rounds, 1):
        runs = rd["runs"]
        print(f"\nround {i}\n| stage | library s | " + " | ".join(f"{n} s" for n in runs) + " |\n|---|---|"
              + "---|" * len(runs))
        for stage, t in rd["library_s"].items():
            print(f"| {stage} | {t:.1f} | " + " | ".join(f"{r['stages_s'].get(stage, 0):.1f}" for r in runs.values())
                  + " |")
    print(f"same release content (bar dvc.lock): {all(r['same_release_content'] for r in rounds)}; "
          f"load average {load} -> {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""Orchestration overhead of the whole pipeline: `spotdiff run` (one Prefect server + `dvc repro` of every
stage, each a CLI process running its Prefect flow) against the sum of the stage functions' own times,
called in one process with the same params, in the same run.

    .venv/bin/python bench/bench_orchestration.py            # demo profile, ~10 min; JSON in bench/out/
    .venv/bin/python bench/bench_orchestration.py --groups 60  # quicker, smaller profile

Both sides work in fresh copies of the repository (git HEAD plus uncommitted changes to tracked files)
and start with an empty feature cache, so neither reuses the other's work. Overhead = orchestrated wall
time / library time - 1 (target <= 15%).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def copy_repo(dest: Path, groups: int | None) -> Path:
    """A clone of the repository at ``dest`` with the working tree's tracked changes, sharing the venv."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    if diff:
        subprocess.run(["git", "apply"], cwd=dest, input=diff, check=True)
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
    from spotdiff import release
    from spotdiff.cli import write_qa_metrics
    from spotdiff.config import load_params
    from spotdiff.evaluate.run import evaluate, headline
    from spotdiff.generate import generate
    from spotdiff.qa import run_qa
    from spotdiff.shards import shard
    from spotdiff.train import train

    p = load_params("params.yaml")
    raw = yaml.safe_load(Path("params.yaml").read_text())
    stages = {
        "generate": lambda: generate(p.generate, "data/generated", progress=False),
        "qa": lambda: (run_qa("data/generated", "data/qa", p.qa, progress=False, embed_config=p.embed),
                       write_qa_metrics(Path("data/qa/metrics.json"), Path("metrics/qa.json"))),
        "shard": lambda: shard("data/generated", "data/shards", p.shard, "data/qa/accepted.txt"),
        "train": lambda: train("data/shards", "data/train", p, checkpoint_path="data/checkpoints/train.safetensors"),
        "evaluate": lambda: Path("metrics/eval.json").write_text(json.dumps(headline(
            evaluate("data/shards", "data/train", "data/eval", p, photos=p.evaluate.photos)))),
        "publish": lambda: release.publish("data/shards", "data/release", version=p.publish.version,
                                           qa_metrics="data/qa/metrics.json", model_dir="data/train",
                                           eval_metrics="data/eval/metrics.json",
                                           backends=release.backends_from_params(raw)),
    }
    times = {}
    for name, fn in stages.items():
        t0 = time.perf_counter()
        fn()
        times[name] = time.perf_counter() - t0
        print(f"  library {name}: {times[name]:.1f} s", flush=True)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=None, help="generate.n_groups (default: params.yaml's)")
    ap.add_argument("--work", default="/tmp/spotdiff-bench-orchestration", help="scratch folder (emptied)")
    args = ap.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    load = os.getloadavg()

    orchestrated = copy_repo(work / "orchestrated", args.groups)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    env.pop("SPOTDIFF_NO_PREFECT", None)
    t0 = time.perf_counter()
    run = subprocess.run([str(orchestrated / ".venv/bin/spotdiff"), "run"], cwd=orchestrated, env=env,
                         capture_output=True, text=True)
    t_run = time.perf_counter() - t0
    if run.returncode != 0:
        sys.exit(f"spotdiff run failed:\n{run.stderr[-3000:]}")
    print(f"  spotdiff run (Prefect + dvc repro): {t_run:.1f} s", flush=True)

    shutil.rmtree(work / "feature-cache", ignore_errors=True)
    library = copy_repo(work / "library", args.groups)
    times = library_times(library)
    t_lib = sum(times.values())
    same_release = all(release_members(t) == release_members(library / "data/release" / t.name)
                       for t in (orchestrated / "data/release").glob("*.tar"))
    result = {"load_average_start": load, "groups": args.groups, "spotdiff_run_s": round(t_run, 2),
              "library_s": {k: round(v, 2) for k, v in times.items()}, "library_total_s": round(t_lib, 2),
              "overhead": round(t_run / t_lib - 1, 4), "same_release_content": same_release}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "orchestration.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n| spotdiff run s | stage functions s | overhead | same release content (bar dvc.lock) |\n|---|---|---|---|\n"
          f"| {t_run:.1f} | {t_lib:.1f} | {100 * (t_run / t_lib - 1):.1f}% | {same_release} |")
    print(f"load average at start: {load}")


if __name__ == "__main__":
    main()

"""What the CPU-dispatch pins (``spotdiff.common.determinism``, issue 14) cost, per stage: the pipeline with
every pin against the same pipeline with none (``SPOTDIFF_CPU_PINS=none``), in the same run, interleaved
(pinned, unpinned, pinned, unpinned, ...). Each stage is its own ``spotdiff <stage>`` process, as under
``dvc repro``, so a time includes the process's imports, as a user pays them.

    .venv/bin/python bench/bench_pins.py                     # 120 groups at 256 px, 20 epochs, 3 rounds, ~6 min here
    .venv/bin/python bench/bench_pins.py --each --repeat 1   # also every pin alone against none
    .venv/bin/python bench/bench_pins.py --configs "all;none;-mkl;-threads"   # every pin but one, too
    .venv/bin/python bench/bench_pins.py --groups 24 --size 64 --epochs 2 --batch 8 --repeat 1   # a quick look

Every run builds into its own folder with its own feature cache (no run reuses another's features).
Results: a table on stdout and JSON in bench/out/pins.json. Ratio = median pinned time / median unpinned
time of that stage; the release bytes of the pinned runs are compared with each other too (they must be
identical), and with the unpinned runs' (they differ on a CPU whose own kernels are not the pinned ones).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
STAGE_ARGS = {
    "generate": ["--out", "data/generated"],
    "qa": ["--generated", "data/generated", "--out", "data/qa", "--metrics", "metrics/qa.json"],
    "shard": ["--generated", "data/generated", "--accepted", "data/qa/accepted.txt", "--out", "data/shards"],
    "train": ["--shards", "data/shards", "--out", "data/train", "--checkpoint", "data/checkpoints/train.safetensors",
              "--no-resume"],
    "evaluate": ["--shards", "data/shards", "--model", "data/train", "--out", "data/eval", "--metrics",
                 "metrics/eval.json"],
    "publish": ["--shards", "data/shards", "--qa", "data/qa", "--model", "data/train", "--eval", "data/eval",
                "--params-file", "params.yaml", "--lock", str(ROOT / "dvc.lock"), "--out", "data/release"],
}


def clean_env() -> dict[str, str]:
    """This environment less every variable a pin sets (importing the determinism module below pinned this
    process), so that each run's own ``SPOTDIFF_CPU_PINS`` alone decides."""
    sys.path.insert(0, str(ROOT))
    from spotdiff.common import determinism

    pinned = {k for pin in determinism.pin_env(determinism.cpu_flags() or frozenset()).values() for k in pin}
    env = {k: v for k, v in os.environ.items() if k not in pinned and k != "SPOTDIFF_CPU_PINS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def write_params(path: Path, groups: int, size: int, epochs: int, batch: int) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["generate"].update({"n_groups": groups, "image_size": size})
    raw["train"].update({"epochs": epochs, "batch_size": batch, "cache_dir": "cache"})
    raw["evaluate"]["photos"] = None
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def run_pipeline(root: Path, pins: str, env: dict[str, str], params: Path) -> tuple[dict[str, float], str]:
    """Every stage in order under ``root`` with ``SPOTDIFF_CPU_PINS=pins``; seconds per stage and the
    release's sha256."""
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(params.read_text())
    times = {}
    for stage, args in STAGE_ARGS.items():
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "flows", stage, "-q", "-p", "params.yaml", *args], cwd=root,
                             env={**env, "SPOTDIFF_CPU_PINS": pins}, capture_output=True, text=True)
        times[stage] = time.perf_counter() - t0
        if run.returncode:
            raise SystemExit(f"{stage} failed under SPOTDIFF_CPU_PINS={pins}:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}")
    release = next((root / "data/release").glob("*.tar"))
    return times, hashlib.sha256(release.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=120)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64, help="train.batch_size (at most the train split's groups)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each runs every configuration once")
    ap.add_argument("--each", action="store_true", help="also run every pin alone (SPOTDIFF_CPU_PINS=<pin>)")
    ap.add_argument("--configs", help="';'-separated SPOTDIFF_CPU_PINS values to run instead (must include none); "
                                      "'-<pin>' = every pin but that one")
    ap.add_argument("--out", type=Path, default=OUT / "pins.json")
    args = ap.parse_args()

    env = clean_env()
    from spotdiff.common import determinism

    configs = ["all", "none"] + (list(determinism.PINS) if args.each else [])
    if args.configs:
        configs = [c.strip() for c in args.configs.split(";") if c.strip()]
        if "none" not in configs:
            raise SystemExit("--configs must include none (the baseline of every ratio)")
    started = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "loadavg": os.getloadavg()}
    results: dict[str, list[dict[str, float]]] = {c: [] for c in configs}
    digests: dict[str, set[str]] = {c: set() for c in configs}
    with tempfile.TemporaryDirectory(prefix="bench-pins-") as tmp:
        params = Path(tmp) / "params.yaml"
        write_params(params, args.groups, args.size, args.epochs, args.batch)
        for r in range(args.repeat):
            # Alternate which configuration goes first, so neither always runs on the quieter machine.
            for c in (configs if r % 2 == 0 else configs[::-1]):
                spec = ",".join(p for p in determinism.PINS if p != c[1:]) if c.startswith("-") else c
                times, digest = run_pipeline(Path(tmp) / f"{c.replace(',', '+')}-{r}", spec, env, params)
                results[c].append(times)
                digests[c].add(digest)
                print(f"round {r + 1} pins={c}: " + ", ".join(f"{s} {t:.1f}s" for s, t in times.items())
                      + f", total {sum(times.values()):.1f}s, load {os.getloadavg()[0]:.2f}", flush=True)
    stages = list(STAGE_ARGS) + ["total"]

    def median(c: str, s: str) -> float:
        return statistics.median(sum(t.values()) if s == "total" else t[s] for t in results[c])

    table = {c: {s: median(c, s) for s in stages} for c in configs}
    ratios = {c: {s: table[c][s] / table["none"][s] for s in stages} for c in configs if c != "none"}
    print(f"\nmedian seconds over {args.repeat} round(s); ratio = pins / none")
    print("| stage | " + " | ".join(f"{c} s" for c in configs) + " | " + " | ".join(f"{c} / none" for c in ratios) + " |")
    print("|---|" + "---:|" * (len(configs) + len(ratios)))
    for s in stages:
        print(f"| {s} | " + " | ".join(f"{table[c][s]:.1f}" for c in configs) + " | "
              + " | ".join(f"{ratios[c][s]:.2f}" for c in ratios) + " |")
    print(f"release sha256 per configuration: { {c: sorted(d) for c, d in digests.items()} }")
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), **started,
              "loadavg_end": os.getloadavg(), "profile": vars(args) | {"out": str(args.out)},
              "level": determinism.level(), "seconds": results, "median": table, "ratio": ratios,
              "release_sha256": {c: sorted(d) for c, d in digests.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    if len(digests["all"]) != 1:
        raise SystemExit("pinned runs built different releases")


if __name__ == "__main__":
    main()

"""Generate + shard throughput against a JPEG-encode-only baseline measured in the same run.

    .venv/bin/python bench/bench_generate.py [--groups 120] [--full-groups 24] [--rounds 2]

Cases: the demo profile (procedural + packaged photos, params.yaml as is but fewer
groups), the dreambench-dev folder (real photos, every photo once), and procedural at
512 px (for the full-10k projection). For each: groups/s and MB/s of generate and of
shard, next to the rate at which this machine merely JPEG-encodes the same output
images (decoded from the chunks beforehand, encoded at the same quality). Generation
runs in this process on one worker here, after a small warm-up build (so no case pays the
first imports and model loads alone), so both sides are equally warm and use one core. Render and
segmentation time are measured by wrapping those functions in-process.

The parallel speed-up compares whole ``spotdiff generate`` processes (imports, worker start-up and
writing included, as ``dvc repro`` runs the stage) with ``generate.workers=1`` and with one worker
per core, on the demo profile, the two taking turns (1, N, 1, N, ...) for ``--rounds`` rounds, the
load average recorded around each run. An earlier version timed a warm in-process builder against
cold worker processes, and reported 0.28-0.60x where whole processes gave 1.75x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spotdiff.config import load_params  # noqa: E402
from spotdiff.generate.run import generate  # noqa: E402
from spotdiff.common.record import VIEWS, decode_members, encode_jpeg  # noqa: E402
from spotdiff.shard.run import iter_generated, shard  # noqa: E402
from spotdiff.generate import segment  # noqa: E402
from spotdiff.generate.sources import procedural  # noqa: E402

DREAMBENCH = ROOT / "data/photos/dreambench-dev"


def encode_only_rate(gen_dir: Path, quality: int, repeats: int = 3) -> float:
    """Groups per second for JPEG-encoding the three views of every group (best of ``repeats``)."""
    images = [[decode_members(m).views[v].image for v in VIEWS] for _, m in iter_generated(gen_dir)]
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for views in images:
            for img in views:
                encode_jpeg(img, quality)
        best = min(best, time.perf_counter() - t)
    return len(images) / best


class Timed:
    """Wrap ``module.attr`` with a timer for the duration of a ``with`` block (in-process only)."""

    def __init__(self, module, attr: str):
        self.module, self.attr, self.seconds, self.calls = module, attr, 0.0, 0

    def __enter__(self) -> "Timed":
        self.original = getattr(self.module, self.attr)

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return self.original(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t
                self.calls += 1
        setattr(self.module, self.attr, timed)
        return self

    def __exit__(self, *exc) -> None:
        setattr(self.module, self.attr, self.original)


def run_case(name: str, overrides: list[str], work: Path) -> dict:
    params = load_params(ROOT / "params.yaml", overrides + ["generate.workers=1"])
    with Timed(procedural, "render") as render, Timed(segment, "segment") as seg:
        t = time.perf_counter()
        g = generate(params.generate, work / name / "gen", progress=False)
        gen_s = time.perf_counter() - t
    t = time.perf_counter()
    s = shard(work / name / "gen", work / name / "shards", params.shard)
    shard_s = time.perf_counter() - t
    mb = sum(p.stat().st_size for p in (work / name / "shards").glob("*.tar")) / 1e6
    enc = encode_only_rate(work / name / "gen", params.generate.jpeg_quality)
    out = {
        "case": name, "groups_in": g.groups_in, "kept": g.kept, "rejected": g.rejected,
        "image_size": params.generate.image_size,
        "generate_groups_per_s": g.kept / gen_s, "generate_MB_per_s": mb / gen_s,
        "shard_groups_per_s": s.samples / shard_s, "shard_MB_per_s": mb / shard_s,
        "encode_only_groups_per_s": enc, "generate_vs_encode_only": (g.kept / gen_s) / enc,
    }
    if render.calls:
        out.update(renders=render.calls, renders_per_s=render.calls / render.seconds, render_share=render.seconds / gen_s)
    if seg.calls:
        out.update(segmentations=seg.calls, segment_ms=1000 * seg.seconds / seg.calls, segment_share=seg.seconds / gen_s)
    return out


def parallel_speedup(overrides: list[str], work: Path, rounds: int) -> dict:
    """Whole ``spotdiff generate`` processes, 1 worker against one per core, interleaved (see the
    module docstring). The outputs must be the same bytes whatever the workers."""
    cores = len(os.sched_getaffinity(0))
    runs: dict[int, list[dict]] = {1: [], cores: []}
    for _ in range(rounds):
        for w in (1, cores):
            out = work / f"par{w}"
            cmd = [sys.executable, "-m", "flows", "generate", "-q", "--out", str(out)]
            cmd += [a for o in overrides + [f"generate.workers={w}"] for a in ("-S", o)]
            load = os.getloadavg()[0]
            t = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            runs[w].append({"seconds": round(time.perf_counter() - t, 2), "load_before": round(load, 2),
                            "load_after": round(os.getloadavg()[0], 2)})
    chunks = [sorted(p.read_bytes() for p in (work / f"par{w}" / "chunks").glob("*.tar")) for w in runs]
    assert chunks[0] == chunks[-1], "1 and N workers built different bytes"
    one, many = (statistics.median(r["seconds"] for r in runs[w]) for w in (1, cores))
    return {"workers": cores, "seconds_1_worker": runs[1], f"seconds_{cores}_workers": runs[cores],
            "per_round": [round(a["seconds"] / b["seconds"], 2) for a, b in zip(runs[1], runs[cores])],
            "speedup_median": round(one / many, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=120, help="demo-profile groups to build (default %(default)s)")
    ap.add_argument("--full-groups", type=int, default=24, help="groups at 512 px for the 10k projection")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the parallel speed-up (default %(default)s)")
    ap.add_argument("--out", default=str(ROOT / "bench/out/generate.json"))
    args = ap.parse_args(argv)
    results = []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        demo = [f"generate.n_groups={args.groups}"]
        run_case("warm-up", ["generate.n_groups=8"], work)  # imports, MediaPipe's models, the bank
        results.append(run_case("demo", demo, work))
        if DREAMBENCH.is_dir():
            n = len(list(DREAMBENCH.glob("*/*.jpg")))
            results.append(run_case("dreambench", [f"generate.n_groups={n}", "generate.sources={folder: 1}",
                                                   f"generate.folder={DREAMBENCH}"], work))
        full = [f"generate.n_groups={args.full_groups}", "generate.image_size=512"]
        results.append(run_case("procedural-512", full + ["generate.sources={procedural: 1}"], work))
        parallel = parallel_speedup(demo, work, args.rounds)
    speedup = parallel["speedup_median"]
    cores = len(os.sched_getaffinity(0))
    full_rate = next(r for r in results if r["case"] == "procedural-512")["generate_groups_per_s"]
    summary = {"cores": cores, "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2),
               "parallel": parallel, "parallel_speedup": speedup, "results": results,
               # with the faster of 1 and N workers: under load N can be slower, and then one would run 1
               "projected_full_10k_hours": 10_000 / (full_rate * max(speedup, 1.0)) / 3600}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print("| case | px | kept/in | generate groups/s | MB/s | shard groups/s | MB/s | encode-only groups/s | "
          "generate / encode-only | renders/s | render share | segment ms | segment share |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {r['image_size']} | {r['kept']}/{r['groups_in']} | {r['generate_groups_per_s']:.2f} | "
              f"{r['generate_MB_per_s']:.2f} | {r['shard_groups_per_s']:.0f} | {r['shard_MB_per_s']:.0f} | "
              f"{r['encode_only_groups_per_s']:.0f} | {r['generate_vs_encode_only']:.1%} | "
              f"{r.get('renders_per_s', float('nan')):.1f} | {r.get('render_share', float('nan')):.0%} | "
              f"{r.get('segment_ms', float('nan')):.0f} | {r.get('segment_share', float('nan')):.0%} |")
    print(f"parallel speed-up, whole processes, {cores} workers vs 1: {speedup:.2f}x (median of {args.rounds} "
          f"interleaved rounds; per round {parallel['per_round']}); load average {summary['load_before']} -> "
          f"{summary['load_after']}; projected full 10k at 512 px: {summary['projected_full_10k_hours']:.2f} h "
          "(procedural 512 px rate x the better of 1 and that speed-up)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

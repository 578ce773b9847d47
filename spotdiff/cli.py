"""``spotdiff`` command: one subcommand per pipeline stage, plus ``run`` for the whole pipeline.

Stage subcommands validate params first (a bad value fails in well under a second,
before any work), then run the stage's Prefect flow from ``flows/`` -- or the library
function directly with ``--no-prefect``. ``main(argv)`` is callable from tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from spotdiff.config import ConfigError, load_params

EPILOG = """\
Params: every stage reads its section of params.yaml; --set/-S overrides one value
(e.g. -S generate.n_groups=50 -S generate.image_size=128), as `dvc exp run -S` does.
The full SpotDiff10k build: -S generate.n_groups=10000 -S generate.image_size=512.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", "--params", default="params.yaml", help="params file (default: %(default)s)")
    p.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param, e.g. generate.n_groups=50 (repeatable)")
    p.add_argument("--no-prefect", action="store_true",
                   help="call the library function directly instead of the Prefect flow")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spotdiff", description="SpotDiff10k pipeline: generate subject groups, shard them, and more.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="build subject groups (anchor, bg, pose + masks) into chunk tars",
                       description="Build subject groups from the sources in params `generate:`: segment photos "
                                   "or render procedural subjects, vary the pose, swap the background. Writes "
                                   "chunk tars, records.parquet, rejects.parquet (every dropped input with its "
                                   "reason) and stats.json into --out.")
    _common(p)
    p.add_argument("--out", default="data/generated", help="output folder, emptied first (default: %(default)s)")

    p = sub.add_parser("qa", help="score generated groups, quarantine failures with reasons, write a report",
                       description="Run the checks of params `qa:` on --in; writes scores.parquet, "
                                   "quarantine.parquet/.tar, accepted.txt, metrics.json, report.md and PNGs into --out.")
    _common(p)
    p.add_argument("--in", dest="gen_dir", default="data/generated", help="generate output (default: %(default)s)")
    p.add_argument("--out", default="data/qa", help="output folder, emptied first (default: %(default)s)")
    p.add_argument("--metrics", default=None,
                   help="also write pass rates here as a small JSON for `dvc metrics show` (e.g. metrics/qa.json)")

    p = sub.add_parser("shard", help="pack generated groups into WebDataset tars split by subject",
                       description="Split subjects into train/val/test by a salted hash, pack each split into "
                                   "byte-identical tars bounded by params `shard.max_samples` and "
                                   "`shard.max_bytes`, and write index.parquet, sizes.json, SHA256SUMS and "
                                   "contact_sheet.png.")
    _common(p)
    p.add_argument("--in", dest="gen_dir", default="data/generated", help="generate output (default: %(default)s)")
    p.add_argument("--accepted", default=None, help="QA's accepted.txt: shard only these keys (default: all kept)")
    p.add_argument("--out", default="data/shards", help="output folder, emptied first (default: %(default)s)")

    p = sub.add_parser("verify-shards", help="re-read every shard and check it against SHA256SUMS and index.parquet")
    p.add_argument("dir", nargs="?", default="data/shards")

    p = sub.add_parser("run", help="the main job: run the whole pipeline with `dvc repro` on one Prefect server",
                       description="Start one local Prefect server (unless PREFECT_API_URL is set), run "
                                   "`dvc repro` (stages whose inputs did not change are skipped), print where "
                                   "the outputs are.")
    p.add_argument("--no-prefect", action="store_true", help="stages call the library directly")
    p.add_argument("targets", nargs="*", help="dvc stages to reproduce (default: all)")
    return parser


def cmd_generate(args: argparse.Namespace) -> int:
    params = load_params(args.params, args.overrides)  # fail fast, before Prefect starts
    if args.no_prefect or os.environ.get("SPOTDIFF_NO_PREFECT") == "1":
        from spotdiff.generate import generate

        stats = generate(params.generate, args.out, progress=not args.quiet).as_dict()
    else:
        from flows.stages import generate_flow

        stats = generate_flow(args.params, tuple(args.overrides), args.out, not args.quiet)
    print(f"generate: {stats['groups_in']} groups in, {stats['kept']} kept, {stats['rejected']} rejected "
          f"{stats['rejected_by_reason'] or ''} in {stats['seconds']:.1f} s -> {args.out}")
    return 0


def write_qa_metrics(full: Path, out: Path) -> None:
    """Flatten QA's metrics.json to what `dvc metrics show/diff` compares: counts and pass rates."""
    m = json.loads(full.read_text())
    flat = {"samples_in": m["samples_in"], "accepted": m["accepted"], "rejected": m["rejected"],
            "pass_rate": round(m["accepted"] / max(1, m["samples_in"]), 4),
            "check_pass_rate": {k: round(v["pass_rate"], 4) for k, v in sorted(m["checks"].items())}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n")


def cmd_qa(args: argparse.Namespace) -> int:
    params = load_params(args.params, args.overrides)
    if args.no_prefect or os.environ.get("SPOTDIFF_NO_PREFECT") == "1":
        from spotdiff.qa import run_qa

        stats = run_qa(args.gen_dir, args.out, params.qa, progress=not args.quiet, embed_config=params.embed).as_dict()
    else:
        from flows.stages import qa_flow

        stats = qa_flow(args.params, tuple(args.overrides), args.gen_dir, args.out, not args.quiet)
    if args.metrics:
        write_qa_metrics(Path(args.out) / "metrics.json", Path(args.metrics))
    print(f"qa: {stats['samples_in']} groups in, {stats['accepted']} accepted, {stats['rejected']} rejected "
          f"{stats['rejected_by_reason'] or ''} in {stats['seconds']:.1f} s -> {args.out}/report.md")
    return 0


def cmd_shard(args: argparse.Namespace) -> int:
    params = load_params(args.params, args.overrides)
    if args.no_prefect or os.environ.get("SPOTDIFF_NO_PREFECT") == "1":
        from spotdiff.shards import shard

        stats = shard(args.gen_dir, args.out, params.shard, args.accepted).__dict__
    else:
        from flows.stages import shard_flow

        stats = shard_flow(args.params, tuple(args.overrides), args.gen_dir, args.out, args.accepted)
    splits = ", ".join(f"{s} {v['samples']} groups/{v['subjects']} subjects/{v['shards']} tars"
                       for s, v in stats["by_split"].items())
    print(f"shard: {stats['samples']} groups -> {args.out} ({splits})")
    return 0


def cmd_verify_shards(args: argparse.Namespace) -> int:
    from spotdiff.shards import verify_shards

    n = verify_shards(args.dir)
    print(f"verify-shards: {n} samples match SHA256SUMS and index.parquet in {args.dir}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if not Path("dvc.yaml").exists():
        raise FileNotFoundError("dvc.yaml not found: run `spotdiff run` from the repository root")
    load_params("params.yaml")
    env_bin = str(Path(sys.executable).parent)
    os.environ["PATH"] = env_bin + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    cmd = [sys.executable, "-m", "dvc", "repro", *args.targets]
    t0 = time.perf_counter()
    if args.no_prefect:
        os.environ["SPOTDIFF_NO_PREFECT"] = "1"
        rc = subprocess.call(cmd)
    else:
        from flows.server import local_server

        with local_server() as url:
            print(f"prefect: API at {url}", flush=True)
            rc = subprocess.call(cmd)
    if rc != 0:
        print(f"run: dvc repro failed with exit code {rc}", file=sys.stderr)
        return rc
    print(f"run: pipeline done in {time.perf_counter() - t0:.1f} s")
    sizes = Path("data/shards/sizes.json")
    if sizes.exists():
        print(f"run: shards in {sizes.parent}/ : {json.dumps(json.loads(sizes.read_text()))}")
        print(f"run: look at {sizes.parent / 'contact_sheet.png'}")
    return 0


COMMANDS = {"generate": cmd_generate, "qa": cmd_qa, "shard": cmd_shard, "verify-shards": cmd_verify_shards, "run": cmd_run}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        print(f"spotdiff {args.command}: config error\n{err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"spotdiff {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""``spotdiff`` command: one subcommand per pipeline stage, plus ``run`` for the whole pipeline.

Stage subcommands validate params first (a bad value fails in well under a second,
before any work), then run the stage's Prefect flow from ``flows/`` -- or the library
function directly with ``--no-prefect``. ``main(argv)`` is callable from tests.
"""

from __future__ import annotations

import argparse
import contextlib
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
    p.add_argument("--out", default=None, help="output folder, emptied first (default: data/generated; "
                                                "with --ref: data/reference)")
    g = p.add_argument_group("reference generation (--ref): images of a photo's subject with the trained adapter")
    g.add_argument("--ref", metavar="IMAGE", help="reference photo of the subject; switches to inference")
    g.add_argument("--prompt", help="text prompt (required with --ref), e.g. 'a photo of it on a beach'")
    g.add_argument("--model-dir", default="data/train", help="trained encoder + ip_adapter.safetensors "
                                                              "(default: %(default)s)")
    g.add_argument("--pipeline", default=None, help="Stable Diffusion pipeline folder or cached hub id "
                                                     "(default: params train.stage2.model)")
    g.add_argument("-n", "--n-images", type=int, default=4, help="images to write (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed+i")
    g.add_argument("--steps", type=int, default=25, help="denoising steps (default: %(default)s)")
    g.add_argument("--guidance", type=float, default=7.0, help="classifier-free guidance (default: %(default)s)")
    g.add_argument("--scale", type=float, default=1.0, help="adapter strength, 0 = text only (default: %(default)s)")

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

    p = sub.add_parser("train", help="train the SpotDiff encoder (experts, subject head, orthogonality) on the shards",
                       description="Stage 1 on the train split's backbone features (cached in params "
                                   "`train.cache_dir`, keyed by backbone and shard checksums); stage 2 (alignment "
                                   "module on a Stable Diffusion UNet) when `train.stage2.model` is set. Resumes "
                                   "from --out/checkpoint.safetensors when it belongs to the same params, data and "
                                   "library code. "
                                   "Multi-process: torchrun --nproc_per_node N -m spotdiff.cli train --no-prefect.")
    _common(p)
    p.add_argument("--shards", default="data/shards", help="shard folder (default: %(default)s)")
    p.add_argument("--out", default="data/train", help="output folder (default: %(default)s)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if a matching checkpoint exists")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in total (checkpointed)")
    p.add_argument("--checkpoint", default=None, help="resumable state file (default: OUT/checkpoint.safetensors)")

    p = sub.add_parser("evaluate", help="measure whether the subject feature keeps identity and drops pose/background",
                       description="Orthogonality, invariance, retrieval and linear leakage probes on the held-out "
                                   "test split, for the trained subject feature and the raw backbone feature, each "
                                   "with a 95%% bootstrap interval. Writes metrics.json, headline.json, scores.csv, "
                                   "report.md and PNG figures into --out.")
    _common(p)
    p.add_argument("--shards", default="data/shards", help="shard folder (default: %(default)s)")
    p.add_argument("--model", default="data/train", help="train output (default: %(default)s)")
    p.add_argument("--out", default="data/eval", help="output folder (default: %(default)s)")
    p.add_argument("--metrics", default=None, help="also write the headline numbers here (e.g. metrics/eval.json)")

    p = sub.add_parser("publish", help="pack shards, dataset card, model and metrics into a byte-identical release tar",
                       description="Write <out>/spotdiff10k-<version>.tar (+ .sha256): shards, index, SHA256SUMS, "
                                   "a dataset card (README.md), the model, metrics, params.yaml and dvc.lock. The "
                                   "same inputs give the same bytes.")
    _common(p)
    p.add_argument("--shards", default="data/shards", help="shard folder (default: %(default)s)")
    p.add_argument("--qa", default="data/qa/metrics.json", help="QA metrics (default: %(default)s)")
    p.add_argument("--model", default="data/train", help="train output, skipped if missing (default: %(default)s)")
    p.add_argument("--eval", default="data/eval/metrics.json", help="evaluation metrics, skipped if missing")
    p.add_argument("--version", default=None, help="release version (default: params publish.version)")
    p.add_argument("--out", default="data/release", help="output folder (default: %(default)s)")

    p = sub.add_parser("verify", help="check a release tar: member safety, SHA256SUMS, card vs contents, every shard",
                       description="Refuses absolute paths, '..', links and devices; checks every checksum, the "
                                   "dataset card against index.parquet and sizes.json, and re-reads every shard.")
    p.add_argument("release", help="spotdiff10k-<version>.tar")
    p.add_argument("--extract", metavar="DEST", default=None, help="after verifying, extract safely into DEST")

    p = sub.add_parser("verify-shards", help="re-read every shard and check it against SHA256SUMS and index.parquet")
    p.add_argument("dir", nargs="?", default="data/shards")

    p = sub.add_parser("run", help="the main job: run the whole pipeline with `dvc repro` on one Prefect server",
                       description="Start one local Prefect server (unless PREFECT_API_URL is set), run "
                                   "`dvc repro` (stages whose inputs did not change are skipped), print where "
                                   "the outputs are.")
    p.add_argument("--no-prefect", action="store_true", help="stages call the library directly")
    p.add_argument("--no-host", action="store_true",
                   help="start every stage as its own process instead of forking it from one warm stage host "
                        "that has imported torch, transformers and Prefect once (same outputs, slower)")
    p.add_argument("targets", nargs="*", help="dvc stages to reproduce (default: all)")
    return parser


def cmd_generate(args: argparse.Namespace) -> int:
    params = load_params(args.params, args.overrides)  # fail fast, before Prefect starts
    if args.ref:
        return _reference_generation(args, params)
    if args.prompt:
        raise ValueError("--prompt needs --ref IMAGE (reference generation)")
    args.out = args.out or "data/generated"
    if args.no_prefect or os.environ.get("SPOTDIFF_NO_PREFECT") == "1":
        from spotdiff.generate import generate

        stats = generate(params.generate, args.out, progress=not args.quiet).as_dict()
    else:
        from flows.stages import generate_flow

        stats = generate_flow(args.params, tuple(args.overrides), args.out, not args.quiet)
    print(f"generate: {stats['groups_in']} groups in, {stats['kept']} kept, {stats['rejected']} rejected "
          f"{stats['rejected_by_reason'] or ''} in {stats['seconds']:.1f} s -> {args.out}")
    return 0


def _reference_generation(args: argparse.Namespace, params) -> int:
    """``generate --ref``: images of the reference photo's subject with the model folder's encoder and adapter,
    on the --pipeline (default params train.stage2.model) at train.stage2.resolution and .device."""
    from spotdiff.diffusion import PARAMS_KEY
    from spotdiff.infer import run_reference_generation, subject_encoder

    if not args.prompt:
        raise ValueError("--ref needs --prompt TEXT")
    model_dir = Path(args.model_dir)
    adapter = model_dir / "ip_adapter.safetensors"
    pipeline = args.pipeline or params.train.stage2.model
    if not pipeline:
        raise ValueError("no Stable Diffusion pipeline: pass --pipeline or set train.stage2.model in params.yaml")
    # A missing or mismatched adapter fails here, before the photo or the pipeline is touched.
    encode = subject_encoder(model_dir, params.embed, adapter=adapter)
    try:
        paths = run_reference_generation(args.ref, args.prompt, args.out or "data/reference", subject_encoder=encode,
                                         pipeline_model=pipeline, adapter_path=adapter, n_images=args.n_images,
                                         seed=args.seed, steps=args.steps, guidance=args.guidance, scale=args.scale,
                                         size=params.train.stage2.resolution, device=params.train.stage2.device)
    except ConfigError as err:  # load_pipeline's messages name generate.diffusion.*, which this command does not read
        where = "--pipeline" if args.pipeline else "train.stage2.model"
        raise ConfigError(str(err).replace(f"{PARAMS_KEY}.model", where).replace(f"{PARAMS_KEY}.", "train.stage2.")) \
            from err
    for path in paths:
        print(path)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    params = load_params(args.params, args.overrides)
    if args.no_prefect or os.environ.get("SPOTDIFF_NO_PREFECT") == "1" or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from spotdiff.train import train

        r = train(args.shards, args.out, params, progress=not args.quiet, resume=not args.no_resume,
                  max_steps=args.max_steps, checkpoint_path=args.checkpoint).as_dict()
    else:
        if args.no_resume or args.max_steps:
            raise ValueError("--no-resume and --max-steps need --no-prefect")
        from flows.stages import train_flow

        r = train_flow(args.params, tuple(args.overrides), args.shards, args.out, not args.quiet, args.checkpoint)
    if int(os.environ.get("RANK", "0")) == 0:
        first, last = r["first"], r["last"]
        terms = ", ".join(f"{k} {first[k]:.3f}->{last[k]:.3f}" for k in first)
        print(f"train: {r['steps']} steps (resumed from {r['resumed_from']}), feature cache "
              f"{'hit' if r['cache_hit'] else 'built'}, first->last epoch: {terms}; {r['seconds']:.1f} s -> {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    params = load_params(args.params, args.overrides)
    if args.no_prefect or os.environ.get("SPOTDIFF_NO_PREFECT") == "1":
        from spotdiff.evaluate.run import evaluate, headline

        h = headline(evaluate(args.shards, args.model, args.out, params, photos=params.evaluate.photos,
                              progress=not args.quiet))
    else:
        from flows.stages import evaluate_flow

        h = evaluate_flow(args.params, tuple(args.overrides), args.shards, args.model, args.out, not args.quiet)
    text = json.dumps(h, indent=2, sort_keys=True) + "\n"
    (Path(args.out) / "headline.json").write_text(text)
    if args.metrics:
        Path(args.metrics).parent.mkdir(parents=True, exist_ok=True)
        Path(args.metrics).write_text(text)
    print(f"evaluate: criterion {'PASS' if h['criterion_pass'] else 'FAIL'}; subject vs raw: "
          + ", ".join(f"{k} {h['subject'][k]:.3f} vs {h['raw'][k]:.3f}" for k in h["subject"])
          + f" -> {args.out}/report.md")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    import yaml

    from spotdiff import release

    params = load_params(args.params, args.overrides)
    raw = yaml.safe_load(Path(args.params).read_text()) if Path(args.params).exists() else {}
    existing = lambda p: p if p and Path(p).exists() else None  # noqa: E731
    tar = release.publish(args.shards, args.out, version=args.version or params.publish.version,
                          params_path=args.params, qa_metrics=existing(args.qa), model_dir=existing(args.model),
                          eval_metrics=existing(args.eval), backends=release.backends_from_params(raw),
                          folder_license=params.publish.folder_license)
    digest = Path(f"{tar}.sha256").read_text().split()[0]
    print(f"publish: {tar} sha256 {digest}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from spotdiff import release

    rep = release.verify(args.release)
    splits = ", ".join(f"{k} {v}" for k, v in rep.splits.items())
    print(f"verify: OK {rep.version}: {rep.samples} samples ({splits}), {rep.shards} shards, {rep.files} files")
    if args.extract:
        print(f"verify: extracted to {release.safe_extract(args.release, args.extract)}")
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


HOST_PRELOAD = ["torch", "transformers.models.clip.modeling_clip", "safetensors.torch", "pyarrow.parquet", "cv2",
                "webdataset", "sklearn.linear_model", "sklearn.pipeline", "sklearn.model_selection",
                "matplotlib.figure", "matplotlib.backends.backend_agg", "pyarrow.dataset", "PIL.JpegImagePlugin",
                "PIL.PngImagePlugin", "spotdiff.generate", "spotdiff.qa.run", "spotdiff.shards", "spotdiff.contact_sheet",
                "spotdiff.train", "spotdiff.evaluate.run", "spotdiff.release"]
"""What the stage host imports once for every stage: each stage's heavy imports (4-9 s a process otherwise)."""
PREFECT_PRELOAD = ["flows.stages", "prefect.flow_engine", "prefect.task_engine", "prefect.utilities.visualization",
                   "fastapi", "anyio._backends._asyncio", "opentelemetry.metrics"]
"""... and what a process's first flow run imports (found by diffing ``sys.modules`` around one)."""


def cmd_run(args: argparse.Namespace) -> int:
    from spotdiff.stagehost import ENV as STAGE_HOST_ENV, stage_host

    if not Path("dvc.yaml").exists():
        raise FileNotFoundError("dvc.yaml not found: run `spotdiff run` from the repository root")
    load_params("params.yaml")
    env_bin = str(Path(sys.executable).parent)
    os.environ["PATH"] = env_bin + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    cmd = [sys.executable, "-m", "dvc", "repro", *args.targets]
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        # The host starts first so that its imports overlap the Prefect server's start-up; each stage's
        # child re-reads Prefect's settings from the environment it is given, which has the server's URL.
        preload = HOST_PRELOAD + ([] if args.no_prefect else PREFECT_PRELOAD)
        if not args.no_host:
            os.environ[STAGE_HOST_ENV] = stack.enter_context(stage_host(preload, log=".prefect/stagehost.log"))
            stack.callback(os.environ.pop, STAGE_HOST_ENV, None)
        if args.no_prefect:
            os.environ["SPOTDIFF_NO_PREFECT"] = "1"
        else:
            from flows.server import local_server

            print(f"prefect: API at {stack.enter_context(local_server())}", flush=True)
        t_dvc = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"run: dvc repro finished in {time.perf_counter() - t_dvc:.1f} s", flush=True)
    if rc != 0:
        print(f"run: dvc repro failed with exit code {rc}", file=sys.stderr)
        return rc
    print(f"run: pipeline done in {time.perf_counter() - t0:.1f} s")
    sizes = Path("data/shards/sizes.json")
    if sizes.exists():
        print(f"run: shards in {sizes.parent}/ : {json.dumps(json.loads(sizes.read_text()))}")
        print(f"run: look at {sizes.parent / 'contact_sheet.png'} and data/train/losses.png")
    headline = Path("data/eval/headline.json")
    if headline.exists():
        h = json.loads(headline.read_text())
        print(f"run: evaluation (data/eval/report.md), criterion {'PASS' if h['criterion_pass'] else 'FAIL'}; "
              "subject feature vs raw backbone: "
              + ", ".join(f"{k} {h['subject'][k]:.3f} vs {h['raw'][k]:.3f}" for k in h["subject"]))
    for tar in sorted(Path("data/release").glob("*.tar")):
        print(f"run: release {tar} (sha256 {Path(f'{tar}.sha256').read_text().split()[0]}); "
              f"check it with `spotdiff verify {tar}`")
    return 0


COMMANDS = {"generate": cmd_generate, "qa": cmd_qa, "shard": cmd_shard, "train": cmd_train, "evaluate": cmd_evaluate,
            "publish": cmd_publish, "verify": cmd_verify, "verify-shards": cmd_verify_shards, "run": cmd_run}


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

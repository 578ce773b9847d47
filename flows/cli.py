"""``spotdiff`` command: one subcommand per pipeline stage (from ``spotdiff.stages``), plus ``run`` for the
whole pipeline, ``verify``/``verify-shards`` for checking outputs, ``compare`` for two builds that should be
equivalent, and ``infer`` for reference generation.

Stage subcommands validate params first (a bad value fails in well under a second, before any
work), then call the stage's ``run`` -- or, with ``--prefect``, the same call as a Prefect flow run.
``dvc repro`` runs the stages this way. ``main(argv)`` is callable from tests.

How a command ends: 0 when it worked; an expected failure (``spotdiff.errors.SpotdiffError``, or an
OS condition such as a full disk, a permission, an existing or missing path) prints one message naming
the path and exits 1 (2 for a params error); anything else is a bug and prints its full traceback.
SIGINT (Ctrl-C) and SIGTERM stop every process the command started (``flows.interrupts``), print one
line saying what was interrupted and how to resume, and exit 130 / 143.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path

from flows.interrupts import handle_signals, run_child, stop_children, stopped
from spotdiff import __version__
from spotdiff.errors import ConfigError, Interrupted, MissingInputError, SpotdiffError
from spotdiff.stages import STAGES, Stage

EPILOG = """\
Params: every stage reads its sections of params.yaml; --set/-S overrides one value
(e.g. -S generate.n_groups=50 -S generate.image_size=128), as `dvc exp run -S` does.
The full SpotDiff10k build: -S generate.n_groups=10000 -S generate.image_size=512.
"""


def _flag(role: str) -> str:
    return "--" + role.replace("_", "-")


def _help(text: str) -> str:
    """Registry text as an argparse ``help``: argparse %-formats help (``%(default)s``), not descriptions, so a
    literal ``%`` is doubled here and only here (a doubled one in a description prints as ``%%``)."""
    return text.replace("%", "%%")


def _add_stage(sub: argparse._SubParsersAction, stage: Stage) -> None:
    description = f"{stage.summary[:1].upper()}{stage.summary[1:]}. Reads params: {', '.join(stage.params)}."
    p = sub.add_parser(stage.name, help=_help(stage.summary), description=description)
    p.add_argument("-p", "--params", default="params.yaml", help="params file (default: %(default)s)")
    p.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param, e.g. generate.n_groups=50 (repeatable)")
    p.add_argument("--prefect", action="store_true", help="run the stage as a Prefect flow run, on a local server "
                                                         "started for it unless PREFECT_API_URL is set (default: "
                                                         "call the library directly, as `dvc repro` does)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    for role, default in stage.inputs.items():
        p.add_argument(_flag(role), dest=f"path_{role}", metavar="PATH", default=None,
                       help=_help(f"reads {stage.about.get(role, role)} (default: {default})"))
    for role, default in stage.outputs.items():
        how = "kept across runs" if role in stage.persist else "replaced"
        p.add_argument(_flag(role), dest=f"path_{role}", metavar="PATH", default=None,
                       help=_help(f"writes {stage.about.get(role, role)}; {how} (default: {default})"))
    for name, opt in stage.options.items():
        if opt.type is bool:
            p.add_argument(_flag(name), dest=f"opt_{name}", action="store_true", help=_help(opt.help))
        else:
            p.add_argument(_flag(name), dest=f"opt_{name}", type=opt.type, default=opt.default, help=_help(opt.help),
                           metavar=name.upper())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spotdiff", description="SpotDiff10k pipeline: generate subject groups, QA, shard, train, evaluate, publish.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"spotdiff {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in STAGES.values():
        _add_stage(sub, stage)

    p = sub.add_parser("run", help="the main job: the whole pipeline with `dvc repro`, as one Prefect flow run",
                       description="Run `dvc repro` stage by stage (stages whose inputs did not change are "
                                   "skipped) as one Prefect flow run on a local server (unless PREFECT_API_URL "
                                   "is set), then print where the outputs are. With everything up to date (`dvc status`) it only "
                                   "prints them: no server, no flow run.")
    p.add_argument("--no-prefect", action="store_true", help="plain `dvc repro`, no Prefect server")
    p.add_argument("targets", nargs="*", help="dvc stages to reproduce, with what they depend on (default: all)")

    p = sub.add_parser("verify", help="check a release tar: member safety, SHA256SUMS, card vs contents, every shard",
                       description="Refuses absolute paths, '..', links and devices; checks every checksum, the "
                                   "dataset card against index.parquet and sizes.json, and re-reads every shard.")
    p.add_argument("release", help="spotdiff10k-<version>.tar")
    p.add_argument("--key", metavar="PUB", default=None,
                   help="Ed25519 public key (PEM or OpenSSH): refuse the release unless SHA256SUMS.sig is this key's "
                        "signature of its SHA256SUMS")
    p.add_argument("--extract", metavar="DEST", default=None, help="after verifying, extract safely into DEST")

    p = sub.add_parser("keygen", help="make an Ed25519 key pair for signing releases (publish --sign, verify --key)",
                       description="Write a new Ed25519 private key to PATH (PEM, mode 0600) and its public key to "
                                   "PATH.pub. Never replaces an existing file.")
    p.add_argument("path", metavar="PATH", help="private key file to write (the public key goes to PATH.pub)")

    sub.add_parser("pins", help="print the CPU pins as shell exports, for processes that import numpy first (dask worker)",
                   description="Print, as `export VAR=value` lines, the environment `import spotdiff` sets on this CPU "
                               "so that numpy, OpenBLAS, OpenCV and torch run the same kernels on every x86-64 CPU "
                               "with AVX2 (spotdiff/common/determinism.py). A process that imports numpy before "
                               "spotdiff (a Dask worker) must start with them: "
                               '`eval "$(spotdiff pins)" && dask worker tcp://HOST:8786 --nthreads 1`. '
                               "Run it on each worker machine: the values depend on its CPU.")
    from spotdiff.publish.compare import Tolerances

    tol = Tolerances()
    p = sub.add_parser("compare", help="are two builds (releases or data folders) equivalent within tolerances?",
                       description="Compare two builds -- release tars, extracted releases, data folders (data/) or "
                                   "shard folders: same groups, splits and labels, per-member pixel differences of "
                                   "every image and mask, metric deltas, params. Exit 0 when equivalent within the "
                                   "tolerances, 1 otherwise. For rebuilds that cannot match bytes (another machine).")
    p.add_argument("a", help="first build")
    p.add_argument("b", help="second build")
    p.add_argument("--max-pixel-diff", type=float, default=tol.max_pixel_diff, metavar="N",
                   help="largest |difference| of any pixel channel, 0-255 (default: %(default)g)")
    p.add_argument("--max-mean-pixel-diff", type=float, default=tol.max_mean_pixel_diff, metavar="X",
                   help="largest mean |difference| over one image or mask, 0-255 (default: %(default)g)")
    p.add_argument("--max-label-diff", type=float, default=tol.max_label_diff, metavar="X",
                   help="largest |difference| of a number in a group's labels (default: %(default)g)")
    p.add_argument("--max-metric-diff", type=float, default=tol.max_metric_diff, metavar="X",
                   help="largest |difference| of a number in metrics.json (default: %(default)g)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the comparison as JSON to PATH")

    p = sub.add_parser("verify-shards", help="re-read every shard and check it against SHA256SUMS and index.parquet",
                       description="Re-read every tar of a shard folder and check it against its SHA256SUMS and "
                                   "index.parquet (every member's size and sha256).")
    p.add_argument("dir", nargs="?", default=STAGES["shard"].outputs["out"],
                   help="shard folder (default: %(default)s)")

    p = sub.add_parser("gc", help="remove feature-cache entries the current shards never read (train.cache_dir)",
                       description="Delete what train and evaluate left in the feature cache (params train.cache_dir) "
                                   "and can never read again with the current shards: entries built from shard sets "
                                   "that are no longer in --shards (an earlier generate, QA or shard run), from an "
                                   "older feature format, unreadable entries, and temporary files of killed writers. "
                                   "Entries of the current shards are kept, for every backbone. Going back to older "
                                   "shards later costs one encoding pass again. --all deletes every entry. Nothing "
                                   "else is touched: data/, the DVC cache (`dvc gc -w` prunes that: see "
                                   "docs/benchmarks.md, Storage) and checkpoints stay.")
    p.add_argument("-p", "--params", default="params.yaml", help="params file, for train.cache_dir (default: %(default)s)")
    p.add_argument("--cache-dir", default=None, help="feature cache folder (default: params train.cache_dir)")
    p.add_argument("--shards", default=STAGES["shard"].outputs["out"],
                   help="the current shard folder, whose entries are kept (default: %(default)s)")
    p.add_argument("--all", action="store_true", help="delete every entry, current or not")
    p.add_argument("-n", "--dry-run", action="store_true", help="list what would be deleted, delete nothing")

    p = sub.add_parser("plots", help="draw dvc.yaml's plots as PNG files that open offline",
                       description="`dvc plots show` writes HTML that loads Vega from a CDN (blank offline); this "
                                   "draws the same plot definitions of dvc.yaml with matplotlib, one PNG each.")
    p.add_argument("--dvc-yaml", default="dvc.yaml", help="pipeline file (default: %(default)s)")
    p.add_argument("--out", default="data/plots", help="output folder (default: %(default)s)")

    p = sub.add_parser("segments", help="contact sheet of photo segmentation: photo | cut-out | mask outline",
                       description="Segment the photos of a folder (generate.folder's layout) or the packaged photos "
                                   "exactly as generate does, and draw each photo beside its cut-out and its mask "
                                   "outline, with the mask-quality score and whether generate.min_segment_score "
                                   "keeps it.")
    p.add_argument("-p", "--params", default="params.yaml", help="params file (default: %(default)s)")
    p.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param (repeatable)")
    p.add_argument("--folder", default=None, help="photo folder (default: params generate.folder)")
    p.add_argument("--packaged", action="store_true", help="the packaged photos instead of a folder")
    p.add_argument("--out", default="segments.png",
                   help="image to write, PNG or JPEG (quality 50) by its suffix (default: %(default)s)")
    p.add_argument("--per-row", type=int, default=2, help="photos per sheet row (default: %(default)s)")
    p.add_argument("--thumb", type=int, default=160, help="side of each tile, pixels (default: %(default)s)")

    p = sub.add_parser("infer", help="images of a reference photo's subject with the trained adapter (needs stage 2)",
                       description="Encode --ref with the trained subject encoder in --model-dir and generate "
                                   "--n-images images of its subject with Stable Diffusion and the exported "
                                   "IP-Adapter (train.stage2).")
    p.add_argument("-p", "--params", default="params.yaml", help="params file (default: %(default)s)")
    p.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a param (repeatable)")
    p.add_argument("--ref", metavar="IMAGE", required=True, help="reference photo of the subject")
    p.add_argument("--prompt", required=True, help="text prompt, e.g. 'a photo of it on a beach'")
    p.add_argument("--out", default="data/reference", help="output folder (default: %(default)s)")
    p.add_argument("--model-dir", default=STAGES["train"].outputs["out"],
                   help="trained encoder + ip_adapter.safetensors (default: %(default)s)")
    p.add_argument("--pipeline", default=None, help="Stable Diffusion pipeline folder or cached hub id "
                                                     "(default: params train.stage2.model)")
    p.add_argument("-n", "--n-images", type=int, default=4, help="images to write (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first image; image i uses seed+i")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default: %(default)s)")
    p.add_argument("--guidance", type=float, default=7.0, help="classifier-free guidance (default: %(default)s)")
    p.add_argument("--scale", type=float, default=1.0, help="adapter strength, 0 = text only (default: %(default)s)")
    return parser


def cmd_stage(args: argparse.Namespace) -> int:
    stage = STAGES[args.command]
    from spotdiff.config import load_params  # here: pydantic and the sections cost ~0.12 s a command

    params = load_params(args.params, args.overrides)  # fail fast, before any work or Prefect
    given = {role: getattr(args, f"path_{role}") for role in {**stage.inputs, **stage.outputs}}
    if stage.name == "publish" and given["params_file"] is None:
        given["params_file"] = args.params  # the release ships the params file the stage read
    paths = stage.paths(**given)
    options = {name: getattr(args, f"opt_{name}") for name in stage.options}
    _warn_on_pipeline_outputs(stage, paths)
    try:
        line = _run_stage(stage, args, params, paths, options)
    except OSError as err:
        _name_the_output(err, ", ".join(str(paths[r]) for r in stage.outputs))
        raise
    if int(os.environ.get("RANK", "0")) == 0:
        print(line)
    return 0


def _warn_on_pipeline_outputs(stage: Stage, paths: dict[str, Path]) -> None:
    """Say so, loudly, when a stage run by hand (not by ``dvc repro``, which sets DVC_STAGE) is about to
    replace an existing output of the DVC pipeline: the repository's outputs then no longer match dvc.lock."""
    if os.environ.get("DVC_STAGE"):
        return
    for role, default in stage.outputs.items():
        if role not in stage.persist and paths[role] == Path(default) and Path(default).exists():
            print(f"spotdiff {stage.name}: replacing {default}, an output of the DVC pipeline: `dvc status` will "
                  f"show it changed and `dvc checkout {default}` restores it; pass --{role.replace('_', '-')} "
                  "elsewhere to keep it", file=sys.stderr, flush=True)


def _name_the_output(err: OSError, where: str) -> None:
    """A write that failed for want of space or permission names no file (only ``open`` does): name where the
    command was writing, so its one-line message says where space or permission is missing."""
    if err.filename is None and err.errno in OS_CONDITIONS:
        err.filename = where


def _run_stage(stage: Stage, args: argparse.Namespace, params, paths: dict, options: dict) -> str:
    if args.prefect:
        from flows.server import local_server
        from flows.stages import stage_flow

        # Our own server (unless PREFECT_API_URL is set), not Prefect's temporary one: that one runs in this
        # process group, so a Ctrl-C stops it first and the flow's last API calls then retry for many seconds.
        with local_server():
            stats = stage_flow(stage.name, args.params, tuple(args.overrides), paths, progress=not args.quiet,
                               options=options)
        return stats["summary"]
    return stage.load()(params, paths, progress=not args.quiet, **options).summary()


def cmd_infer(args: argparse.Namespace) -> int:
    """Images of the reference photo's subject with the model folder's encoder and adapter, on the
    --pipeline (default params train.stage2.model) at train.stage2.resolution and .device."""
    from spotdiff.common.diffusion import PARAMS_KEY
    from spotdiff.generate.reference import run_reference_generation
    from spotdiff.model.trained import subject_encoder

    from spotdiff.config import load_params

    params = load_params(args.params, args.overrides)
    model_dir = Path(args.model_dir)
    adapter = model_dir / "ip_adapter.safetensors"
    pipeline = args.pipeline or params.train.stage2.model
    if not pipeline:
        raise SpotdiffError("no Stable Diffusion pipeline: pass --pipeline or set train.stage2.model in params.yaml")
    # A missing or mismatched adapter fails here, before the photo or the pipeline is touched.
    encode = subject_encoder(model_dir, params.embed, adapter=adapter)
    try:
        paths = run_reference_generation(args.ref, args.prompt, args.out, subject_encoder=encode,
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


def cmd_segments(args: argparse.Namespace) -> int:
    """Photo | cut-out | outline sheet of a photo folder or the packaged photos, as generate segments them."""
    from spotdiff.config import load_params
    from spotdiff.generate.photo_sheet import folder_items, packaged_items, photo_sheet

    cfg = load_params(args.params, args.overrides).generate
    if args.packaged:
        items = packaged_items()
    else:
        folder = args.folder or cfg.folder
        if not folder:
            raise ConfigError("segments: no photo folder (pass --folder, or set generate.folder)")
        items = folder_items(Path(folder))
    sheet, rows = photo_sheet(items, cfg, per_row=args.per_row, thumb=args.thumb)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    jpeg = Path(args.out).suffix.lower() in (".jpg", ".jpeg")
    sheet.save(args.out, **({"quality": 50, "optimize": True} if jpeg else {}))
    for r in rows:
        print(f"{r.item}\t{r.backend}\t{r.score:.3f}\t{'kept' if r.kept else r.reason}")
    print(f"segments: {sum(r.kept for r in rows)}/{len(rows)} photos kept "
          f"(generate.min_segment_score = {cfg.min_segment_score}); sheet {args.out}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from spotdiff.publish.verify import safe_extract, verify

    rep = verify(args.release, key=args.key)
    splits = ", ".join(f"{k} {v}" for k, v in rep.splits.items())
    print(f"verify: OK {rep.version}: {rep.samples} samples ({splits}), {rep.shards} shards, {rep.files} files, "
          f"signature: {rep.signature}")
    if args.extract:
        try:
            print(f"verify: extracted to {safe_extract(args.release, args.extract, key=args.key)}")
        except OSError as err:
            _name_the_output(err, args.extract)
            raise
    return 0


def cmd_pins(args: argparse.Namespace) -> int:
    from spotdiff.common import determinism

    sys.stdout.write(determinism.exports())
    print(f"# CPU feature level: {determinism.level()}", file=sys.stderr)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from spotdiff.publish.sign import keygen

    private, public, kid = keygen(args.path)
    print(f"keygen: key {kid}: private {private} (keep it secret; `spotdiff publish --sign {private}`), "
          f"public {public} (`spotdiff verify RELEASE --key {public}`)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from spotdiff.publish.compare import Tolerances, compare

    result = compare(args.a, args.b, Tolerances(args.max_pixel_diff, args.max_mean_pixel_diff, args.max_label_diff,
                                                args.max_metric_diff))
    print(result.report(), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(result.as_dict(), indent=2, sort_keys=True, default=str) + "\n")
    return 0 if result.equivalent else 1


def cmd_verify_shards(args: argparse.Namespace) -> int:
    from spotdiff.common.shardset import verify_shards

    n = verify_shards(args.dir)
    print(f"verify-shards: {n} samples match SHA256SUMS and index.parquet in {args.dir}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from spotdiff.prune import prune_features

    cache_dir = args.cache_dir
    if cache_dir is None:
        from spotdiff.config import load_params

        cache_dir = load_params(args.params).train.cache_dir
    result = prune_features(cache_dir, None if args.all else args.shards, dry_run=args.dry_run)
    for path in result.removed:
        print(f"{'would remove' if args.dry_run else 'removed'} {path}")
    print(result.summary())
    return 0


def cmd_plots(args: argparse.Namespace) -> int:
    from flows.plots import render_plots

    for png in render_plots(args.dvc_yaml, args.out):
        print(png)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if not Path("dvc.yaml").exists():
        raise MissingInputError("dvc.yaml not found: run `spotdiff run` from the repository root")
    from spotdiff.config import load_params
    from spotdiff.stages import check_param_paths

    # before DVC, which says only "unexpected error" on a null folder
    check_param_paths(load_params("params.yaml").model_dump())
    # dvc starts each stage as `spotdiff ...`: this environment's command, whether or not it is activated.
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    t0 = time.perf_counter()
    if not args.targets and _up_to_date():
        # Nothing to build: skip the Prefect server (most of the ~11 s a no-op run took) and its flow run.
        print(f"run: dvc status: data and pipelines are up to date ({time.perf_counter() - t0:.1f} s); nothing to run",
              flush=True)
        _print_outputs()
        return 0
    if args.no_prefect:
        rc = run_child([sys.executable, "-m", "dvc", "repro", *args.targets], label="dvc repro").returncode
        print(f"run: dvc repro finished in {time.perf_counter() - t0:.1f} s", flush=True)
    else:
        from flows.pipeline import repro_flow
        from flows.server import local_server

        with local_server() as url:
            print(f"prefect: API at {url}", flush=True)
            t_dvc = time.perf_counter()
            rc = repro_flow(list(args.targets))
            print(f"run: dvc repro finished in {time.perf_counter() - t_dvc:.1f} s", flush=True)
    if rc != 0:
        print(f"run: dvc repro failed with exit code {rc}", file=sys.stderr)
        return rc
    print(f"run: pipeline done in {time.perf_counter() - t0:.1f} s")
    _print_outputs()
    return 0


def _up_to_date() -> bool:
    """Whether ``dvc status`` finds every stage up to date (its exit code 0 with ``-q``); False when it cannot say."""
    return run_child([sys.executable, "-m", "dvc", "status", "-q"], label="dvc status", capture=True).returncode == 0


def _print_outputs() -> None:
    from spotdiff.evaluate.run import headline_summary

    shards = Path(STAGES["shard"].outputs["out"])
    if (shards / "sizes.json").exists():
        print(f"run: shards in {shards}/ : {json.dumps(json.loads((shards / 'sizes.json').read_text()))}")
        print(f"run: look at {shards / 'contact_sheet.png'} and {STAGES['train'].outputs['out']}/losses.png")
    headline = Path(STAGES["evaluate"].outputs["out"]) / "headline.json"
    if headline.exists():
        h = json.loads(headline.read_text())
        print(f"run: evaluation ({headline.parent}/report.md), {headline_summary(h)}")
    for tar in sorted(Path(STAGES["publish"].outputs["out"]).glob("*.tar")):
        print(f"run: release {tar} (sha256 {Path(f'{tar}.sha256').read_text().split()[0]}); "
              f"check it with `spotdiff verify {tar}`")


COMMANDS = {**{name: cmd_stage for name in STAGES}, "run": cmd_run, "verify": cmd_verify,
            "verify-shards": cmd_verify_shards, "gc": cmd_gc, "plots": cmd_plots, "infer": cmd_infer,
            "keygen": cmd_keygen, "compare": cmd_compare, "pins": cmd_pins, "segments": cmd_segments}


OS_CONDITIONS = {
    errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied", errno.EPERM: "operation not permitted", errno.EROFS: "read-only file system",
    errno.EEXIST: "already exists", errno.ENOTEMPTY: "folder not empty", errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "not a folder (a path component is a file)", errno.EISDIR: "is a folder",
    errno.ENAMETOOLONG: "file name too long", errno.ELOOP: "too many levels of symbolic links",
}
"""OS errors that are conditions of the machine or of the paths given, not bugs: one line, no traceback."""


def os_condition(err: OSError) -> str | None:
    """One line for an expected OS condition (``OS_CONDITIONS``) naming the path, or None for any other."""
    what = OS_CONDITIONS.get(err.errno)
    if what is None:
        return None
    paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
    where = " -> ".join(paths) if paths else (err.strerror or str(err))
    hint = {errno.ENOSPC: "; free some space and run again", errno.EDQUOT: "; free some space and run again"}
    return f"{what}: {where}{hint.get(err.errno, '')}"


def resume_hint(command: str) -> str:
    """How to carry on after ``command`` was interrupted."""
    if command == "run":
        return "rerun `spotdiff run`: finished stages are skipped; generate keeps its finished chunks, train resumes its checkpoint"
    if command == "train":
        return "rerun the same command: train resumes its last checkpoint (--checkpoint)"
    if command == "generate":
        return "rerun the same command: the chunks it finished are kept (<out>.partial/) and the rest are built"
    if command in STAGES:
        return "rerun the same command: it starts the stage afresh"
    return "rerun the same command"


def main(argv: list[str] | None = None) -> int:
    """The ``spotdiff`` command; returns its exit code (see the module docstring)."""
    command = ""
    with handle_signals(keep_watchdog=argv is None):
        try:
            args = build_parser().parse_args(argv)
            command = args.command
            try:
                return COMMANDS[args.command](args)
            except ConfigError as err:
                print(f"spotdiff {args.command}: config error\n{err}", file=sys.stderr)
                return err.exit_code
            except SpotdiffError as err:
                print(f"spotdiff {args.command}: {err}", file=sys.stderr)
                return err.exit_code
            except OSError as err:
                line = os_condition(err)
                if line is None:
                    raise
                print(f"spotdiff {args.command}: {line}", file=sys.stderr)
                return 1
        except KeyboardInterrupt as err:  # Interrupted, or a Ctrl-C before the handlers were in place
            signum = err.signum if isinstance(err, Interrupted) else 2
            stop_children(signum)  # any still running in another thread (a Prefect task's)
            children = stopped()
            during = f" during `{children[-1]}`" if children else ""
            print(f"spotdiff {command}: interrupted by {Interrupted(signum).name}{during}; {resume_hint(command)}",
                  file=sys.stderr, flush=True)
            return Interrupted(signum).exit_code


if __name__ == "__main__":
    sys.exit(main())

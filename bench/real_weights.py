"""The pipeline on real weights: CLIP backbone, stage 2 on Stable Diffusion 1.5, a DreamBench-style check.

Runs generate -> qa -> shard -> train -> evaluate into --out with `embed.backend: clip` on the --clip
checkpoint (and, with --sd, train.stage2 on that pipeline), then, with --sd, generates images of every
reference subject in --photos with the trained adapter for DreamBench prompts and scores them (CLIP-I, DINO,
CLIP-T: spotdiff/generate/scores.py, spotdiff/generate/dreambench.py) beside the IP-Adapter SD1.5 anchors.
Weights are read from local folders (or the local Hugging Face cache), never downloaded; a missing one stops
the script before any work, naming the flag and the params key it sets. docs/evaluation.md, "Running with
real weights", has the command for a GPU machine.

    .venv/bin/python bench/real_weights.py --clip /models/clip-vit-base-patch32 \\
        --sd /models/stable-diffusion-v1-5 --dino /models/dino-vits16 --out /scratch/rw

Writes the stage outputs under --out (generated/, qa/, shards/, train/, eval/, metrics/), the generated
images under --out/dreambench/<subject>/, and --out/real_weights.json and .md. Models smaller than any
released checkpoint, or CLIP weights that cannot name the photos' classes, are reported as tiny/random
weights: the numbers then mean nothing. Exit 0 when done, 2 for a bad argument or missing weights, 1 for
another expected failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers or huggingface_hub read their settings

import spotdiff  # noqa: E402,F401  (first: the CPU pins)
from spotdiff.common.paths import portable  # noqa: E402
from spotdiff.common.weights import locate_folder, resolve_device  # noqa: E402
from spotdiff.errors import ConfigError, SpotdiffError  # noqa: E402
from spotdiff.generate import scores  # noqa: E402
from spotdiff.stages import STAGES, paths_under  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ("generate", "qa", "shard", "train", "evaluate")
SD_HOW_TO = ("weights are never downloaded here; on a machine with network: `hf download "
             "stable-diffusion-v1-5/stable-diffusion-v1-5 --local-dir DIR`, then copy DIR here")
SD_RELEASED = {"cross_attention_dim": 768, "first_block": 320}
"""Stable Diffusion 1.5's UNet: text-token width and first block's channels; a smaller UNet is a test model."""
LABELS = {"clip_i": "CLIP-I", "dino": "DINO", "clip_t": "CLIP-T"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    w = ap.add_argument_group("weights (local folders or cached hub ids; never downloaded)")
    w.add_argument("--clip", required=True, metavar="PATH", help="CLIP checkpoint: the backbone (sets embed.model) "
                   "and, unless --score-clip, the scorer of CLIP-I and CLIP-T (a full CLIPModel: its text tower too)")
    w.add_argument("--sd", metavar="PATH", help="Stable Diffusion 1.5 diffusers folder (sets train.stage2.model); "
                   "without it stage 2 and the generation check are skipped")
    w.add_argument("--dino", metavar="PATH", help="DINO ViT (e.g. facebook/dino-vits16) for the DINO score; "
                   "without it DINO is not measured")
    w.add_argument("--score-clip", metavar="PATH", help="another CLIP checkpoint to score with (default: --clip)")
    ap.add_argument("--photos", default=str(ROOT / "data/photos/dreambench-dev"), metavar="DIR",
                    help="reference photos, a subfolder per subject (default: data/photos/dreambench-dev)")
    ap.add_argument("--out", required=True, metavar="DIR", help="where every output goes")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("-p", "--params", default=str(ROOT / "params.yaml"), help="params file (default: the repository's)")
    ap.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a param after this script's own (repeatable)")
    s = ap.add_argument_group("sizes (defaults: params.yaml; small values run the script on CPU)")
    s.add_argument("--groups", type=int, help="generate.n_groups")
    s.add_argument("--image-size", type=int, help="generate.image_size, pixels")
    s.add_argument("--stage2-steps", type=int, help="train.stage2.steps")
    s.add_argument("--resolution", type=int, help="train.stage2.resolution: stage-2 training and generation side, px")
    g = ap.add_argument_group("generation check")
    g.add_argument("--prompts", type=int, default=5, help="first N of the 10 DreamBench prompts (default: %(default)s)")
    g.add_argument("--images", type=int, default=4, help="images per subject and prompt (default: %(default)s)")
    g.add_argument("--subjects", type=int, help="first N subjects of --photos (default: all)")
    g.add_argument("--steps", type=int, default=50, help="denoising steps (default: %(default)s)")
    g.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance (default: %(default)s)")
    g.add_argument("--scale", type=float, default=1.0, help="adapter scale (default: %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of image 0; image i uses seed+i")
    g.add_argument("--no-text-only", action="store_true", help="skip the text-only (adapter scale 0) images")
    ap.add_argument("--from-stage", default="generate", choices=[*PIPELINE, "dreambench"],
                    help="start here; earlier stages' outputs must already be in --out (default: %(default)s)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    if not 1 <= args.prompts <= len(scores.DREAMBENCH_PROMPTS):
        ap.error(f"--prompts must be 1..{len(scores.DREAMBENCH_PROMPTS)}")
    if args.images < 1 or args.steps < 1 or (args.subjects is not None and args.subjects < 1):
        ap.error("--images, --steps and --subjects must be >= 1")
    return args


# --------------------------------------------------------------------------- weights, checked before any work


def _config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


def _clip(value: str, flag: str, key: str | None) -> dict[str, Any]:
    """The CLIP folder behind ``flag``: its vision tower's size, input side and whether it has a text tower."""
    name = f"{flag} ({key})" if key else flag
    folder = scores.model_folder(value, name, scores.CLIP_HOW_TO)
    cfg = _config(folder)
    vision = cfg.get("vision_config", {}) if cfg.get("model_type") == "clip" else cfg
    hidden, layers = int(vision.get("hidden_size", 768)), int(vision.get("num_hidden_layers", 12))
    return {"flag": flag, "folder": folder, "path": portable(folder), "model_type": cfg.get("model_type"),
            "image_size": int(vision.get("image_size", 224)), "text_tower": cfg.get("model_type") == "clip",
            "architecture": f"CLIP ViT, vision hidden {hidden}, {layers} layers, patch {vision.get('patch_size', 32)}",
            "tiny": scores.is_tiny("clip", hidden, layers)}


def _sd(value: str) -> dict[str, Any]:
    key = "--sd (train.stage2.model)"
    folder, _ = locate_folder(value, key, "a diffusers pipeline folder (model_index.json + component folders)", SD_HOW_TO)
    if not (folder / "model_index.json").is_file() or not (folder / "unet" / "config.json").is_file():
        raise ConfigError(f"{key} = {value!r}: {folder} has no model_index.json and unet/config.json, so it is not "
                          f"a diffusers Stable Diffusion pipeline; {SD_HOW_TO}")
    unet = json.loads((folder / "unet" / "config.json").read_text())
    cross, first = int(unet.get("cross_attention_dim", 768)), int(unet.get("block_out_channels", [320])[0])
    return {"flag": "--sd", "folder": folder, "path": portable(folder),
            "architecture": f"SD UNet, cross-attention {cross}, first block {first} channels",
            "tiny": cross < SD_RELEASED["cross_attention_dim"] or first < SD_RELEASED["first_block"]}


def _dino(value: str) -> dict[str, Any]:
    folder = scores.model_folder(value, "--dino", scores.DINO_HOW_TO)
    cfg = _config(folder)
    hidden, layers = int(cfg.get("hidden_size", 384)), int(cfg.get("num_hidden_layers", 12))
    return {"flag": "--dino", "folder": folder, "path": portable(folder),
            "architecture": f"ViT, hidden {hidden}, {layers} layers, patch {cfg.get('patch_size', 16)}",
            "tiny": scores.is_tiny("dino", hidden, layers)}


def check_weights(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every weight folder the arguments name, described; ConfigError naming the flag (and params key) of the
    first one missing or unusable."""
    found = {"clip": _clip(args.clip, "--clip", "embed.model")}
    if args.score_clip:
        found["score_clip"] = _clip(args.score_clip, "--score-clip", None)
    if args.sd:
        found["sd"] = _sd(args.sd)
        scorer = found.get("score_clip", found["clip"])
        if not scorer["text_tower"]:
            raise ConfigError(f"{scorer['flag']} = {args.score_clip or args.clip!r}: a vision-only CLIP checkpoint "
                              f"(model_type {scorer['model_type']!r}); CLIP-T needs a full CLIP checkpoint (text tower "
                              "and tokenizer): pass one with --score-clip")
    if args.dino:
        found["dino"] = _dino(args.dino)
    return found


def overrides(args: argparse.Namespace, weights: dict[str, dict[str, Any]], device: str, out: Path) -> list[str]:
    """The params this script sets (the user's -S come after and win)."""
    q = json.dumps  # a JSON string is a YAML string: paths with spaces or colons survive
    sets = ["embed.backend=clip", f"embed.model={q(str(weights['clip']['folder']))}", f"embed.device={device}",
            f"embed.image_size={weights['clip']['image_size']}", f"train.cache_dir={q(str(out / 'cache'))}"]
    if args.groups is not None:
        sets.append(f"generate.n_groups={args.groups}")
    if args.image_size is not None:
        sets.append(f"generate.image_size={args.image_size}")
    if "sd" in weights:
        sets += [f"train.stage2.model={q(str(weights['sd']['folder']))}", f"train.stage2.device={device}"]
        if args.stage2_steps is not None:
            sets.append(f"train.stage2.steps={args.stage2_steps}")
        if args.resolution is not None:
            sets.append(f"train.stage2.resolution={args.resolution}")
    return sets + list(args.overrides)


# --------------------------------------------------------------------------- the run


def run_stages(params: Any, out: Path, photos: Path, start: str, progress: bool) -> dict[str, Any]:
    """The pipeline stages from ``start`` into ``out``: name -> {seconds, summary}."""
    done = {}
    for name in PIPELINE[PIPELINE.index(start):] if start in PIPELINE else ():
        stage = STAGES[name]
        paths = paths_under(stage, out)
        if "photos" in paths:
            paths["photos"] = photos
        t0 = time.perf_counter()
        stats = stage.load()(params, paths, progress=progress)
        done[name] = {"seconds": round(time.perf_counter() - t0, 1), "summary": stats.summary()}
        print(f"[{done[name]['seconds']:.0f} s] {done[name]['summary']}", flush=True)
    return done


def dreambench(args: argparse.Namespace, params: Any, weights: dict[str, dict[str, Any]], device: str,
               out: Path, photos: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(weights check, generation check): the CLIP zero-shot check whenever the scoring CLIP has a text tower,
    the generation check with --sd."""
    from spotdiff.config import EmbedConfig
    from spotdiff.generate.dreambench import Scorers, read_subjects, run_check, weights_check
    from spotdiff.model.embed import ImageEncoder
    from spotdiff.model.trained import subject_encoder

    scorer = weights.get("score_clip", weights["clip"])
    if not scorer["text_tower"]:
        return None, None
    flag = scorer["flag"]
    subjects = read_subjects(photos, args.subjects)
    scorers = Scorers(ImageEncoder.from_config(EmbedConfig(backend="clip", model=str(scorer["folder"]), device=device)),
                      scores.TextEncoder.from_folder(str(scorer["folder"]), flag, device),
                      scores.DinoEncoder.from_folder(str(weights["dino"]["folder"]), "--dino", device)
                      if "dino" in weights and "sd" in weights else None)
    check = weights_check(subjects, scorers)
    if "sd" not in weights:
        return check, None
    model_dir = out / "train"
    adapter = model_dir / "ip_adapter.safetensors"
    encode = subject_encoder(model_dir, params.embed, adapter=adapter)
    t0 = time.perf_counter()
    gen = run_check(subjects, out / "dreambench", encode=encode, pipeline_model=str(weights["sd"]["folder"]),
                    adapter_path=adapter, scorers=scorers, prompts=scores.DREAMBENCH_PROMPTS[:args.prompts],
                    n_images=args.images, seed=args.seed, steps=args.steps, guidance=args.guidance,
                    size=params.train.stage2.resolution, scale=args.scale, device=device,
                    text_only=not args.no_text_only, progress=not args.quiet)
    gen["seconds"] = round(time.perf_counter() - t0, 1)
    gen["folder"] = portable(out / "dreambench")
    print(f"[{gen['seconds']:.0f} s] dreambench: {gen['images']} images of {len(gen['per_subject'])} subjects", flush=True)
    return check, gen


def warning(weights: dict[str, dict[str, Any]], check: dict[str, Any] | None) -> str | None:
    """The tiny/random-weights warning, or None when every model has a released size and CLIP looks trained."""
    reasons = [f"{w['flag']} is smaller than any released checkpoint ({w['architecture']})"
               for w in weights.values() if w["tiny"]]
    if check is not None and not check["trained"]:
        reasons.append(f"CLIP zero-shot top-1 on the photos' {check['classes']} classes is {check['clip_zero_shot_top1']:.3f} "
                       f"(chance {check['chance']:.3f}): the weights look untrained")
    if not reasons:
        return None
    return ("TINY OR RANDOM WEIGHTS: " + "; ".join(reasons) + ". Every number in this report is meaningless; the "
            "run shows only that the code runs end to end.")


def report(args: argparse.Namespace, weights: dict[str, dict[str, Any]], device: str, sets: list[str],
           stages: dict[str, Any], headline: dict[str, Any] | None, check: dict[str, Any] | None,
           gen: dict[str, Any] | None, seconds: float) -> dict[str, Any]:
    notes = []
    if "sd" not in weights:
        notes.append("no --sd: stage 2 and the generation check did not run")
    if "dino" not in weights:
        notes.append("no --dino: DINO not measured")
    if check is None:
        notes.append("the scoring CLIP has no text tower: no zero-shot weights check")
    return {
        "warning": warning(weights, check),
        "notes": notes,
        "device": device,
        "weights": {k: {n: v for n, v in w.items() if n != "folder"} for k, w in weights.items()},
        "overrides": [s.replace(str(ROOT) + "/", "") for s in sets],
        "stages": stages,
        "evaluation": headline,
        "weights_check": check,
        "generation": gen,
        "anchors": {"source": "IP-Adapter (SD 1.5) on DreamBench, as quoted in issue 18", **scores.ANCHORS},
        "seconds": round(seconds, 1),
    }


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown(r: dict[str, Any]) -> str:
    lines = ["# SpotDiff on real weights (bench/real_weights.py)", ""]
    if r["warning"]:
        lines += [f"> **WARNING: {r['warning']}**", ""]
    lines += [" ".join([f"Device: {r['device']}.", *(f"{n[:1].upper()}{n[1:]}." for n in r["notes"])]), "",
              "| model | flag | folder | architecture | released size |", "|---|---|---|---|---|"]
    for k, w in r["weights"].items():
        lines.append(f"| {k} | `{w['flag']}` | `{w['path']}` | {w['architecture']} | {'no (tiny)' if w['tiny'] else 'yes'} |")
    c = r["weights_check"]
    if c:
        lines += ["", f"CLIP weights check: zero-shot top-1 {c['clip_zero_shot_top1']:.3f} over {c['classes']} classes "
                      f"of {c['photos']} photos (chance {c['chance']:.3f}): {'trained' if c['trained'] else 'looks UNTRAINED'}."]
    if r["stages"]:
        lines += ["", "## Stages", "", "| stage | seconds | summary |", "|---|---|---|"]
        lines += [f"| {n} | {s['seconds']:.1f} | {s['summary']} |" for n, s in r["stages"].items()]
    h = r["evaluation"]
    if h:
        lines += ["", "## Evaluation (protocol 2, test split; docs/evaluation.md)", "",
                  f"Verdict **{h['verdict']}**; checks: " + ", ".join(f"{k} {v}" for k, v in h["checks"].items()), "",
                  "| metric | subject feature | best baseline |", "|---|---|---|"]
        for k, v in h["subject"].items():
            if k in h["best_baseline"]:
                lines.append(f"| {k} | {v:.3f} | {h['best_baseline'][k]:.3f} (`{h['best_baseline_name'][k]}`) |")
    g = r["generation"]
    if g:
        a = r["anchors"]
        lines += ["", "## DreamBench-style generation check", "",
                  f"{len(g['per_subject'])} subjects x {len(g['prompts'])} prompts x {len(g['seeds'])} images, "
                  f"{g['steps']} steps, guidance {g['guidance']}, adapter scale {g['scale']}, {g['size']} px; "
                  "cosines in [-1, 1], mean over subjects. Real photos: distinct photos of one subject against each "
                  f"other. Anchors: {a['source']}; comparable only when scored with the same CLIP variant.", "",
                  "| metric | adapter | text only (scale 0, same seeds) | real photos | IP-Adapter SD1.5 anchor |",
                  "|---|---|---|---|---|"]
        for m, label in LABELS.items():
            row = g["metrics"][m]
            lines.append(f"| {label} | {_f(row.get('adapter'))} | {_f(row.get('text_only'))} | {_f(row.get('real'))} "
                         f"| {a[m]:.3f} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from spotdiff.config import load_params

    t0 = time.perf_counter()
    weights = check_weights(args)  # every weight folder, before any work
    device = resolve_device(args.device, "--device")
    out = Path(args.out).resolve()
    photos = Path(args.photos).resolve()
    if not photos.is_dir():
        raise ConfigError(f"--photos {args.photos}: no such folder (a subfolder of photos per subject)")
    sets = overrides(args, weights, device, out)
    params = load_params(args.params, sets)
    out.mkdir(parents=True, exist_ok=True)
    stages = run_stages(params, out, photos, args.from_stage, progress=not args.quiet)
    headline_file = out / "eval" / "headline.json"
    headline = json.loads(headline_file.read_text()) if headline_file.is_file() else None
    check, gen = dreambench(args, params, weights, device, out, photos)
    r = report(args, weights, device, sets, stages, headline, check, gen, time.perf_counter() - t0)
    (out / "real_weights.json").write_text(json.dumps(r, indent=1) + "\n")
    (out / "real_weights.md").write_text(markdown(r))
    if r["warning"]:
        print(f"WARNING: {r['warning']}", file=sys.stderr, flush=True)
    print(f"report: {out / 'real_weights.md'} and real_weights.json ({r['seconds']:.0f} s)", flush=True)
    return r


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        run(args)
    except SpotdiffError as err:
        print(f"real_weights: {err}", file=sys.stderr, flush=True)
        return 2 if isinstance(err, ConfigError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

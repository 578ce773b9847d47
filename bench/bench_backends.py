"""Per-image CPU time of every model-backed step, each next to a decode+resize baseline from the same run.

    .venv/bin/python bench/bench_backends.py [--quick] [--only NAME,...] [--json PATH]

Every row times one backend through the project's own code path (the ``spotdiff.generate.segment``
registry, ``spotdiff.generate.pose.landmarks``, ``spotdiff.common.diffusion.generate_image`` / ``harmonise``,
the ``diffusion`` source and background bank, ``spotdiff.model.embed.ImageEncoder``) and, right
before it, the **baseline**: decoding the row's input JPEG(s) with PIL and resizing to
224 x 224 (bicubic), best of 5 passes. Times are process CPU seconds (all threads; wall clock is
recorded too), with torch and OpenCV on one thread, as each ``generate`` worker runs (one worker
per core). Machines here are shared, so the ratio to the baseline is the number to quote; the
load average is recorded with every row. On this 2-core machine under load, two torch threads
spin-waited on each other and made small models 10-30x slower: one thread avoids that.

Rows (``calls/group`` = how many times one subject group of ``spotdiff.generate.run`` calls it):

- segmentation, once per photo-sourced group (folder, packaged and diffusion subjects):
  ``alpha``, ``grabcut``, ``mediapipe`` (selfie, people), ``sam`` with a tiny SAM and with the
  real-size ``vit_b`` architecture (random weights saved to a checkpoint and loaded by
  ``register_sam``; weights do not change the arithmetic, so the time is that of the real model);
- MediaPipe pose landmarks, once per person photo;
- procedural renderer, 2 renders per procedural group (P0, P1);
- Stable Diffusion: the subject source (1 image per group), the ``diffusion`` background kind
  (2 per group: B0 and B1, when it is the only kind) and outline inpainting (3 per group: the
  anchor, bg and pose composites). Tiny random pipelines run through ``load_pipeline`` and the
  real call sites (plumbing cost). The real-size rows build the SD 1.5 architecture (UNet
  320/640/1280/1280, cross-attention 768; VAE 128/256/512/512; CLIP text encoder 768 x 12) with
  random weights and SD 1.5's PNDM scheduler, run ``generate_image`` (2 steps) and ``harmonise``
  (1 step) at 512 px with guidance 7 (UNet batch 2), and time every UNet call, VAE pass and text
  encoding; a 25-step image is projected as the measured cost outside the UNet + (UNet calls of
  25 scheduler steps: 26 with PNDM) x (median UNet call after the first);
- CLIP image features (``ImageEncoder.features``), 3 views per group (QA's ``embed`` identity
  encoder embeds the three subject crops; training takes features of the three views): the embedded encoder and
  the real-size ViT-B/32 and ViT-L/14 vision towers with random weights, saved with
  ``save_pretrained`` and loaded through ``embed.backend: clip``.

``--quick`` skips the real-size models (SAM vit_b, SD 1.5, CLIP ViT-B/32 and ViT-L/14); the full
run takes about 7-8 minutes on 2 cores (``--quick``: about 1-1.5 minutes). Projections: core-hours =
CPU s x calls per group x 10 000 groups; on this CPU = core-hours / cores (one worker per core,
perfect scaling: a lower bound). Writes bench/out/backends.json and prints a markdown table.
``--only`` takes row groups: alpha, grabcut, mediapipe, landmarks, procedural, sam_tiny,
sam_vit_b, sd_tiny, sd15, clip_embedded, clip_vit_b32, clip_vit_l14. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from spotdiff.generate import segment  # noqa: E402
from spotdiff.config import DiffusionConfig, EmbedConfig, GenerateConfig, SamConfig  # noqa: E402
from spotdiff.common.images import Photo, load_photo  # noqa: E402

DREAMBENCH = ROOT / "data/photos/dreambench-dev"
GROUPS = 10_000
"""Groups in the projection (SpotDiff10k)."""
SIZE = 512
"""Photo and output side, pixels (the full SpotDiff10k profile: generate.image_size = 512)."""
BASELINE_SIDE = 224
CORES = len(os.sched_getaffinity(0))
"""The projection on this CPU runs one single-threaded worker per core (as ``generate`` does)."""
REAL_SIZE = ("sam_vit_b", "sd15", "clip_vit_b32", "clip_vit_l14")
"""Row groups that build real-size architectures; ``--quick`` skips them."""


# --------------------------------------------------------------------------- measuring


def load_1m() -> float:
    return round(os.getloadavg()[0], 2)


def decode_resize(path: Path) -> np.ndarray:
    """The baseline: PIL-decode a JPEG and resize it to 224 x 224 (bicubic)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((BASELINE_SIDE, BASELINE_SIDE), Image.Resampling.BICUBIC))


class Clock:
    """Wall and process CPU seconds of a block (CPU time counts every thread of this process)."""

    def __enter__(self) -> "Clock":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


def per_item(fn: Callable[[Any], Any], items: list, repeats: int, warmup: bool = True) -> tuple[float, float]:
    """(CPU s, wall s) per item of ``fn(item)`` over ``items``: the pass with the least CPU time of
    ``repeats`` passes, after one warm-up call on the first item."""
    if warmup:
        fn(items[0])
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        with Clock() as c:
            for item in items:
                fn(item)
        best = min(best, (c.cpu / len(items), c.wall / len(items)))
    return best


def baseline(paths: list[Path], repeats: int = 5) -> tuple[float, float]:
    """(CPU s, wall s) per image of ``decode_resize`` over ``paths``, best of ``repeats`` passes."""
    return per_item(decode_resize, paths, repeats, warmup=False)


class CallTimer:
    """Replace ``obj.attr`` (a bound method or ``forward``) with a version that records each call's
    (CPU s, wall s)."""

    def __init__(self, obj: Any, attr: str):
        self.calls: list[tuple[float, float]] = []
        original = getattr(obj, attr)

        def timed(*a, **k):
            with Clock() as c:
                out = original(*a, **k)
            self.calls.append((c.cpu, c.wall))
            return out
        setattr(obj, attr, timed)

    def total(self, i: int = 0) -> float:
        """Summed CPU (``i`` = 0) or wall (1) seconds of every call."""
        return sum(c[i] for c in self.calls)


# --------------------------------------------------------------------------- inputs


class Inputs:
    """The photos every row uses: dreambench-dev ``*/00.jpg`` (one per subject) and the scikit-image
    astronaut (the one person photo), saved as JPEG so its baseline is a JPEG decode too."""

    def __init__(self, tmp: Path):
        paths = sorted(DREAMBENCH.glob("*/00.jpg"))
        if not paths:
            sys.exit(f"no photos under {DREAMBENCH}")
        classes = dict(line.split(",") for line in (DREAMBENCH / "classes.csv").read_text().split()[1:])
        self.paths = paths
        self.photos = [load_photo(p, 40_000_000, work_size=SIZE) for p in paths]
        self.classes = [classes.get(p.parent.name, p.parent.name) for p in paths]
        import skimage.data

        rgb = np.ascontiguousarray(skimage.data.astronaut()[:, :, :3])
        self.person_path = tmp / "astronaut.jpg"
        Image.fromarray(rgb).save(self.person_path, quality=92)
        self.person = Photo(rgb, None, (rgb.shape[1], rgb.shape[0]))

    def subjects(self) -> list[tuple[Photo, str]]:
        return list(zip(self.photos, self.classes))


# --------------------------------------------------------------------------- rows


def row(name: str, backend: str, setting: str, per_image: tuple[float, float], images: int,
        base: tuple[float, float], calls: float, calls_note: str, input_desc: str, **detail: Any) -> dict[str, Any]:
    """One table row; ``per_image`` and ``base`` are (CPU s, wall s) per image."""
    core_h = per_image[0] * calls * GROUPS / 3600
    return {
        "row": name, "backend": backend, "setting": setting, "input": input_desc, "images_timed": images,
        "per_image_cpu_s": per_image[0], "per_image_wall_s": per_image[1],
        "baseline_cpu_s": base[0], "baseline_wall_s": base[1], "x_baseline": per_image[0] / base[0],
        "calls_per_group": calls, "calls_note": calls_note, "projected_10k_core_h": core_h,
        "projected_10k_h_this_cpu": core_h / CORES, "load_1m": load_1m(), **detail,
    }


def bench_alpha(inp: Inputs, tmp: Path) -> list[dict]:
    # Photos that carry transparency: the alpha channel is a GrabCut mask of each photo.
    grab = segment.get("grabcut")
    items = [(Photo(p.rgb, np.rint(grab(p, c).mask * 255).astype(np.uint8), p.source_size), c)
             for p, c in inp.subjects()]
    base = baseline(inp.paths)
    alpha = segment.get("alpha")
    t = per_item(lambda pc: alpha(*pc), items, repeats=5)
    return [row("alpha", "alpha", "generate.segment: alpha (or auto, photo with alpha)", t, len(items), base, 1,
                "per photo group", "8 dreambench-dev photos 512 px with an alpha channel")]


def bench_grabcut(inp: Inputs, tmp: Path) -> list[dict]:
    base = baseline(inp.paths)
    grab = segment.get("grabcut")
    t = per_item(lambda pc: grab(*pc), inp.subjects(), repeats=3)
    return [row("grabcut", "grabcut", "generate.segment: grabcut (or auto, not a person)", t, len(inp.paths), base,
                1, "per photo group", "8 dreambench-dev photos 512 px")]


def bench_mediapipe(inp: Inputs, tmp: Path) -> list[dict]:
    base = baseline([inp.person_path] * 8)
    selfie = segment.get("mediapipe")
    t = per_item(lambda p: selfie(p, "astronaut"), [inp.person] * 10, repeats=3)
    return [row("mediapipe", "mediapipe selfie segmentation", "generate.segment: mediapipe (or auto, person)", t,
                10, base, 1, "per person photo group", "astronaut 512 px")]


def bench_landmarks(inp: Inputs, tmp: Path) -> list[dict]:
    from spotdiff.generate.pose import landmarks

    base = baseline([inp.person_path] * 8)
    found = landmarks.detect(inp.person.rgb)  # builds the model (once per process)
    t = per_item(lambda rgb: landmarks.detect(rgb), [inp.person.rgb] * 10, repeats=3)
    return [row("landmarks", "MediaPipe pose landmarks (bundled model)", "generate.pose.landmarks: true", t, 10,
                base, 1, "per person photo group", "astronaut 512 px",
                landmarks_found=None if found is None else len(found))]


def bench_procedural(inp: Inputs, tmp: Path) -> list[dict]:
    from spotdiff.generate import sources
    from spotdiff.common.seeding import rng as seeded_rng

    cfg = GenerateConfig(image_size=SIZE, sources={"procedural": 1.0})
    source = sources.get("procedural")
    jobs = source.plan(cfg, 6, 0)
    side = round(0.7 * SIZE)  # middle of placement.scale [0.55, 0.85]
    base = baseline(inp.paths)
    per_group = per_item(lambda j: source.layers(j, cfg, seeded_rng(j.seed, "layers"), side), jobs, repeats=2)
    return [row("procedural", "procedural renderer (ray caster, supersample 2)", "generate.sources: {procedural: w}",
                (per_group[0] / 2, per_group[1] / 2), 2 * len(jobs), base, 2, "per procedural group: P0 and P1",
                f"6 procedural subjects, layer side {side} px")]


def _tiny_sam(checkpoint: str | None = None, seed: int = 0):
    """segment-anything's architecture at toy size (128 px input, 2 ViT blocks of width 32)."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    side, dim = 128, 32
    return Sam(
        image_encoder=ImageEncoderViT(img_size=side, patch_size=16, embed_dim=dim, depth=2, num_heads=2,
                                      mlp_ratio=2.0, out_chans=dim, qkv_bias=True,
                                      norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
                                      window_size=0),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(side // 16, side // 16),
                                     input_image_size=(side, side), mask_in_chans=4),
        mask_decoder=MaskDecoder(transformer_dim=dim, num_multimask_outputs=3, iou_head_depth=2,
                                 iou_head_hidden_dim=32,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2)),
    ).eval()


def bench_sam_tiny(inp: Inputs, tmp: Path) -> list[dict]:
    import torch
    from spotdiff.generate.segment.sam import SamSegmenter

    ckpt = tmp / "sam_tiny.pth"
    torch.save(_tiny_sam(seed=1).state_dict(), ckpt)
    seg = SamSegmenter(SamConfig(checkpoint=str(ckpt), device="cpu"), builder=_tiny_sam)
    base = baseline(inp.paths)
    t = per_item(lambda pc: seg(*pc), inp.subjects(), repeats=2)
    return [row("sam_tiny", "sam, tiny random SAM (128 px input)", "generate.segment: sam", t, len(inp.paths), base, 1,
                "per photo group", "8 dreambench-dev photos 512 px",
                note="prompting (coarse GrabCut mask, points) + predictor plumbing; model cost negligible")]


def bench_sam_vit_b(inp: Inputs, tmp: Path) -> list[dict]:
    import torch
    from segment_anything import sam_model_registry
    from spotdiff.generate.segment.sam import register_sam

    ckpt = tmp / "sam_vit_b_random.pth"
    torch.save(sam_model_registry["vit_b"]().state_dict(), ckpt)  # random weights, no file read
    register_sam(SamConfig(model_type="vit_b", checkpoint=str(ckpt), device="cpu", points=3))
    t0 = time.perf_counter()
    seg = segment.get("sam")  # builds vit_b and loads the checkpoint with torch.load(weights_only=True)
    load_s = time.perf_counter() - t0
    photo, cls = inp.subjects()[-2]  # teapot
    base = baseline(inp.paths)
    with Clock() as c:
        out = seg(photo, cls)
    ckpt.unlink()
    return [row("sam_vit_b", "sam vit_b (real size, random weights)", "generate.segment: sam, generate.sam.model_type: vit_b",
                (c.cpu, c.wall), 1, base, 1, "per photo group", "teapot 512 px (SAM resizes to 1024)", build_and_load_s=load_s,
                recorded=sorted(out.extra), note="one call, the first in the process (includes warm-up)")]


# --------------------------------------------------------------------------- Stable Diffusion


def _tokenizer(folder: Path):
    """A CLIP tokenizer over a few words (others split into letters); the text encoder always sees 77 tokens."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for w in "a photo of red blue teapot vase on plain white background studio lighting centered sunny beach".split():
        vocab[f"{w}</w>"] = len(vocab)
    for c in "abcdefghijklmnopqrstuvwxyz,.":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(f"{c}</w>", len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77,
                         pad_token="<|endoftext|>")


def _scheduler():
    """Stable Diffusion 1.5's scheduler: PNDM (PLMS steps), its published settings."""
    from diffusers import PNDMScheduler

    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                         set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)


def _sd_pipeline(kind: str, size: str, tmp: Path, text=None, vae=None):
    """A random Stable Diffusion pipeline of ``kind`` (text2img | inpaint) at ``size`` (tiny | sd15)."""
    import diffusers
    import torch
    import transformers

    tok = _tokenizer(tmp / f"tok-{size}")
    in_ch = 9 if kind == "inpaint" else 4
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if size == "tiny":
            unet = diffusers.UNet2DConditionModel(
                block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=in_ch, out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8)
            vae = vae or diffusers.AutoencoderKL(
                block_out_channels=(32, 64), latent_channels=4, layers_per_block=1,
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=64)
            text = text or transformers.CLIPTextModel(transformers.CLIPTextConfig(
                vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1))
        else:  # Stable Diffusion 1.5's architecture
            unet = diffusers.UNet2DConditionModel(
                sample_size=64, in_channels=in_ch, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                layers_per_block=2, cross_attention_dim=768, attention_head_dim=8,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
            vae = vae or diffusers.AutoencoderKL(
                block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2, sample_size=512,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
            text = text or transformers.CLIPTextModel(transformers.CLIPTextConfig(
                vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                num_hidden_layers=12, max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=0,
                eos_token_id=1, pad_token_id=1))
    cls = diffusers.StableDiffusionInpaintPipeline if kind == "inpaint" else diffusers.StableDiffusionPipeline
    pipe = cls(vae=vae.eval(), text_encoder=text.eval(), tokenizer=tok, unet=unet.eval(), scheduler=_scheduler(),
               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _person_composite(inp: Inputs) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut and her MediaPipe mask (uint8, 255 = person): a composite with an outline to repaint."""
    mask = segment.get("mediapipe")(inp.person, "astronaut").mask
    return inp.person.rgb, np.rint(mask * 255).astype(np.uint8)


def bench_sd_tiny(inp: Inputs, tmp: Path) -> list[dict]:
    """Tiny random pipelines saved and loaded through ``load_pipeline``, run through the real call sites."""
    from spotdiff.generate import sources
    from spotdiff.generate.background.bank import BackgroundBank
    from spotdiff.common.diffusion import harmonise, load_pipeline
    from spotdiff.common.seeding import rng as seeded_rng

    side = 64  # the tiny autoencoder halves the side once: 32 x 32 latents, the tiny UNet's size
    folders = {}
    for kind in ("text2img", "inpaint"):
        folders[kind] = tmp / f"sd-tiny-{kind}"
        _sd_pipeline(kind, "tiny", tmp).save_pretrained(folders[kind])
    dcfg = DiffusionConfig(model=str(folders["text2img"]), inpaint=True, inpaint_model=str(folders["inpaint"]),
                           device="cpu", image_size=side)
    cfg = GenerateConfig(image_size=side, sources={"diffusion": 1.0}, segment="grabcut", min_segment_score=0.0,
                         backgrounds={"diffusion": 1.0}, diffusion=dcfg)
    t0 = time.perf_counter()
    load_pipeline(dcfg.model, "text2img", "cpu")
    inpaint = load_pipeline(dcfg.inpaint_model, "inpaint", "cpu")
    load_s = time.perf_counter() - t0
    source = sources.get("diffusion")
    jobs = source.plan(cfg, 4, 0)
    bank = BackgroundBank({"diffusion": 1.0}, side, diffusion=dcfg)
    rgb, mask = _person_composite(inp)
    small = np.asarray(Image.fromarray(rgb).resize((side, side), Image.Resampling.BICUBIC))
    small_mask = np.asarray(Image.fromarray(mask).resize((side, side), Image.Resampling.BILINEAR))
    steps = f"{dcfg.steps} steps, guidance {dcfg.guidance}"
    base = baseline([inp.paths[-2]] * 8)
    subject = per_item(lambda j: source.layers(j, cfg, seeded_rng(j.seed, "layers"), side), jobs, repeats=1)
    base_bg = baseline([inp.paths[-2]] * 8)
    background = per_item(lambda s: bank.draw(s), [11, 12, 13, 14], repeats=1)
    base_h = baseline([inp.person_path] * 8)
    harm = per_item(lambda s: harmonise(inpaint, small, small_mask, dcfg.inpaint_band, s, "a photo of a astronaut",
                                          steps=dcfg.steps, guidance=dcfg.guidance), [1, 2, 3], repeats=1)
    note = "tiny random pipeline: plumbing cost only (scheduler, tokenizer, Python), not a model time"
    return [
        row("sd_subject_tiny", "SD subject source, tiny pipeline", "generate.sources: {diffusion: w}", subject, 4, base, 1,
            "per diffusion-source group", f"{side} px, {steps}; includes GrabCut and cutting the layer",
            pipelines_load_s=load_s, note=note),
        row("sd_background_tiny", "SD background kind, tiny pipeline", "generate.backgrounds: {diffusion: w}",
            background, 4, base_bg, 2, "B0 and B1, when diffusion is the only kind",
            f"{side} px, {steps}", note=note),
        row("sd_inpaint_tiny", "SD outline inpainting, tiny pipeline", "generate.diffusion.inpaint: true", harm, 3,
            base_h, 3, "anchor, bg and pose composites", f"{side} px composite, {steps}", note=note),
    ]


def _sd15_run(pipe, call: Callable[[], Any], steps_run: int, steps_target: int) -> dict[str, Any]:
    """Run ``call`` (one image, ``steps_run`` scheduler steps) with every UNet call, VAE pass and text
    encoding timed, and project an image of ``steps_target`` steps: the measured cost outside the UNet
    + (UNet calls for ``steps_target`` steps) x (median UNet call after the first, which warms up).
    Every ``*_s`` value is a (CPU s, wall s) pair."""
    timers = {"unet": CallTimer(pipe.unet, "forward"), "text_encoder": CallTimer(pipe.text_encoder, "forward"),
              "vae_encode": CallTimer(pipe.vae, "encode"), "vae_decode": CallTimer(pipe.vae, "decode")}
    with Clock() as c:
        call()
    unet = timers["unet"].calls
    later = unet[1:] or unet
    steady = tuple(statistics.median(x[i] for x in later) for i in (0, 1))
    fixed = (c.cpu - timers["unet"].total(0), c.wall - timers["unet"].total(1))
    sched = _scheduler()
    sched.set_timesteps(steps_target)
    n = len(sched.timesteps)  # PNDM's PLMS schedule makes one UNet call more than it has steps
    return {
        "run_steps": steps_run, "run_s": (c.cpu, c.wall), "unet_calls_s": unet, "unet_call_steady_s": steady,
        "unet_batch": 2, **{f"{k}_s": (t.total(0), t.total(1)) for k, t in timers.items() if k != "unet"},
        "fixed_s": fixed, "target_steps": steps_target, "target_unet_calls": n,
        "projected_image_s": (fixed[0] + n * steady[0], fixed[1] + n * steady[1]),
    }


TEXT2IMG_RUN_STEPS = 2
"""Scheduler steps actually run for text2img: PNDM makes 3 UNet calls, the last two give the steady call time."""
INPAINT_RUN_STEPS = 1
"""Steps actually run for inpainting: 1 UNet call (a first call; in a 2-step run it was ~4% above later ones)."""


def bench_sd15(inp: Inputs, tmp: Path) -> list[dict]:
    """SD 1.5 architecture, random weights, at 512 px through ``generate_image`` (text2img: the subject
    source and the background kind share it) and ``harmonise`` (a second UNet with 9 input channels,
    sharing the text encoder and VAE)."""
    from spotdiff.common.diffusion import generate_image, harmonise

    dcfg = DiffusionConfig()  # the defaults a user gets: 25 steps, guidance 7, 512 px, band 8
    t0 = time.perf_counter()
    pipe = _sd_pipeline("text2img", "sd15", tmp)
    build_s = time.perf_counter() - t0
    prompt = "a photo of a red teapot on a plain white background, studio lighting, centered"
    base = baseline([inp.paths[-2]] * 8)
    m = _sd15_run(pipe, lambda: generate_image(pipe, prompt, 1, dcfg.image_size, steps=TEXT2IMG_RUN_STEPS,
                                               guidance=dcfg.guidance), TEXT2IMG_RUN_STEPS, dcfg.steps)
    shape = f"{dcfg.image_size} px, {dcfg.steps} steps projected from {{}}, guidance {dcfg.guidance} (UNet batch 2)"
    out = [row("sd15_subject", "SD 1.5 text2img (subject), real size, random weights",
               "generate.sources: {diffusion: w}", m["projected_image_s"], 1, base, 1, "per diffusion-source group",
               shape.format(TEXT2IMG_RUN_STEPS), build_s=build_s, **m),
           row("sd15_background", "SD 1.5 text2img (background), real size, random weights",
               "generate.backgrounds: {diffusion: w}", m["projected_image_s"], 1, base, 2,
               "B0 and B1, when diffusion is the only kind", shape.format(TEXT2IMG_RUN_STEPS), build_s=build_s, **m)]
    text, vae = pipe.text_encoder, pipe.vae
    pipe = None  # frees the text2img pipeline before the inpainting one is built
    gc.collect()

    t0 = time.perf_counter()
    pipe = _sd_pipeline("inpaint", "sd15", tmp, text=text, vae=vae)
    build_s = time.perf_counter() - t0
    rgb, mask = _person_composite(inp)
    base = baseline([inp.person_path] * 8)
    m = _sd15_run(pipe, lambda: harmonise(pipe, rgb, mask, dcfg.inpaint_band, 1, "a photo of a astronaut",
                                          steps=INPAINT_RUN_STEPS, guidance=dcfg.guidance),
                  INPAINT_RUN_STEPS, dcfg.steps)
    out.append(row("sd15_inpaint", "SD 1.5 inpainting (outline band), real size, random weights",
                   "generate.diffusion.inpaint: true", m["projected_image_s"], 1, base, 3,
                   "anchor, bg and pose composites",
                   f"{rgb.shape[1]} px composite, {dcfg.steps} steps projected from {INPAINT_RUN_STEPS}, guidance "
                   f"{dcfg.guidance}, strength 1 (UNet batch 2)",
                   build_s=build_s, **m))
    pipe = text = vae = None  # frees the models before the next benchmark
    gc.collect()
    return out


# --------------------------------------------------------------------------- CLIP features


CLIP_ARCH = {
    # CLIPVisionConfig of openai/clip-vit-base-patch32 and openai/clip-vit-large-patch14 (vision tower + projection).
    "clip_vit_b32": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                         patch_size=32, image_size=224, projection_dim=512),
    "clip_vit_l14": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                         patch_size=14, image_size=224, projection_dim=768),
}


def _clip_row(name: str, label: str, setting: str, encoder, inp: Inputs, n: int, repeats: int = 2,
              **detail: Any) -> dict:
    images = [p.rgb for p in inp.photos] * (n // len(inp.photos) + 1)
    images = images[:n]
    paths = (inp.paths * (n // len(inp.paths) + 1))[:n]
    base = baseline(paths)
    encoder.features(images[:2])  # warm-up: first-call allocations
    cpu, wall = per_item(lambda batch: encoder.features(batch), [images], repeats=repeats, warmup=False)
    t = (cpu / n, wall / n)
    return row(name, label, setting, t, n, base, 3, "anchor, bg, pose: QA identity crops or training features",
               f"{n} dreambench-dev photos 512 px -> {encoder.image_size} px, batch {encoder.batch_size}",
               images_per_cpu_s=1 / t[0], feature_dim=encoder.feature_dim, **detail)


def bench_clip_embedded(inp: Inputs, tmp: Path) -> list[dict]:
    from spotdiff.model.embed import ImageEncoder

    encoder = ImageEncoder.from_config(EmbedConfig(device="cpu"))
    return [_clip_row("clip_embedded", "CLIP features, embedded encoder (128 wide, 4 layers)",
                      "embed.backend: embedded", encoder, inp, 64)]


def bench_clip_real(name: str, inp: Inputs, tmp: Path) -> list[dict]:
    """A real-size vision tower with random weights, saved and loaded through ``embed.backend: clip``."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection
    from spotdiff.model.embed import ImageEncoder

    folder = tmp / name
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_ARCH[name])).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(folder)
    t0 = time.perf_counter()
    batch = 16 if name == "clip_vit_b32" else 8
    encoder = ImageEncoder.from_config(EmbedConfig(backend="clip", model=str(folder), device="cpu", batch_size=batch))
    load_s = time.perf_counter() - t0
    label = {"clip_vit_b32": "ViT-B/32", "clip_vit_l14": "ViT-L/14"}[name]
    out = _clip_row(name, f"CLIP features, {label} (real size, random weights)", "embed.backend: clip",
                    encoder, inp, *((32, 2) if name == "clip_vit_b32" else (8, 1)), load_s=load_s)
    del encoder
    gc.collect()
    return [out]


# --------------------------------------------------------------------------- report


def fmt_s(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.3g} us"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    if s < 120:
        return f"{s:.3g} s"
    return f"{s / 60:.3g} min"


def fmt_h(h: float) -> str:
    if h < 1:
        return f"{h * 60:.2g} min"
    if h < 72:
        return f"{h:.2g} h"
    return f"{h / 24:,.0f} days"


def fmt_x(x: float) -> str:
    return f"{x:.2g}x" if x < 10 else f"{x:,.0f}x"


def markdown(rows: list[dict]) -> str:
    lines = ["| backend | params.yaml | input | CPU s / image | wall / image | baseline CPU / image | x baseline | "
             "calls / group | 10k groups: core-hours | 10k groups on this CPU | load |",
             "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['backend']} | `{r['setting']}` | {r['input']} | {fmt_s(r['per_image_cpu_s'])} | "
                     f"{fmt_s(r['per_image_wall_s'])} | {fmt_s(r['baseline_cpu_s'])} | {fmt_x(r['x_baseline'])} | "
                     f"{r['calls_per_group']:g}: {r['calls_note']} | {r['projected_10k_core_h']:,.3g} | "
                     f"{fmt_h(r['projected_10k_h_this_cpu'])} | {r['load_1m']} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import cv2
    import diffusers
    import mediapipe
    import torch
    import transformers

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "python": platform.python_version(),
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                         "transformers": transformers.__version__, "mediapipe": mediapipe.__version__,
                         "opencv": cv2.__version__}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="skip the real-size models (SAM vit_b, SD 1.5, CLIP B/32, L/14)")
    ap.add_argument("--only", default="", help="comma-separated row groups to run (default: all), e.g. grabcut,sd15")
    ap.add_argument("--json", type=Path, default=ROOT / "bench/out/backends.json")
    args = ap.parse_args(argv)

    start = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg": [round(v, 2) for v in os.getloadavg()]}
    benches: dict[str, Callable[[Inputs, Path], list[dict]]] = {
        "alpha": bench_alpha, "grabcut": bench_grabcut, "mediapipe": bench_mediapipe, "landmarks": bench_landmarks,
        "procedural": bench_procedural, "sam_tiny": bench_sam_tiny, "sam_vit_b": bench_sam_vit_b,
        "sd_tiny": bench_sd_tiny,
        "sd15": bench_sd15,
        "clip_embedded": bench_clip_embedded,
        "clip_vit_b32": partial(bench_clip_real, "clip_vit_b32"), "clip_vit_l14": partial(bench_clip_real, "clip_vit_l14"),
    }
    only = [n for n in args.only.split(",") if n]
    unknown = sorted(set(only) - set(benches))
    if unknown:
        ap.error(f"--only: unknown {unknown}; known: {', '.join(benches)}")
    chosen = [n for n in benches if (not only or n in only) and not (args.quick and n in REAL_SIZE)]
    import cv2
    import torch

    # One thread, as each generate worker runs (one worker per core): on a shared 2-core machine, 2 torch
    # threads spin-wait for each other and small models ran 10-30x slower than on one thread.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rows: list[dict] = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        inp = Inputs(tmp)
        for name in chosen:
            t0 = time.perf_counter()
            new = benches[name](inp, tmp)
            rows += new
            print(f"[{time.perf_counter() - t_all:6.0f} s] {name}: "
                  + ", ".join(f"{r['row']} {fmt_s(r['per_image_cpu_s'])} CPU/image ({fmt_x(r['x_baseline'])} baseline)" for r in new)
                  + f"  [{time.perf_counter() - t0:.0f} s, load {load_1m()}]", flush=True)
    result = {"command": "bench/bench_backends.py" + (" --quick" if args.quick else "")
                         + (f" --only {args.only}" if args.only else ""),
              "start": start, "end_loadavg": [round(v, 2) for v in os.getloadavg()],
              "seconds": round(time.perf_counter() - t_all, 1), "machine": machine(), "groups": GROUPS,
              "threads": "torch and OpenCV 1 thread (one generate worker per core); MediaPipe its own",
              "times": "per_image_cpu_s = process CPU time (all threads), per_image_wall_s = wall clock",
              "projection": f"core-hours = CPU s x calls/group x {GROUPS} / 3600; on this CPU = core-hours / {CORES} workers",
              "baseline": f"PIL JPEG decode + resize to {BASELINE_SIDE}x{BASELINE_SIDE} bicubic of the row's input, "
                          "best of 5, measured right before the row", "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    print(f"\n{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, CUDA {m['cuda']}; "
          f"load average at start {start['loadavg']}, at end {result['end_loadavg']}; {result['seconds']:.0f} s")
    print(markdown(rows))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

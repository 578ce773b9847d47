"""Stage ``pretrain``: SimCLR (NT-Xent) pre-training of the embedded CLIP-architecture backbone.

The backbone is ``embed.embedded``'s model at its seeded initial weights; the pool is ``pool.build_pool``
(procedural identities generate never draws, 4 scenes each). A step takes ``batch_size / 4`` whole subjects, so
a batch holds scenes that differ only in pose or only in background; each scene is augmented twice
(``pretrain.augment``: crop, colour, blur; never a flip) and the loss pulls the two views of a scene together
and pushes every other scene away, those of the same subject included. The loss reads ``ImageEncoder.features``
(projected class token + pooled 8x8 patch grid, what train and evaluate read) through a projection head that is
dropped afterwards, as SimCLR does.

Deterministic: the pool, batches and augmentations come from ``pretrain.seed`` by ``derive_seed``, the head from
``torch.manual_seed``; with the project's one-thread CPU pins the same params write the same
``backbone.safetensors`` bytes.

Outputs (``paths["out"]``): ``backbone.safetensors`` (the vision model's state dict; ``embed.embedded.weights``
loads it), ``config.json`` (params and architecture), ``loss.csv`` (per step: loss, positive-pair top-1 among the
batch's views, learning rate), ``summary.json`` (wall and CPU seconds).
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from spotdiff.common.outputs import atomic_write, reset_dir
from spotdiff.common.seeding import derive_seed
from spotdiff.config import EmbedConfig, Params, PretrainConfig
from spotdiff.pretrain.pool import BACKGROUNDS, SCENES, build_pool

WEIGHTS = "backbone.safetensors"
"""The file the stage writes in its output folder and ``embed.embedded.weights`` names."""
FORMAT = "spotdiff-pretrain-v1"


@dataclass
class PretrainStats:
    steps: int
    images: int
    first_loss: float
    last_loss: float
    last_top1: float
    seconds: float
    cpu_seconds: float
    pool_seconds: float
    out: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        return (f"pretrain: {self.steps} steps on {self.images} pool images, loss {self.first_loss:.3f} -> "
                f"{self.last_loss:.3f} (positive top-1 {self.last_top1:.2f}), {self.seconds:.0f} s "
                f"({self.pool_seconds:.0f} s rendering) -> {self.out}/{WEIGHTS}")


def _hue_matrix(angle: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotations of RGB about the grey axis by ``angle`` radians (Rodrigues)."""
    k = torch.full((3,), 1 / math.sqrt(3.0))
    kx = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    c, s = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    return c * torch.eye(3) + s * kx + (1 - c) * torch.outer(k, k)


def augment(images: np.ndarray, cfg: PretrainConfig, rng: np.random.Generator,
            mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """One augmented view of each uint8 (B, R, R, 3) image: normalised float (B, 3, S, S), S = ``cfg.image_size``.
    Every draw comes from ``rng``."""
    a, size = cfg.augment, cfg.image_size
    b, r = images.shape[0], images.shape[1]
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    views = []
    for i in range(b):
        area = rng.uniform(*a.crop_scale) * r * r
        ratio = math.exp(rng.uniform(math.log(a.crop_ratio[0]), math.log(a.crop_ratio[1])))
        w = min(r, max(1, round(math.sqrt(area * ratio))))
        h = min(r, max(1, round(math.sqrt(area / ratio))))
        top, left = int(rng.integers(0, r - h + 1)), int(rng.integers(0, r - w + 1))
        views.append(F.interpolate(x[i:i + 1, :, top:top + h, left:left + w], size=(size, size), mode="bilinear",
                                   align_corners=False, antialias=True))
    x = torch.cat(views)
    u = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(b, 4)).astype(np.float32))
    x = x * (1 + a.brightness * u[:, 0, None, None, None])
    grey = x.mean(dim=(1, 2, 3), keepdim=True)
    x = grey + (x - grey) * (1 + a.contrast * u[:, 1, None, None, None])
    lum = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    x = lum + (x - lum) * (1 + a.saturation * u[:, 2, None, None, None])
    x = torch.einsum("bij,bjhw->bihw", _hue_matrix(u[:, 3] * a.hue * 2 * math.pi), x)
    blur = torch.from_numpy(rng.uniform(size=b) < a.blur)
    if bool(blur.any()):
        x = torch.where(blur[:, None, None, None],
                        F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False), x)
    x = x.clamp(0.0, 1.0)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, float]:
    """SimCLR's loss over 2N views (each view's positive is the other view of its image, every other view is a
    negative) and the share of views whose nearest other view is their positive."""
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    top1 = float((sim.argmax(dim=1) == target).float().mean())
    return F.cross_entropy(sim, target), top1


def _label_loss(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Squared error of (sin, cos) of yaw plus cross-entropy of the background kind."""
    yaw = torch.deg2rad(labels[:, 0])
    target = torch.stack([torch.sin(yaw), torch.cos(yaw)], dim=1)
    return F.mse_loss(out[:, :2], target) + F.cross_entropy(out[:, 2:], labels[:, 1].long())


def _lr(cfg: PretrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))


def pretrain(cfg: PretrainConfig, embed: EmbedConfig, out_dir: str | Path, *, progress: bool = False) -> PretrainStats:
    """Train the backbone as the module doc says and write the outputs into ``out_dir`` (emptied first)."""
    from spotdiff.common.progress import progress_bar
    from spotdiff.model.checkpoint import save_stable
    from spotdiff.model.embed import ImageEncoder

    t0, c0 = time.perf_counter(), time.process_time()
    out = reset_dir(out_dir)
    base = embed.model_copy(update={"backend": "embedded", "device": "cpu",
                                    "embedded": embed.embedded.model_copy(update={"weights": None})})
    encoder = ImageEncoder.from_config(base)
    model = encoder.model.float().train()
    t_pool = time.perf_counter()
    pool, labels = build_pool(cfg)
    t_pool = time.perf_counter() - t_pool
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "pretrain-head") % (1 << 31))
        head = torch.nn.Sequential(torch.nn.Linear(encoder.feature_dim, 512), torch.nn.ReLU(),
                                   torch.nn.Linear(512, cfg.head_dim))
        # Render labels, read linearly from the feature (sin and cos of yaw, background kind): off at weight 0.
        probe = torch.nn.Linear(encoder.feature_dim, 2 + len(BACKGROUNDS))
    params = list(model.parameters()) + list(head.parameters()) + (list(probe.parameters()) if cfg.label_weight else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    interpolate = cfg.image_size != encoder.image_size
    per_step = cfg.batch_size // SCENES
    subjects = pool.shape[0] // SCENES
    rows = []
    bar = progress_bar(cfg.steps, desc="pretrain", unit="step", enabled=progress)
    for step in range(cfg.steps):
        rng = np.random.default_rng(derive_seed(cfg.seed, "pretrain-batch", step))
        chosen = rng.choice(subjects, size=min(per_step, subjects), replace=False)
        idx = (chosen[:, None] * SCENES + np.arange(SCENES)[None]).ravel()
        images = pool[idx]
        x = torch.cat([augment(images, cfg, rng, encoder.preprocess.mean, encoder.preprocess.std)
                       for _ in range(2)])
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, step)
        feats = encoder.features_from_output(model(pixel_values=x, interpolate_pos_encoding=interpolate))
        z = head(feats)
        loss, top1 = nt_xent(z[:len(idx)], z[len(idx):], cfg.temperature)
        if cfg.label_weight:
            loss = loss + cfg.label_weight * _label_loss(probe(feats), torch.from_numpy(labels[idx]).repeat(2, 1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rows.append((step, float(loss.detach()), top1, _lr(cfg, step)))
        bar.update(1)
    bar.close()
    state = {k: v.detach().contiguous() for k, v in model.eval().state_dict().items()}
    arch = embed.embedded.model_dump(exclude={"weights", "seed"}) | {"image_size": embed.image_size}
    # save_stable: safetensors writes its metadata in hash order, other bytes in every process otherwise.
    save_stable(state, out / WEIGHTS, {"format": FORMAT, "architecture": json.dumps(arch, sort_keys=True)})
    objective = "nt-xent (SimCLR)" + (f" + {cfg.label_weight} x render labels" if cfg.label_weight else "")
    config = {"format": FORMAT, "pretrain": cfg.model_dump(mode="json"), "architecture": arch,
              "init_seed": embed.embedded.seed, "objective": objective, "feature": "ImageEncoder.features"}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    with atomic_write(out / "loss.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "loss", "top1", "lr"])
        w.writerows((s, f"{lo:.6f}", f"{t1:.4f}", f"{lr:.6g}") for s, lo, t1, lr in rows)
    stats = PretrainStats(cfg.steps, int(pool.shape[0]), rows[0][1], rows[-1][1], rows[-1][2],
                          round(time.perf_counter() - t0, 1), round(time.process_time() - c0, 1), round(t_pool, 1),
                          str(out_dir))
    (out / "summary.json").write_text(json.dumps(stats.as_dict(), indent=2, sort_keys=True) + "\n")
    return stats


def run(params: Params, paths: Mapping[str, Path], *, progress: bool = True) -> PretrainStats:
    """The stage (``spotdiff.stages``): pre-train ``embed.embedded``'s backbone into ``paths["out"]``."""
    return pretrain(params.pretrain, params.embed, paths["out"], progress=progress)

"""Stage 2: train the alignment module on a frozen Stable Diffusion with the denoising loss.

Each step draws a batch of (subject feature, image, caption), encodes the images with the VAE
(latents times ``vae.config.scaling_factor``), adds DDPM noise at random timesteps (the schedule of
the pipeline's scheduler config), and asks the UNet -- text tokens from the caption plus the K image
tokens of the alignment module through decoupled cross-attention (``adapter.attached``) -- to predict
the noise (or the velocity, for ``v_prediction`` models). The loss is the mean squared error. Only the
alignment module learns; UNet, VAE and text encoder are frozen.

As in IP-Adapter training, a fraction ``drop`` of samples loses its subject feature (zeros: the
negative image embedding diffusers uses for classifier-free guidance), another ``drop`` its caption
(the empty prompt), and another ``drop`` both, so guidance works at inference.

Every random draw (batch order, timesteps, noise, VAE sampling, drops) comes from one CPU generator
seeded with ``seed``: on CPU the same inputs and seed give the same losses, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from spotdiff.model.adapter import AlignmentModule, attached


def _as_images(images: np.ndarray | Sequence[np.ndarray], n: int, factor: int) -> np.ndarray:
    """``images`` as one uint8 (N, H, W, 3) array; ValueError when the count, type or size is wrong."""
    try:
        arr = images if isinstance(images, np.ndarray) else np.stack([np.asarray(im) for im in images])
    except ValueError as err:  # views of different sizes
        raise ValueError(f"images must all have one size: {err}") from None
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
        raise ValueError(f"images must be uint8 RGB (N, H, W, 3), got {arr.dtype} {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{arr.shape[0]} images for {n} subject features")
    h, w = arr.shape[1:3]
    if h % factor or w % factor:
        raise ValueError(f"image size {w}x{h} is not a multiple of the autoencoder's factor {factor}; "
                         "resize the views to the pipeline's resolution first")
    return arr


def _batches(n: int, batch_size: int, gen: torch.Generator) -> Any:
    """Endless stream of ``batch_size`` indices taken in turn from successive shuffled passes over
    range(n) (a batch may span two passes)."""
    order: list[int] = []
    while True:
        idx = []
        while len(idx) < batch_size:
            if not order:
                order = torch.randperm(n, generator=gen).tolist()
            idx.append(order.pop(0))
        yield idx


def train_stage2(pipe: Any, module: AlignmentModule, subject_feats: np.ndarray,
                 images: np.ndarray | Sequence[np.ndarray], captions: Sequence[str], *, steps: int,
                 lr: float = 1e-4, batch_size: int = 4, seed: int = 0, weight_decay: float = 1e-2, drop: float = 0.05,
                 on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``module`` for ``steps`` AdamW steps (``lr``, ``weight_decay``) on batches of ``batch_size``
    samples; returns the loss of every step (floats, in order).

    ``pipe``: a Stable Diffusion text-to-image pipeline (``spotdiff.common.diffusion.load_pipeline``); its
    UNet, VAE and text encoder are frozen (``requires_grad_(False)``) and left unchanged, and its UNet's
    attention processors are restored afterwards. ``subject_feats``: float (N, D) with D =
    ``module.feature_dim``. ``images``: N uint8 RGB (H, W, 3) views, all one size, a multiple of the
    autoencoder factor (8 for Stable Diffusion): resize them to the training resolution first.
    ``captions``: N strings. ``drop`` in [0, 1/3]: fraction of samples that lose the feature, the caption,
    or both (each). ``on_step(step, loss)`` is called after every step (1-based), e.g. for logging or
    checkpoints. ``module`` is moved to the UNet's device in float32 and trained in place. On CUDA with
    an fp16 pipeline the module stays float32 and the forward pass runs
    under autocast with a gradient scaler.
    """
    n = len(captions)
    feats = np.asarray(subject_feats, dtype=np.float32)
    if feats.ndim != 2 or feats.shape != (n, module.feature_dim):
        raise ValueError(f"subject_feats must be ({n}, {module.feature_dim}) for {n} captions and an alignment "
                         f"module of feature_dim {module.feature_dim}, got {feats.shape}")
    if not np.isfinite(feats).all():
        raise ValueError("subject_feats contains NaN or infinite values")
    imgs = _as_images(images, n, int(pipe.vae_scale_factor))
    if n == 0:
        raise ValueError("no training samples")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    if not 0.0 <= drop <= 1.0 / 3.0:
        raise ValueError(f"drop must be in [0, 1/3], got {drop}")
    from diffusers import DDPMScheduler

    unet, vae = pipe.unet, pipe.vae
    device, dtype = unet.device, unet.dtype
    if dtype != torch.float32 and device.type != "cuda":
        raise ValueError(f"a {dtype} pipeline on {device} cannot train; load it in float32 (device cpu)")
    for part in (unet, vae, pipe.text_encoder):
        part.requires_grad_(False)
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    n_train_t = int(noise_sched.config.num_train_timesteps)
    prediction = noise_sched.config.prediction_type
    if prediction not in ("epsilon", "v_prediction"):
        raise ValueError(f"scheduler prediction_type {prediction!r}: only epsilon and v_prediction are supported")
    scaling = float(vae.config.scaling_factor)

    module.to(device=device, dtype=torch.float32).train()
    module.requires_grad_(True)
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    mixed = dtype == torch.float16
    # fp16 gradients of small weights underflow without loss scaling; float32 needs none.
    scaler = torch.amp.GradScaler("cuda", enabled=mixed)
    autocast = torch.autocast("cuda", dtype=torch.float16) if mixed else nullcontext()
    gen = torch.Generator("cpu").manual_seed(int(seed))
    batches = _batches(n, batch_size, gen)
    losses: list[float] = []
    with attached(unet, module):
        for step in range(1, steps + 1):
            idx = next(batches)
            u = torch.rand(len(idx), generator=gen)
            # [0, d): no feature; [d, 2d): no caption; [2d, 3d): neither.
            no_feat = ((u < drop) | ((u >= 2 * drop) & (u < 3 * drop))).numpy()
            no_text = ((u >= drop) & (u < 3 * drop)).numpy()
            x = torch.from_numpy(imgs[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            f = torch.from_numpy(feats[idx] * (~no_feat)[:, None].astype(np.float32))
            text = ["" if no_text[j] else captions[i] for j, i in enumerate(idx)]
            with torch.no_grad():
                latents = vae.encode(x.to(device, dtype)).latent_dist.sample(gen) * scaling
                prompt_embeds = pipe.encode_prompt(text, device, 1, False)[0]
            noise = torch.randn(latents.shape, generator=gen).to(device, dtype)
            t = torch.randint(0, n_train_t, (len(idx),), generator=gen).to(device)
            noisy = noise_sched.add_noise(latents, noise, t)
            target = noise if prediction == "epsilon" else noise_sched.get_velocity(latents, noise, t)
            with autocast:
                pred = unet(noisy, t, encoder_hidden_states=prompt_embeds,
                            added_cond_kwargs={"image_embeds": [f[:, None, :].to(device)]}, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), target.float())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            value = float(loss.detach())
            if not np.isfinite(value):
                raise FloatingPointError(f"stage 2 loss is {value} at step {step}; lower train.stage2.lr")
            losses.append(value)
            if on_step is not None:
                on_step(step, value)
    return losses

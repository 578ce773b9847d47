"""Stage-1 training of the SpotDiff encoder (experts, subject head, orthogonality) on shard features.

``train(shard_dir, out_dir, params)`` runs one process, or one rank of a ``torchrun`` job (gloo on
CPU, NCCL on GPUs): every rank holds the same cached backbone features, takes its slice of each
global batch, and the losses are computed on the gathered global batch, so N processes follow the
same loss curve as one process with the same ``train.batch_size`` and seed (up to float summation
order).

Batches come from the step number alone (a seeded permutation per epoch, last partial batch
dropped) and the forward pass draws no random numbers, so a run resumed from ``checkpoint.safetensors``
(weights, optimiser state, step) continues exactly the curve of an uninterrupted run.

Outputs in ``out_dir``: ``model.safetensors`` + ``config.json`` (the trained encoder),
``checkpoint.safetensors`` (resumable state), ``losses.csv`` (every term per step), ``val.csv``
(every term per epoch on the validation split), ``losses.png`` and ``summary.json``.

The number of epochs is chosen on the validation split (``train.early_stopping``): the val losses after
every epoch pick the best epoch, training stops ``patience`` epochs after it, and ``model.safetensors`` holds
that epoch's weights. The checkpoint keeps those weights beside the current ones (``best.*``), so a resumed
run saves the same model as an uninterrupted one. When
``train.stage2.model`` is set, stage 2 trains the alignment module and writes ``ip_adapter.safetensors``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from spotdiff.config import Params, TrainConfig
from spotdiff.common.factors import factor_ids
from spotdiff.common.fingerprint import code_digest
from spotdiff.common.outputs import clean_stale_tmp
from spotdiff.common.shardset import split_tars
from spotdiff.model import cache, checkpoint
from spotdiff.model.encoder import FACTORS, SpotDiffEncoder
from spotdiff.model.trained import export_model
from spotdiff.model.losses import stage1_losses
from spotdiff.errors import ConfigError, InputError

log = logging.getLogger(__name__)

TERMS = ("total", "subject", "pose", "background", "orthogonality", "invariance")
"""Loss columns of losses.csv / val.csv, in order."""
BEST = "best."
"""Prefix of the best validation epoch's weights in the checkpoint (beside the current ones)."""


@dataclass
class TrainResult:
    steps: int
    """Optimiser steps of the whole run (including those before a resume)."""
    resumed_from: int
    """Step the run resumed from (0: fresh start)."""
    cache_hit: bool
    first: dict[str, float]
    last: dict[str, float]
    """Mean of each loss term over the first / last epoch."""
    seconds: float
    out_dir: str
    best: dict[str, Any] | None = None
    """The validation epoch whose weights the model holds (``epoch``, ``step``, the ``monitor`` term and its
    ``value``); None when no epoch was validated."""
    stopped: str = ""
    """Why training ended: ``early_stopping`` (``patience`` epochs without a new best), ``epochs`` (all
    ``train.epochs`` done) or ``max_steps`` (interrupted on purpose; no model written)."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> str:
        terms = ", ".join(f"{k} {self.first[k]:.3f}->{self.last[k]:.3f}" for k in self.first)
        best = (f"; model = epoch {self.best['epoch']} (step {self.best['step']}, val {self.best['monitor']} "
                f"{self.best['value']:.4f}), stopped by {self.stopped}") if self.best else ""
        return (f"train: {self.steps} steps (resumed from {self.resumed_from}){best}, feature cache "
                f"{'hit' if self.cache_hit else 'built'}, first->last epoch: {terms}; {self.seconds:.1f} s -> {self.out_dir}")


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_dist() -> Dist:
    """Join the ``torchrun`` process group when WORLD_SIZE > 1 (gloo on CPU, NCCL with CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def _barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _gather(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Rows of ``t`` from every rank, in rank order, with gradients flowing back to each rank's own
    rows (the autograd all_gather sums the identical losses' gradients, DDP then averages them)."""
    if d.world == 1:
        return t
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t), dim=0)


# --------------------------------------------------------------------------- batches


def steps_per_epoch(n_groups: int, cfg: TrainConfig, world: int = 1) -> int:
    """Full global batches per epoch (the last partial batch is dropped, a fresh one each epoch)."""
    if cfg.batch_size % world:
        raise ConfigError(f"train.batch_size = {cfg.batch_size} must be a multiple of the {world} processes")
    if n_groups < cfg.batch_size:
        raise ConfigError(f"train.batch_size = {cfg.batch_size} is more than the {n_groups} training groups; "
                         f"lower it or build more groups")
    return n_groups // cfg.batch_size


def batch_indices(step: int, n_groups: int, cfg: TrainConfig) -> np.ndarray:
    """Group indices of global batch ``step``: a seeded permutation per epoch, sliced in order."""
    spe = n_groups // cfg.batch_size
    epoch, within = divmod(step, spe)
    perm = np.random.default_rng([cfg.seed, epoch]).permutation(n_groups)
    return perm[within * cfg.batch_size:(within + 1) * cfg.batch_size]


# --------------------------------------------------------------------------- run identity


def run_key(cfg: TrainConfig, identity: str, train_set: cache.FeatureSet, val_set: cache.FeatureSet) -> str:
    """Names what a checkpoint belongs to: train params (bar cache_dir and checkpoint_every, which do not
    change the curve), backbone identity, the code train runs (``code_digest``: the files dvc.yaml lists as its code deps) and the content of both
    splits (features or crops, and the records the factor labels come from): same group names with other
    pixels are other data. A checkpoint with another key is not resumed."""
    params = cfg.model_dump(exclude={"cache_dir", "checkpoint_every", "epochs"})
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(identity.encode())
    h.update(code_digest("spotdiff.train.run").encode())
    for fs in (train_set, val_set):
        h.update("\n".join(fs.keys).encode())
        h.update(json.dumps(fs.records, sort_keys=True).encode())
        h.update(np.ascontiguousarray(fs.features).data)
    return h.hexdigest()


# --------------------------------------------------------------------------- training


def subject_window(encoder: Any, fraction: float) -> dict[str, int]:
    """``SpotDiffEncoder`` layout arguments (grid, cell_dim, window) for a subject head that reads the
    central ``fraction`` of ``encoder``'s pooled grid (``train.subject_window``); {} for the whole feature."""
    if fraction >= 1:
        return {}
    grid = encoder.GRID
    window = max(1, int(round(grid * fraction)))
    window += (grid - window) % 2  # same parity as the grid: a centred window
    return {"grid": grid, "cell_dim": int(encoder.model.config.hidden_size), "window": min(window, grid)}


class Stage1(torch.nn.Module):
    """The heads, plus the backbone when it is trained too (``train.backbone_trainable``).

    Input: backbone features (B*3, F) when the backbone is frozen, preprocessed uint8 crops
    (B*3, S, S, 3) when it trains."""

    def __init__(self, heads: SpotDiffEncoder, encoder: Any | None = None):
        super().__init__()
        self.heads = heads
        self.backbone = encoder.model if encoder is not None else None
        self._encoder = encoder

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.backbone is not None:
            x = self._encoder.features_from_output(self.backbone(pixel_values=self._encoder.normalise(x)))
        return self.heads(x)


def _crops(tars: list[tuple[Path, str]], encoder: Any, skipped: Counter) -> cache.FeatureSet:
    """The groups of ``tars`` as preprocessed uint8 crops (N, 3, S, S, 3), for a trainable backbone."""
    keys, subjects, records, crops = [], [], [], []
    for key, record, images in cache.iter_groups(tars, skipped):
        keys.append(key)
        subjects.append(record.get("subject_id", key))
        records.append(record)
        crops.append(np.stack([encoder.preprocess(im) for im in images]))
    s = encoder.image_size
    arr = np.stack(crops) if crops else np.zeros((0, 3, s, s, 3), np.uint8)
    return cache.FeatureSet(keys, subjects, records, arr, dict(skipped))


def _factors(fs: cache.FeatureSet) -> dict[str, torch.Tensor]:
    """(groups, 3) pose-bin and background-kind ids of ``fs``'s views, for ``losses.factor_invariance``."""
    return {k: torch.from_numpy(v) for k, v in factor_ids(fs.records).items()}


def _losses(model: torch.nn.Module, feats: torch.Tensor, labels: torch.Tensor, factors: dict[str, torch.Tensor],
            cfg: TrainConfig, d: Dist) -> dict[str, torch.Tensor]:
    """Stage-1 terms of one batch; ``labels`` and ``factors`` are already in the gathered batch's order."""
    b = feats.shape[0]
    out = model(feats.reshape(b * 3, *feats.shape[2:]))
    grouped = {k: _gather(v.reshape(b, 3, -1), d) for k, v in out.items()}
    return stage1_losses(grouped, labels, margin=cfg.margin, temperature=cfg.temperature,
                         weights=cfg.weights.model_dump(), shared_background_positives=cfg.shared_background_positives,
                         factors=factors)


def evaluate_losses(model: torch.nn.Module, fs: cache.FeatureSet, cfg: TrainConfig) -> dict[str, float]:
    """Every loss term on all of ``fs`` as one batch (validation), no gradients."""
    with torch.no_grad():
        terms = _losses(model, torch.from_numpy(fs.features), torch.from_numpy(fs.subject_labels()), _factors(fs),
                        cfg, Dist())
    return {k: float(terms[k]) for k in TERMS}


def best_epoch(val_history: list[list[float]], cfg: TrainConfig) -> tuple[int | None, bool]:
    """(index in ``val_history`` of the epoch whose weights the model keeps, whether training stops now).

    ``train.early_stopping``: the best epoch is the first with the lowest ``monitor`` value, a later one
    counting only when lower by more than ``min_delta``; training stops once ``patience`` epochs followed it.
    With ``patience`` 0 (off) the model is the last epoch's and training never stops early. A pure function
    of the history, so a resumed run decides exactly as an uninterrupted one."""
    if not val_history:
        return None, False
    es = cfg.early_stopping
    if es.patience == 0:
        return len(val_history) - 1, False
    col = 2 + TERMS.index(es.monitor)  # rows are [epoch, step, *TERMS]
    best = 0
    for i, row in enumerate(val_history):
        if row[col] < val_history[best][col] - es.min_delta:  # NaN never counts as better
            best = i
    return best, len(val_history) - 1 - best >= es.patience


def train(shard_dir: str | Path, out_dir: str | Path, params: Params, *, progress: bool = False,
          resume: bool = True, max_steps: int | None = None, checkpoint_path: str | Path | None = None) -> TrainResult:
    """Train stage 1 (and stage 2 when configured) on ``shard_dir``'s train split; see the module doc.

    ``max_steps`` stops early after that many steps in total (the checkpoint is written), as an
    interruption would; running again with ``resume`` continues from there. ``checkpoint_path``
    defaults to ``out_dir/checkpoint.safetensors``.
    """
    from spotdiff.common.progress import progress_bar

    from spotdiff.model.embed import ImageEncoder

    cfg, t0 = params.train, time.perf_counter()
    d = _init_dist()
    out = Path(out_dir)
    encoder = ImageEncoder.from_config(params.embed)
    cache_dir = Path(cfg.cache_dir)
    trainable = cfg.backbone_trainable
    if trainable:
        if params.embed.backend != "embedded":
            raise ConfigError("train.backbone_trainable = true is for the small embedded backbone "
                             f"(embed.backend = embedded), not {params.embed.backend!r}: pre-trained CLIP stays frozen")
        # No feature cache: the features change every step. Crops are decoded once and kept in memory.
        train_set = _crops(split_tars(shard_dir, "train"), encoder, Counter())
        val_set, hit = _crops(split_tars(shard_dir, "val"), encoder, Counter()), False
    # Rank 0 fills the cache; the others then read the same entry (and never write it concurrently).
    elif d.main:
        train_set, hit = cache.load_or_build(shard_dir, "train", encoder, cache_dir, progress=progress)
        val_set, _ = cache.load_or_build(shard_dir, "val", encoder, cache_dir, progress=progress)
    _barrier(d)
    if not d.main and not trainable:
        train_set, hit = cache.load_or_build(shard_dir, "train", encoder, cache_dir)
        val_set, _ = cache.load_or_build(shard_dir, "val", encoder, cache_dir)
    for name, fs in (("train", train_set), ("val", val_set)):
        if fs.skipped:
            log.warning("%s split: %d groups skipped %s", name, sum(fs.skipped.values()), fs.skipped)

    spe = steps_per_epoch(len(train_set), cfg, d.world)
    total_steps = spe * cfg.epochs
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        heads = SpotDiffEncoder(encoder.feature_dim, cfg.hidden, cfg.feature_dim, cfg.project,
                                **subject_window(encoder, cfg.subject_window))
    if trainable:
        with torch.no_grad():
            initial = np.concatenate([encoder.features(list(c)) for c in train_set.features])
        heads.fit_input_scaling(torch.from_numpy(initial))
        encoder.model.train()  # CLIP has no dropout: training mode draws no random numbers
    else:
        heads.fit_input_scaling(torch.from_numpy(train_set.features))
    model = Stage1(heads, encoder if trainable else None)
    # fused: torch's own vectorised AdamW kernel. The default one takes each square root through MKL's
    # vector math, which rounds differently on AMD and Intel CPUs whatever MKL_CBWR says (issue 14,
    # spotdiff.common.determinism); the fused kernel's square root is the CPU's exact one.
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    key = run_key(cfg, encoder.identity, train_set, val_set)

    step, history, val_history = 0, [], []
    best_state: dict[str, torch.Tensor] | None = None  # the best validation epoch's weights (early stopping)
    ckpt = Path(checkpoint_path) if checkpoint_path else out / "checkpoint.safetensors"
    if d.main:
        clean_stale_tmp(ckpt.parent)  # a checkpoint write that a killed run left half-done
    if resume and ckpt.is_file():
        weights, opt_state, meta = checkpoint.load(ckpt)
        if meta.get("run_key") == key:
            best_state = {k[len(BEST):]: v for k, v in weights.items() if k.startswith(BEST)} or None
            model.load_state_dict({k: v for k, v in weights.items() if not k.startswith(BEST)})
            opt.load_state_dict(opt_state)
            step, history, val_history = meta["step"], meta["history"], meta["val_history"]
            if d.main:
                print(f"train: resuming from step {step} of {total_steps} ({ckpt})", flush=True)
        elif d.main:
            print(f"train: {ckpt} belongs to other params or data; starting afresh", flush=True)
    resumed_from = step

    ddp = model
    if d.world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(model)
    features = torch.from_numpy(train_set.features)
    labels = torch.from_numpy(train_set.subject_labels())
    factors = _factors(train_set)
    stop = total_steps if max_steps is None else min(total_steps, max_steps)
    bar = progress_bar(total_steps, initial=step, desc="train", unit="step", enabled=progress and d.main)

    def save_checkpoint() -> None:
        if d.main:
            weights = {**model.state_dict(), **{BEST + k: v for k, v in (best_state or {}).items()}}
            checkpoint.save(ckpt, model=weights, optimizer=opt.state_dict(),
                            meta={"run_key": key, "step": step, "history": history, "val_history": val_history})

    best, stopped = best_epoch(val_history, cfg)  # a resumed run that had already stopped trains no further
    while step < stop and not stopped:
        idx = batch_indices(step, len(train_set), cfg)
        mine = idx[d.rank::d.world]
        order = np.concatenate([idx[r::d.world] for r in range(d.world)])  # the gathered batch's order
        terms = _losses(ddp, features[mine], labels[order], {k: v[order] for k, v in factors.items()}, cfg, d)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        history.append([step] + [float(terms[k].detach()) for k in TERMS])
        step += 1
        bar.update(1)
        if step % spe == 0:  # end of an epoch: validate, keep the best weights, maybe stop
            # Every rank computes the same losses on the same (synchronised) weights: they stop together.
            val_history.append([step // spe, step] + list(evaluate_losses(model, val_set, cfg).values()))
            best, stopped = best_epoch(val_history, cfg)
            if cfg.early_stopping.patience and best == len(val_history) - 1:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if step % cfg.checkpoint_every == 0 or step == stop or stopped:
            save_checkpoint()
    bar.close()
    _barrier(d)

    reason = "early_stopping" if stopped else "epochs" if step >= total_steps else "max_steps"
    chosen = None
    if best is not None:
        row = val_history[best]
        monitor = cfg.early_stopping.monitor
        chosen = {"epoch": int(row[0]), "step": int(row[1]), "monitor": monitor,
                  "value": round(float(row[2 + TERMS.index(monitor)]), 6)}
    result = TrainResult(step, resumed_from, hit, _epoch_mean(history, spe, first=True),
                         _epoch_mean(history, spe, first=False), time.perf_counter() - t0, str(out),
                         best=chosen, stopped=reason)
    if d.main and reason != "max_steps":
        if best_state is not None:  # early stopping: the model is the best validation epoch's weights
            model.load_state_dict(best_state)
        if trainable:
            encoder.model.eval()
            encoder = encoder.fine_tuned(encoder.model.state_dict())
            checkpoint.save(out / "backbone.safetensors", model=encoder.model.state_dict(),
                            meta={"identity": encoder.identity})
        _write_outputs(out, heads.eval(), encoder, params, history, val_history, result)
        if cfg.stage2.model:
            _stage2(shard_dir, out, heads, encoder, params, progress)
    return result


def _stage2(shard_dir: str | Path, out: Path, model: SpotDiffEncoder, encoder: Any, params: Params,
            progress: bool) -> None:
    """Alignment module on the configured Stable Diffusion UNet: the anchor's subject feature conditions
    the denoising of the same subject's other views (bg and pose, alternating), captioned from the sample.
    Writes ``ip_adapter.safetensors`` and ``stage2_losses.csv``; needs ``out/model.safetensors`` (the heads
    ``model``, already written).

    The adapter's ``backbone`` metadata is ``infer.subject_encoder_identity``: the backbone identity plus the
    digest of ``model.safetensors``, so generation refuses the adapter beside other heads (a stale adapter).
    Memory: the anchors are encoded ``embed.batch_size`` at a time; the target views stay in memory at
    ``resolution`` (N x R x R x 3 bytes: 7.9 GB for 10k groups at 512 px)."""
    from PIL import Image
    from spotdiff.common.progress import progress_bar

    from spotdiff.config import ConfigError
    from spotdiff.common.diffusion import PARAMS_KEY, load_pipeline
    from spotdiff.model.trained import subject_encoder_identity
    from spotdiff.model.adapter import AlignmentModule, export_ip_adapter
    from spotdiff.model.stage2 import train_stage2

    s2 = params.train.stage2
    try:
        pipe = load_pipeline(s2.model, "text2img", s2.device)
    except ConfigError as err:  # load_pipeline's messages name generate.diffusion.*; here the keys are train.stage2.*
        raise ConfigError(str(err).replace(f"{PARAMS_KEY}.", "train.stage2.")) from err
    feats: list[np.ndarray] = []
    images, captions, anchors = [], [], []
    side = (s2.resolution, s2.resolution)

    def encode_anchors() -> None:
        if anchors:
            with torch.no_grad():
                feats.append(model(torch.from_numpy(encoder.features(anchors)))["subject"].numpy())
            anchors.clear()

    for i, (_, record, views) in enumerate(cache.iter_groups(split_tars(shard_dir, "train"), Counter())):
        target = views[1 + i % 2]  # bg or pose view: the subject as it appears elsewhere
        images.append(np.asarray(Image.fromarray(target).resize(side, Image.Resampling.BICUBIC)))
        captions.append(record.get("caption", ""))
        anchors.append(views[0])
        if len(anchors) >= encoder.batch_size:
            encode_anchors()
    encode_anchors()
    if not captions:
        raise InputError(f"{shard_dir}: no usable train groups for stage 2")
    module = AlignmentModule.from_unet(pipe.unet, model.feature_dim, s2.tokens, seed=params.train.seed)
    bar = progress_bar(s2.steps, desc="stage 2", unit="step", enabled=progress)
    losses = train_stage2(pipe, module, np.concatenate(feats), images, captions, steps=s2.steps, lr=s2.lr,
                          batch_size=s2.batch_size, seed=params.train.seed,
                          on_step=lambda step, loss: bar.update(1))
    bar.close()
    export_ip_adapter(module, out / "ip_adapter.safetensors", backbone=subject_encoder_identity(out, encoder.identity),
                      base_model=getattr(pipe, "spotdiff_identity", str(s2.model)))
    _write_csv(out / "stage2_losses.csv", ["step", "denoising"], [[i + 1, v] for i, v in enumerate(losses)])


def _epoch_mean(history: list[list[float]], spe: int, first: bool) -> dict[str, float]:
    rows = history[:spe] if first else history[-spe:]
    if not rows:
        return {}
    arr = np.asarray(rows)[:, 1:]
    return {k: round(float(v), 6) for k, v in zip(TERMS, arr.mean(0))}


# --------------------------------------------------------------------------- outputs


def _write_csv(path: Path, header: list[str], rows: list[list[float]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([int(r[0]) if i == 0 else (int(v) if header[i] in ("epoch", "step") else f"{v:.6g}")
                        for i, v in enumerate(r)])


def _write_outputs(out: Path, model: SpotDiffEncoder, encoder: Any, params: Params, history: list[list[float]],
                   val_history: list[list[float]], result: TrainResult) -> None:
    from spotdiff.model.curves import plot_losses

    export_model(out / "model.safetensors", model, encoder.identity, params.embed)
    config = {"encoder": model.config(), "backbone_identity": encoder.identity, "embed": params.embed.model_dump(),
              "train": params.train.model_dump(exclude={"cache_dir"}), "factors": list(FACTORS), "feature_version": cache.FEATURE_VERSION}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    _write_csv(out / "losses.csv", ["step", *TERMS], history)
    _write_csv(out / "val.csv", ["epoch", "step", *TERMS], val_history)
    plot_losses(out / "losses.csv", out / "val.csv", out / "losses.png",
                chosen_step=result.best["step"] if result.best and params.train.early_stopping.patience else None)
    # No wall time or paths here: the file is a DVC output whose hash enters dvc.lock and the release.
    summary = {k: v for k, v in result.as_dict().items() if k not in ("seconds", "out_dir", "cache_hit", "resumed_from")}
    summary["val_last"] = dict(zip(TERMS, val_history[-1][2:])) if val_history else {}
    rows = {int(r[0]): r for r in val_history}
    summary["val_best"] = dict(zip(TERMS, rows[result.best["epoch"]][2:])) if result.best else {}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def run(params: Params, paths: Mapping[str, Path], *, progress: bool = True, no_resume: bool = False,
        max_steps: int | None = None) -> TrainResult:
    """The stage (``spotdiff.stages``): train on ``paths["shards"]`` into ``paths["out"]``, resuming
    ``paths["checkpoint"]`` when it belongs to the same params, data and code (unless ``no_resume``)."""
    return train(paths["shards"], paths["out"], params, progress=progress, resume=not no_resume,
                 max_steps=max_steps, checkpoint_path=paths["checkpoint"])

"""``sam`` segmentation (segment-anything): SAM prompted with a box and a few subject points.

The prompt comes from the photo itself: its ``box`` hint when it has one, else the
bounding box of a coarse GrabCut mask; the positive points are the deepest, mutually
spread-out pixels of that coarse mask. SAM answers with three candidate masks; the one
with the best predicted IoU is kept.

Weights are never downloaded: ``generate.sam.checkpoint`` must name a local
segment-anything checkpoint (e.g. ``sam_vit_b_01ec64.pth`` for ``vit_b``), which is read
with ``torch.load(weights_only=True)`` -- tensors only, no pickled code runs. A missing,
unreadable or mismatched file raises ConfigError when the segmenter is constructed,
never once per photo.

torch and segment-anything are imported only when a segmenter is built: importing this
module (for ``SamConfig``) stays as cheap as the other backends.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import cv2
import numpy as np

from spotdiff.config import ConfigError, SamConfig
from spotdiff.common.weights import resolve_device as _resolve_device
from spotdiff.common.images import Photo
from spotdiff.generate.segment.registry import Segmentation, _instances, register
from spotdiff.generate.segment.grabcut import MARGIN, segment_grabcut

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

PARAMS_KEY = "generate.sam"
"""Where ``SamConfig`` lives in params.yaml; error messages name keys under it."""
STABILITY_OFFSET = 1.0
"""Logit offset of the stability score: IoU of the masks thresholded at ``mask_threshold`` +- this."""
MIN_POINT_DEPTH = 0.3
"""A prompt point must lie at least this fraction of the coarse mask's deepest distance from its edge:
points near the edge of a coarse mask are the likeliest to fall on background."""
POINT_SPACING = 0.5
"""After each point, pixels closer to it than this fraction of its own depth are excluded, so the
points spread over the subject instead of clustering at its centre."""


def _config_error(message: str) -> Exception:
    return ConfigError(message)


def _first_line(err: BaseException, limit: int = 200) -> str:
    """``Type: message`` cut to its first line (torch's messages run to paragraphs)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:limit]}"


def _load_failure(err: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in one line.

    torch's own message for a refused pickle leads with advice to retry with
    ``weights_only=False``, which this backend never does; keep only the reason.
    """
    if isinstance(err, pickle.UnpicklingError):
        found = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        why = found.group(1).split(". Please")[0].strip()[:200] if found else "unknown content"
        return (f"refused by the weights-only loader: {why}; the file is not a torch state dict, "
                f"or it needs pickled code, which is never run")
    return _first_line(err)


def resolve_device(device: str) -> str:
    """``generate.sam.device`` resolved: see ``spotdiff.common.weights.resolve_device``."""
    return _resolve_device(device, f"{PARAMS_KEY}.device")


def load_checkpoint(checkpoint: str | None, model_type: str) -> dict[str, torch.Tensor]:
    """The state dict in ``checkpoint``, read with ``weights_only=True`` onto the CPU.

    Raises ConfigError (naming the path and ``generate.sam.checkpoint``) when the path is
    unset, missing, unreadable, or holds anything but a mapping of names to tensors.
    """
    key = f"{PARAMS_KEY}.checkpoint"
    if not checkpoint:
        raise _config_error(f"{key} is not set: the sam backend needs a local segment-anything {model_type} "
                            f"checkpoint file (weights are never downloaded)")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "no such file"
        raise _config_error(f"{key} = '{path}': {what}")
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- torch.load raises many types for a bad file
        # (UnpicklingError for foreign or forbidden pickles, RuntimeError for broken zips, EOFError,
        # OSError for permissions, ...); to the person who set the path they all mean the same thing.
        raise _config_error(f"{key} = '{path}': not a readable torch checkpoint ({_load_failure(err)})") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _config_error(f"{key} = '{path}': expected a state dict (parameter name -> tensor), "
                            f"got {type(state).__name__}")
    return dict(state)


def interior_points(region: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` positive prompt points inside the bool mask ``region``, as float (k, 2) (x, y) pixels.

    Deterministic: the first point is the pixel deepest inside the region (largest distance
    to its edge); each next one is the deepest pixel not within ``POINT_SPACING`` x its
    predecessor's depth of an earlier point, down to ``MIN_POINT_DEPTH`` x the largest depth.
    Ties go to the first pixel in row-major order. Coordinates are pixel centres (+0.5).
    """
    if n <= 0 or not region.any():
        return np.zeros((0, 2), np.float32)
    # Pad with background so a region touching the image border still has an edge there.
    padded = np.pad(region.astype(np.uint8), 1)
    depth = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    floor = MIN_POINT_DEPTH * float(depth.max())
    free = depth.copy()
    points = []
    for _ in range(n):
        idx = int(np.argmax(free))
        d = float(free.flat[idx])
        if d <= 0.0 or d < floor:
            break
        y, x = divmod(idx, region.shape[1])
        points.append((x + 0.5, y + 0.5))
        cv2.circle(free, (x, y), max(1, int(np.ceil(POINT_SPACING * d))), 0.0, thickness=-1)
    return np.asarray(points, np.float32).reshape(-1, 2)


def prompt_box(photo: Photo, coarse: np.ndarray | None) -> np.ndarray:
    """SAM's box prompt, float [x0, y0, x1, y1] in photo pixels.

    The photo's ``box`` hint when set (and not degenerate); else the bounding box of the
    bool ``coarse`` mask; else (no or empty coarse mask) the centred box inset by grabcut's
    ``MARGIN`` on each side.
    """
    h, w = photo.rgb.shape[:2]
    if photo.box is not None:
        x0, y0, x1, y1 = np.clip(np.asarray(photo.box, np.float64), 0.0, 1.0) * (w, h, w, h)
        if x1 > x0 and y1 > y0:
            return np.array([x0, y0, x1, y1], np.float32)
    if coarse is not None and coarse.any():
        rows, cols = np.flatnonzero(coarse.any(axis=1)), np.flatnonzero(coarse.any(axis=0))
        return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)
    return np.array([w * MARGIN, h * MARGIN, w * (1 - MARGIN), h * (1 - MARGIN)], np.float32)


def stability_score(logits: np.ndarray, mask_threshold: float) -> float:
    """SAM's stability score of one (H, W) logit map: IoU of its masks at threshold +- ``STABILITY_OFFSET``.

    In [0, 1]; 0 when even the low threshold leaves the mask empty (SAM would give NaN).
    """
    import torch
    from segment_anything.utils.amg import calculate_stability_score

    value = float(calculate_stability_score(torch.from_numpy(logits)[None], mask_threshold, STABILITY_OFFSET)[0])
    return value if np.isfinite(value) else 0.0


class SamSegmenter:
    """Segment-anything backend: ``photo -> Segmentation``.

    Score: SAM's predicted IoU of the chosen mask, clipped to [0, 1]. The returned
    Segmentation also carries ``extra = {"predicted_iou": raw predicted IoU,
    "stability": stability score in [0, 1]}``. The mask is the sigmoid of SAM's logits
    (upsampled to photo size by SAM itself) centred on the model's ``mask_threshold``,
    so mask >= 0.5 is exactly SAM's binary mask.

    One instance holds one model and one predictor: use it from one thread at a time
    (the pipeline builds one per worker process).
    """

    def __init__(self, cfg: SamConfig, builder: Callable[..., Sam] | None = None):
        """Build the ``cfg.model_type`` architecture and load ``cfg.checkpoint`` into it.

        ``builder`` makes the untrained model; it is called as ``builder(checkpoint=None)``
        (the form of segment-anything's ``sam_model_registry`` entries) and defaults to
        ``sam_model_registry[cfg.model_type]``. Weights always come from the checkpoint,
        loaded here, whatever the builder. Raises ConfigError for a bad checkpoint or device.
        """
        # Device and checkpoint first: both are cheap to check, building vit_h is not.
        device = resolve_device(cfg.device)
        state = load_checkpoint(cfg.checkpoint, cfg.model_type)
        if builder is None:
            from segment_anything import sam_model_registry

            builder = sam_model_registry[cfg.model_type]
        model = builder(checkpoint=None)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            # torch's first line is only a heading ("Error(s) in loading state_dict"); the mismatch follows it.
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            detail = "; ".join(lines[1:3]) or (lines[0] if lines else type(err).__name__)
            raise _config_error(f"{PARAMS_KEY}.checkpoint = '{Path(cfg.checkpoint).expanduser()}' does not fit "
                                f"{PARAMS_KEY}.model_type = {cfg.model_type} ({detail[:300]})") from err
        self._attach(model, cfg, device)

    @classmethod
    def from_model(cls, model: Sam, cfg: SamConfig | None = None) -> SamSegmenter:
        """A segmenter around an already-built (and already-weighted) ``model``; ``cfg.checkpoint`` is ignored.

        The model is moved to ``cfg.device`` and put in eval mode.
        """
        cfg = cfg or SamConfig()
        self = cls.__new__(cls)
        self._attach(model, cfg, resolve_device(cfg.device))
        return self

    def _attach(self, model: Sam, cfg: SamConfig, device: str) -> None:
        from segment_anything import SamPredictor

        self.cfg = cfg
        self.device = device
        self.model = model.to(device).eval()
        self._predictor = SamPredictor(self.model)

    def prompts(self, photo: Photo, class_name: str) -> tuple[np.ndarray, np.ndarray]:
        """The box (float [x0, y0, x1, y1]) and positive points (float (k, 2) x, y) SAM gets, photo pixels."""
        coarse = None
        # The coarse mask is only needed for points or when there is no box hint; skip its cost otherwise.
        if self.cfg.points > 0 or photo.box is None:
            coarse = segment_grabcut(photo, class_name).mask >= 0.5
        box = prompt_box(photo, coarse)
        if self.cfg.points == 0:
            return box, np.zeros((0, 2), np.float32)
        x0, y0, x1, y1 = np.round(box).astype(int)
        inside = np.zeros(coarse.shape, bool)
        inside[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
        region = coarse & inside
        # A coarse mask that misses the box says nothing about where the subject is; the box does.
        return box, interior_points(region if region.any() else inside, self.cfg.points)

    def __call__(self, photo: Photo, class_name: str) -> Segmentation:
        box, points = self.prompts(photo, class_name)
        self._predictor.set_image(np.ascontiguousarray(photo.rgb), image_format="RGB")
        try:
            logits, ious, _ = self._predictor.predict(
                point_coords=points if len(points) else None,
                point_labels=np.ones(len(points), np.int64) if len(points) else None,
                box=box,
                multimask_output=True,
                return_logits=True,
            )
        finally:
            # The image embedding is only valid for this photo; don't keep it alive between calls.
            self._predictor.reset_image()
        best = int(np.argmax(ious))
        threshold = float(self.model.mask_threshold)
        chosen = np.asarray(logits[best], np.float32)
        # tanh form of the sigmoid: no overflow for SAM's large-magnitude logits.
        mask = (0.5 + 0.5 * np.tanh(0.5 * (chosen - threshold))).astype(np.float32)
        predicted_iou = float(ious[best])
        seg = Segmentation(mask, float(np.clip(predicted_iou, 0.0, 1.0)), "sam")
        info: dict[str, Any] = {"predicted_iou": predicted_iou, "stability": stability_score(chosen, threshold)}
        # Works before and after Segmentation gains an ``extra`` dict field.
        extra = getattr(seg, "extra", None)
        if extra is None:
            object.__setattr__(seg, "extra", info)
        else:
            extra.update(info)
        return seg


_registered: SamConfig | None = None


def register_sam(cfg: SamConfig) -> None:
    """Register the ``sam`` backend with settings ``cfg`` (the model is built lazily, on first use).

    Call it in every process that segments (the pipeline's workers are spawned, so each
    needs its own call). Registering different settings drops a model already built in
    this process from earlier ones.
    """
    global _registered
    register("sam", lambda: SamSegmenter(cfg))
    if _registered != cfg:
        # segment.get() keeps one instance per name and process; one built from other settings is stale.
        _instances.pop("sam", None)
    _registered = cfg

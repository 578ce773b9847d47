"""The features the trained subject feature must beat: what it would take to match it without training.

Each baseline maps backbone features (N, F) to a feature of its own, computed from what the trained
model is given and nothing it learned:

- ``raw_image``: the whole backbone feature, as it is (the old single baseline);
- ``raw_window``: the standardised backbone feature over the same central grid window the subject head
  reads (``SpotDiffEncoder.subject_dims``; the whole feature when the head reads it all), with the
  model's own input standardisation (fitted on the train split before training);
- ``random_projection``: ``raw_window`` times a seeded Gaussian matrix, to the subject feature's
  dimension;
- ``pca``: ``raw_window`` projected on its top principal components over the train split's images (no
  labels), at the subject feature's dimension;
- ``untrained_head``: the subject head as training started it: the same architecture, initialised with
  the training seed (``torch.manual_seed(train.seed)`` before construction, as ``spotdiff.train.run``
  does), with the same input standardisation, never trained.

A baseline is a registry entry (``BASELINES``): a function of a ``Context`` that returns the map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from spotdiff.common import seeding
from spotdiff.evaluate.probes import pca_basis

Feature = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Context:
    model: Any
    """The trained ``SpotDiffEncoder`` (its layout and input standardisation; its weights are not used)."""
    train_features: np.ndarray
    """Backbone features of the train split's images, (rows, F)."""
    train_seed: int
    """``train.seed`` of the run that trained ``model`` (its ``config.json``)."""

    @property
    def dim(self) -> int:
        return int(self.model.feature_dim)


def _window(ctx: Context) -> Feature:
    mean, std = ctx.model.input_mean.numpy().astype(np.float64), ctx.model.input_std.numpy().astype(np.float64)
    dims = ctx.model.subject_dims
    idx = np.arange(mean.size) if dims is None else dims.numpy()
    mean, std = mean[idx], std[idx]

    def f(x: np.ndarray) -> np.ndarray:
        # the window's columns first, then standardise: the same values, a quarter of the memory
        return (np.asarray(x)[:, idx].astype(np.float64) - mean) / std

    return f


def _raw_image(ctx: Context) -> Feature:
    return lambda x: np.asarray(x, np.float64)


def _random_projection(ctx: Context) -> Feature:
    window = _window(ctx)
    width = window(ctx.train_features[:1]).shape[1]
    proj = seeding.rng(ctx.train_seed, "evaluate-random-projection", width).normal(size=(width, ctx.dim))
    return lambda x: window(x) @ proj / np.sqrt(ctx.dim)


def _pca(ctx: Context) -> Feature:
    window = _window(ctx)
    centre, basis = pca_basis(ctx.train_features, ctx.dim, transform=window)
    return lambda x: (window(x) - centre) @ basis


def _untrained_head(ctx: Context) -> Feature:
    import torch

    from spotdiff.model.encoder import SpotDiffEncoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.train_seed)
        head = SpotDiffEncoder(**ctx.model.config())
    with torch.no_grad():
        head.input_mean.copy_(ctx.model.input_mean)
        head.input_std.copy_(ctx.model.input_std)
    head.eval()

    def f(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return head(torch.from_numpy(np.asarray(x, np.float32)))["subject"].numpy().astype(np.float64)

    return f


BASELINES: dict[str, Callable[[Context], Feature]] = {
    "raw_image": _raw_image,
    "raw_window": _window,
    "random_projection": _random_projection,
    "pca": _pca,
    "untrained_head": _untrained_head,
}
"""Baseline name -> builder. Order is the report's column order."""


def build(ctx: Context) -> dict[str, Feature]:
    """Every baseline's feature map for ``ctx``."""
    return {name: make(ctx) for name, make in BASELINES.items()}

"""Pose expert, background expert and subject head on top of the (frozen) backbone feature.

Each is a two-layer MLP from the backbone feature (``in_dim``) to a ``feature_dim`` vector. The pose
and background experts learn to "spot" the interference; the subject feature is what remains: it is
trained to be orthogonal to both (``losses.orthogonality``) and, with ``project=True``, its components
along the two expert features are also removed explicitly (``remove_components``).

The subject head may read only the central window of the backbone feature's pooled patch grid
(``window``, set from ``train.subject_window``): the subject sits in the middle of every view and the
background surrounds it, so the cells around the edge are mostly background. Reading the whole feature,
the head has to learn from a few hundred groups to ignore most of its input; on the embedded backbone it
did not, and matched views across backgrounds by chance-level rates (issue 6, docs/evaluation.md). The
experts keep the whole feature: pose and background show everywhere.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

FACTORS = ("subject", "pose", "background")


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Linear -> LayerNorm -> GELU -> Linear. No dropout: the forward pass draws no random numbers, so
    a resumed run replays the same curve from (weights, optimiser state, step) alone."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, out_dim))


def remove_components(x: torch.Tensor, *others: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``x`` minus its projection on the span of ``others``, row by row (Gram-Schmidt on ``others``).

    Shapes (N, D). The result is orthogonal to every row of ``others`` up to float rounding, so the
    subject feature cannot carry the direction the experts use for pose or background.
    """
    basis: list[torch.Tensor] = []
    for o in others:
        for b in basis:
            o = o - (o * b).sum(-1, keepdim=True) * b
        basis.append(o / o.norm(dim=-1, keepdim=True).clamp_min(eps))
    for b in basis:
        x = x - (x * b).sum(-1, keepdim=True) * b
    return x


def window_dims(in_dim: int, grid: int, cell_dim: int, window: int) -> np.ndarray:
    """Indices into a backbone feature of the central ``window`` x ``window`` cells of its pooled grid.

    Layout (``ImageEncoder.features``): ``in_dim - grid**2 * cell_dim`` leading values (the image
    embedding), then ``grid`` x ``grid`` cells of ``cell_dim`` values, row-major. ``window`` counts cells
    per side and must have the parity of ``grid`` so the window is centred.
    """
    offset = in_dim - grid * grid * cell_dim
    if grid < 1 or cell_dim < 1 or offset < 0:
        raise ValueError(f"window_dims: a {grid}x{grid} grid of {cell_dim}-value cells does not fit a "
                         f"{in_dim}-value feature")
    if not 1 <= window <= grid or (grid - window) % 2:
        raise ValueError(f"window_dims: window {window} must be 1..{grid} cells with the parity of the grid "
                         f"({grid}), so that it is centred")
    lo = (grid - window) // 2
    cells = [r * grid + c for r in range(lo, lo + window) for c in range(lo, lo + window)]
    return np.concatenate([offset + k * cell_dim + np.arange(cell_dim) for k in cells])


class SpotDiffEncoder(nn.Module):
    """Backbone feature (N, in_dim) -> ``{"subject", "pose", "background"}``, each (N, feature_dim),
    not normalised (losses and evaluation compare directions, i.e. cosines).

    ``grid``, ``cell_dim``, ``window``: the backbone feature's pooled-grid layout and how many central
    cells per side the subject head reads (``window_dims``); ``window = 0`` (default): the whole feature.
    """

    def __init__(self, in_dim: int, hidden: int = 256, feature_dim: int = 64, project: bool = False,
                 grid: int = 0, cell_dim: int = 0, window: int = 0):
        super().__init__()
        self.in_dim, self.hidden, self.feature_dim, self.project = in_dim, hidden, feature_dim, project
        self.grid, self.cell_dim, self.window = grid, cell_dim, window
        dims = window_dims(in_dim, grid, cell_dim, window) if window else None
        # A buffer, not saved (persistent=False): it follows from the config, which is saved.
        self.register_buffer("subject_dims", None if dims is None else torch.from_numpy(dims), persistent=False)
        self.subject = mlp(in_dim if dims is None else len(dims), hidden, feature_dim)
        self.pose = mlp(in_dim, hidden, feature_dim)
        self.background = mlp(in_dim, hidden, feature_dim)
        # Per-dimension standardisation of the backbone feature, fitted on the training set
        # (``fit_input_scaling``) and saved with the weights: backbone features vary over a tiny range
        # around a large shared mean, which the first linear layers would otherwise have to undo.
        self.register_buffer("input_mean", torch.zeros(in_dim))
        self.register_buffer("input_std", torch.ones(in_dim))

    @torch.no_grad()
    def fit_input_scaling(self, features: torch.Tensor) -> None:
        """Set the input standardisation from training backbone features (rows = images)."""
        flat = features.reshape(-1, self.in_dim).float()
        self.input_mean.copy_(flat.mean(0))
        self.input_std.copy_(flat.std(0).clamp_min(1e-6))

    def config(self) -> dict[str, int | bool]:
        """Constructor arguments, saved next to the weights so a checkpoint rebuilds its own model."""
        return {"in_dim": self.in_dim, "hidden": self.hidden, "feature_dim": self.feature_dim,
                "project": self.project, "grid": self.grid, "cell_dim": self.cell_dim, "window": self.window}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - self.input_mean) / self.input_std
        pose, background = self.pose(x), self.background(x)
        subject = self.subject(x if self.subject_dims is None else x[:, self.subject_dims])
        if self.project:
            subject = remove_components(subject, pose, background)
        return {"subject": subject, "pose": pose, "background": background}

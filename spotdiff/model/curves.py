"""Training curves as a PNG (``dvc plots`` reads the CSVs; its HTML needs a CDN, a PNG does not)."""

from __future__ import annotations

import csv
from pathlib import Path


def _read(path: Path) -> dict[str, list[float]]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}


def plot_losses(losses_csv: str | Path, val_csv: str | Path | None, out_png: str | Path,
                chosen_step: int | None = None) -> None:
    """One panel per loss term: per-step training values (thin), their per-epoch running mean, and the
    validation value at each epoch end (dots), against the step; ``chosen_step``: the step whose weights the
    model keeps (early stopping), a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = _read(Path(losses_csv))
    val = _read(Path(val_csv)) if val_csv and Path(val_csv).is_file() else {}
    terms = [k for k in train if k != "step"]
    fig, axes = plt.subplots(1, len(terms), figsize=(3.2 * len(terms), 3.0), constrained_layout=True)
    window = max(1, len(train["step"]) // max(1, len(val.get("step", [])) or 20))
    for ax, term in zip(axes, terms):
        y = train[term]
        ax.plot(train["step"], y, color="#9ecae1", lw=0.8, label="train (step)")
        smooth = [sum(y[max(0, i - window + 1):i + 1]) / len(y[max(0, i - window + 1):i + 1]) for i in range(len(y))]
        ax.plot(train["step"], smooth, color="#08519c", lw=1.6, label="train (running mean)")
        if term in val:
            ax.plot(val["step"], val[term], "o", color="#e6550d", ms=3, label="val (epoch end)")
        if chosen_step is not None:
            ax.axvline(chosen_step, color="#636363", ls="--", lw=1, label="model (best val)")
        ax.set_title(term)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=7)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)

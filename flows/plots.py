"""dvc.yaml's ``plots`` drawn as PNG files that open offline.

``dvc plots show`` writes an HTML page that loads Vega from a CDN, so it shows nothing without a network.
``render_plots`` reads the same definitions (``x``, ``y: {csv: [columns]}``, optional ``template``) and
draws each with matplotlib: a line per column against ``x``, or for ``template: bar_horizontal`` one bar
per row labelled by the ``y`` column(s), with the ``low``/``high`` interval when the CSV has one.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import yaml


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _number(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


def render_plots(dvc_yaml: str | Path = "dvc.yaml", out_dir: str | Path = "data/plots") -> list[Path]:
    """One PNG per plot of ``dvc_yaml`` into ``out_dir`` (paths of its CSVs are relative to the file's
    folder); returns the PNGs written. A plot whose CSV is missing is skipped with a note on stderr."""
    import sys

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dvc_yaml = Path(dvc_yaml)
    root, out = dvc_yaml.parent, Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in yaml.safe_load(dvc_yaml.read_text()).get("plots", []):
        (name, spec), = entry.items()
        spec: dict[str, Any] = spec or {}
        (csv_name, columns), = spec["y"].items()
        columns = [columns] if isinstance(columns, str) else list(columns)
        path = root / csv_name
        if not path.is_file():
            print(f"plots: {name}: {path} not found (run the stage that writes it); skipped", file=sys.stderr)
            continue
        rows = _rows(path)
        fig = Figure(figsize=(8, max(3.0, 0.22 * len(rows)) if spec.get("template") == "bar_horizontal" else 4.0))
        ax = fig.add_subplot()
        if spec.get("template") == "bar_horizontal":
            labels = [" ".join(r.get(k, "") for k in ("kind", *columns, "feature") if r.get(k)) for r in rows]
            values = [_number(r[spec["x"]]) or 0.0 for r in rows]
            lows = [_number(r.get("low")) for r in rows]
            highs = [_number(r.get("high")) for r in rows]
            err = None
            if all(v is not None for v in lows + highs):
                err = [[v - lo for v, lo in zip(values, lows)], [hi - v for v, hi in zip(values, highs)]]
            ax.barh(range(len(rows)), values, xerr=err, color="#4c78a8", ecolor="#333333", capsize=2)
            ax.set_yticks(range(len(rows)), labels, fontsize=6)
            ax.invert_yaxis()
            ax.set_xlabel(spec["x"])
        else:
            xs = [_number(r[spec["x"]]) for r in rows]
            for col in columns:
                ax.plot(xs, [_number(r[col]) for r in rows], label=col, linewidth=1.2)
            ax.set_xlabel(spec["x"])
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        ax.set_title(f"{name} ({csv_name})", fontsize=9)
        fig.tight_layout()
        png = out / f"{name}.png"
        FigureCanvasAgg(fig).print_png(str(png))
        written.append(png)
    return written

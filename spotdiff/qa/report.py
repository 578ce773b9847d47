"""The QA report: what a person looks at instead of reading scores.parquet.

``report.md`` (counts, a table of checks, rejected samples), one ``hist_<check>.png`` per
check (the score's distribution, accepted and rejected samples stacked, bounds drawn as
red lines) and one ``worst_<check>.png`` per check: the samples nearest to or furthest
beyond a bound, drawn with ``spotdiff.common.contact_sheet.render_rows``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from spotdiff.qa import checks
from spotdiff.config.qa import QaConfig
from spotdiff.qa.results import QaStats, SampleResult

MAX_LISTED = 100
"""Rejected samples listed by name in report.md (all of them are in quarantine.parquet)."""


def _finite_bounds(lo: float, hi: float) -> list[float]:
    return [b for b in (lo, hi) if math.isfinite(b)]


def histogram(name: str, results: list[SampleResult], cfg: QaConfig, path: Path) -> None:
    """``hist_<name>.png``: per-sample scores, accepted vs rejected, bounds marked."""
    # The Agg canvas directly, not pyplot: no global backend switch, no figure manager.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    check = checks.CHECKS[name]
    lo, hi = check.bounds(cfg)
    judged = [(o.score, not r.reasons) for r in results if (o := r.outcomes.get(name)) is not None]
    scores = np.array([s for s, _ in judged], float)
    ok = np.array([a for _, a in judged], bool)
    finite = np.isfinite(scores)
    fig = Figure(figsize=(6.4, 3.4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if finite.any():
        edges = list(scores[finite]) + _finite_bounds(lo, hi)
        left, right = min(edges), max(edges)
        pad = (right - left) * 0.05 or 0.5
        bins = np.linspace(left - pad, right + pad, 41)
        counts, _, _ = ax.hist([scores[finite & ok], scores[finite & ~ok]], bins=bins, stacked=True,
                               color=["#4c72b0", "#dd8452"], label=["accepted sample", "rejected sample (any reason)"])
        for b in _finite_bounds(lo, hi):
            ax.axvline(b, color="#c0392b", linewidth=1.6, linestyle="--")
        ax.set_xlim(bins[0], bins[-1])
        if np.max(counts) >= 20:  # rare failures stay visible next to a tall peak
            ax.set_yscale("symlog", linthresh=1)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        # Above the plot, right of the title: "best" placement is slow and may still cover bars.
        ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False)
    else:
        ax.text(0.5, 0.5, "no finite scores", ha="center", va="center", transform=ax.transAxes)
    failed = sum(not o.passed for r in results if (o := r.outcomes.get(name)) is not None)
    no_value = int((~finite).sum())
    bound = f"pass in [{lo:g}, {hi:g}]"
    extra = f", {no_value} not measured" if no_value else ""
    ax.set_title(f"{name}: {failed} of {len(judged)} fail\n{bound}{extra}", fontsize=9, loc="left")
    ax.set_xlabel(_wrap(check.about, 90), fontsize=8)
    ax.set_ylabel("samples", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.84, bottom=0.2)
    fig.savefig(path, pil_kwargs={"compress_level": 1})  # fast zlib: these are throwaway plots


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def worst(name: str, results: list[SampleResult], cfg: QaConfig, n: int) -> list[SampleResult]:
    """Up to ``n`` decoded samples with the smallest margin to ``name``'s bounds (failures first)."""
    check = checks.CHECKS[name]
    lo, hi = check.bounds(cfg)
    ranked = [(checks.margin(o.score, lo, hi, check.nan_passes), r.index, r) for r in results
              if r.error is None and (o := r.outcomes.get(name)) is not None
              and (not o.passed or math.isfinite(o.score))]
    return [r for _, _, r in sorted(ranked, key=lambda t: (t[0], t[1]))[:n]]


def _label(r: SampleResult, name: str) -> str:
    o = r.outcomes[name]
    verdict = "FAIL" if not o.passed else "pass"
    lines = [r.key, f"{name}", f"= {o.score:.4g} ({o.view})", verdict]
    others = [x for x in r.reasons if x != name]
    # One reason a line: the label column is narrow. At most three, then a count.
    lines += [("also: " if i == 0 else "      ") + x for i, x in enumerate(others[:3])]
    if len(others) > 3:
        lines.append(f"      +{len(others) - 3} more")
    return "\n".join(lines)


def write_report(results: list[SampleResult], gen: Path, out: Path, cfg: QaConfig, stats: QaStats) -> None:
    from spotdiff.common.contact_sheet import render_rows
    from spotdiff.common.tars import samples_with_keys

    picks = {name: worst(name, results, cfg, cfg.report.worst_examples) for name in checks.CHECKS}
    wanted = {r.key for rs in picks.values() for r in rs}
    members = dict(samples_with_keys(gen / "chunks", wanted))
    for name in checks.CHECKS:
        histogram(name, results, cfg, out / f"hist_{name}.png")
        rows = [(_label(r, name), members[r.key]) for r in picks[name] if r.key in members]
        outcomes = [r.outcomes[name] for r in picks[name]]
        # A sheet of samples that all pass with one same score (decode, size) shows nothing.
        if rows and (any(not o.passed for o in outcomes) or len({o.score for o in outcomes}) > 1):
            render_rows(rows).save(out / f"worst_{name}.png", compress_level=1)
    (out / "report.md").write_text(_markdown(results, cfg, stats, out))


def _markdown(results: list[SampleResult], cfg: QaConfig, stats: QaStats, out: Path) -> str:
    lines = ["# QA report", "",
             f"**{stats.samples_in}** samples in, **{stats.accepted}** accepted, **{stats.rejected}** rejected "
             f"({stats.accepted / max(stats.samples_in, 1):.1%} pass). Identity encoder: `{cfg.identity.encoder}`.", "",
             "Rejected samples are in `quarantine.parquet` (every reason) and `quarantine.tar` (their members); "
             "`scores.parquet` has every sample's scores.", "",
             "## Checks", "",
             "| check | score | pass range | failed | pass rate | first reason of |",
             "|---|---|---|---:|---:|---:|"]
    for name, check in checks.CHECKS.items():
        lo, hi = check.bounds(cfg)
        rate = stats.pass_rate.get(name)
        about = check.about.replace("|", "\\|")  # a bare | would end the table cell
        lines.append(f"| `{name}` | {about} | [{lo:g}, {hi:g}] | {stats.rejected_by_reason.get(name, 0)} | "
                     f"{'-' if rate is None else f'{rate:.1%}'} | {stats.rejected_by_first_reason.get(name, 0)} |")
    rejected = [r for r in results if r.reasons]
    lines += ["", f"## Rejected ({len(rejected)})", ""]
    if rejected:
        lines += ["| key | subject | reasons |", "|---|---|---|"]
        for r in rejected[:MAX_LISTED]:
            lines.append(f"| {r.key} | {r.subject_id} | {', '.join(r.reasons)} |")
        if len(rejected) > MAX_LISTED:
            lines.append(f"| ... | | {len(rejected) - MAX_LISTED} more in quarantine.parquet |")
    lines += ["", "## Per check", "",
              "Histograms: accepted and rejected samples stacked, bounds as red dashed lines, log counts. "
              "Sheets: the samples nearest to (or furthest beyond) a bound, worst first.", ""]
    for name in checks.CHECKS:
        lines += [f"### `{name}`", "", f"![{name} histogram](hist_{name}.png)", ""]
        if (out / f"worst_{name}.png").exists():
            lines += [f"![{name} worst examples](worst_{name}.png)", ""]
    return "\n".join(lines) + "\n"

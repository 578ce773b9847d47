"""The whole pipeline as Prefect flows: ``pipeline`` (deployed), ``repro`` (``spotdiff run``) and scheduled
retraining (deployed); prefect.yaml deploys the first and the last.

``pipeline_flow`` runs every stage of ``spotdiff.stages`` as a subflow, in order, under ``root`` (default
``data``), and publishes Markdown/table artifacts: QA pass rates, the evaluation headline, the release. It
always recomputes; ``dvc repro`` skips stages whose inputs did not change and records dvc.lock. For the
same inputs both write the same release bytes (``spotdiff.publish.run``: canonical params, no dvc.lock).

Why subflows there and ``dvc repro`` elsewhere: a deployment run of ``pipeline`` must work on any params
file and output root (a tiny profile in a test, an experiment beside ``data/``), which ``dvc.yaml``'s
fixed paths cannot do, and subflows give one Prefect run tree with per-stage states, logs and
artifacts. ``repro_flow`` (``spotdiff run``) and scheduled retraining are about the versioned data itself,
so they go through DVC: only changed stages rerun, dvc.lock records what ran, and ``dvc push`` shares the
outputs. ``repro_flow`` runs one task per stage (``dvc repro --single-item <stage>``, in pipeline order), so
the run's states and artifacts are per stage while each stage runs as a plain process, as under ``dvc repro``.

``scheduled_retrain_flow`` pulls the latest code, params and data (git, DVC remote; each skipped with a
logged reason when there is nothing to pull from), runs ``dvc repro``, pushes outputs, and publishes a
dated release into ``archive`` only if the evaluation did not regress beyond ``publish.max_regression``
against the last archived release (``spotdiff.publish.retrain.decide``). The decision and its numbers are an
artifact and the flow's return value.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.interrupts import run_child
from flows.stages import stage_flow
from spotdiff.config import load_params
from spotdiff.errors import MissingInputError
from spotdiff.stages import PIPELINE, STAGES, paths_under


def _qa_artifact(qa_dir: Path) -> None:
    m = json.loads((qa_dir / "metrics.json").read_text())
    rows = [{"check": k, "pass_rate": round(v["pass_rate"], 4)} for k, v in sorted(m["checks"].items())]
    create_table_artifact(rows, key="qa-pass-rates",
                          description=f"QA: {m['accepted']} of {m['samples_in']} groups accepted")


def _eval_artifact(headline: dict) -> None:
    lines = ["| metric | best baseline | subject feature |", "|---|---|---|"]
    lines += [f"| {k} | {headline['best_baseline'].get(k, '')} ({headline['best_baseline_name'].get(k, '')}) | {v} |"
              for k, v in headline["subject"].items()]
    create_markdown_artifact(f"## Evaluation (criterion {headline['verdict']})\n\n" + "\n".join(lines),
                             key="evaluation")


def _release_artifact(tar: Path) -> None:
    digest = Path(f"{tar}.sha256").read_text().split()[0]
    create_markdown_artifact(f"## Release\n\n`{tar}`\n\nsha256 `{digest}`\n\nCheck: `spotdiff verify {tar}`",
                             key="release")


def _release(root: Path, params: str, version: str | None = None, out: str | Path | None = None) -> Path:
    """Publish the outputs under ``root`` into ``out`` (default ``<root>/release``); returns the tar's path.
    Run from the repository: its source inputs (requirements.lock) are read, and paths recorded, from there."""
    from spotdiff.publish.run import run as publish

    paths = {**paths_under(STAGES["publish"], root), "params_file": Path(params)}
    if out is not None:
        paths["out"] = Path(out)
    return Path(publish(load_params(params), paths, version=version).release)


def effective_params(params: str, overrides: tuple[str, ...] | list[str], root: Path) -> str:
    """``params`` itself, or with overrides a validated, complete copy written to
    ``<root>/params.effective.yaml``: the release ships the params file, so it must be the one every stage
    ran with."""
    if not Path(params).is_file():
        raise MissingInputError(f"params file {params} not found (pipeline parameter `params`)")
    if not overrides:
        return params
    import yaml

    resolved = load_params(params, tuple(overrides)).model_dump(mode="json")
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.effective.yaml"
    path.write_text(f"# {params} with overrides {list(overrides)}\n" + yaml.safe_dump(resolved, sort_keys=False))
    return str(path)


@flow(name="pipeline", log_prints=True)
def pipeline_flow(params: str = "params.yaml", overrides: tuple[str, ...] = (), root: str = "data",
                  progress: bool = False) -> dict:
    """Every stage of ``spotdiff.stages``, in order, under ``root`` (paths relative to the working directory:
    the repository in a deployment run), each a subflow; ``overrides`` look like ``generate.n_groups=50``.
    Returns ``{"release": tar path, "headline": evaluation headline}``."""
    r = Path(root)
    params = effective_params(params, overrides, r)
    results = {}
    for name, stage in PIPELINE.items():
        paths = paths_under(stage, r)
        if name == "publish":
            # The params every stage ran with; publish packs them canonically, and no dvc.lock (see
            # spotdiff.publish.run), so this release is byte-identical to `dvc repro`'s for the same inputs.
            paths["params_file"] = Path(params)
        results[name] = stage_flow(name, params, (), paths, progress)
        if name == "qa":
            _qa_artifact(paths["out"])
    headline = {k: v for k, v in results["evaluate"].items() if k != "summary"}
    _eval_artifact(headline)
    tar = Path(results["publish"]["release"])
    _release_artifact(tar)
    return {"release": str(tar), "headline": headline}


def _dvc_env() -> dict[str, str]:
    """The environment dvc runs stages in: this interpreter's scripts first on PATH, so a stage's
    ``spotdiff`` command is this installation's whether or not its environment is activated."""
    return {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            "DVC_NO_ANALYTICS": "1"}


@task(name="dvc-repro-stage")
def _repro_stage(name: str) -> int:
    """``dvc repro --single-item name`` in the working directory, output passed through; its exit code.
    A process group of its own (``flows.interrupts.run_child``): Ctrl-C stops dvc and its stage, never orphans them."""
    return run_child([sys.executable, "-m", "dvc", "repro", "--single-item", name], env=_dvc_env(),
                     label=f"dvc repro --single-item {name}").returncode


@flow(name="repro", log_prints=True)
def repro_flow(targets: list[str] | None = None) -> int:
    """``dvc repro`` of the repository in the working directory, one task per stage of ``spotdiff.stages`` in
    pipeline order (``targets``: one ``dvc repro`` of those targets instead). Returns dvc's exit code; the QA,
    evaluation and release artifacts are published from the outputs."""
    if targets:
        return run_child([sys.executable, "-m", "dvc", "repro", *targets], env=_dvc_env(),
                         label=f"dvc repro {' '.join(targets)}").returncode
    for name, stage in PIPELINE.items():
        rc = _repro_stage(name)
        if rc != 0:
            return rc
        if name == "qa":
            _qa_artifact(Path(stage.outputs["out"]))
        if name == "evaluate":
            _eval_artifact(json.loads((Path(stage.outputs["out"]) / "headline.json").read_text()))
    for tar in sorted(Path(STAGES["publish"].outputs["out"]).glob("*.tar")):
        _release_artifact(tar)
    return 0


def _run(cmd: list[str], logger, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**_dvc_env(), **(env or {})}
    done = run_child(cmd, capture=True, env=env, cwd=cwd)
    logger.info("%s -> exit %d %s", " ".join(cmd), done.returncode, (done.stdout + done.stderr)[-500:].strip())
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} in {cwd} failed with exit code {done.returncode}: {done.stderr[-2000:]}")
    return done


def _git_pull(repo: Path, logger) -> str:
    """``git pull --ff-only`` if ``repo`` tracks an upstream branch; else the reason it was skipped."""
    if _run(["git", "rev-parse", "--is-inside-work-tree"], logger, repo, check=False).returncode != 0:
        return "skipped: not a git repository"
    if not _run(["git", "remote"], logger, repo, check=False).stdout.strip():
        return "skipped: no git remote"
    if _run(["git", "rev-parse", "--abbrev-ref", "@{upstream}"], logger, repo, check=False).returncode != 0:
        return "skipped: the current branch tracks no upstream branch"
    _run(["git", "pull", "--ff-only"], logger, repo)
    return "pulled"


@flow(name="scheduled-retrain", log_prints=True)
def scheduled_retrain_flow(repo: str = ".", archive: str = "releases") -> dict:
    """Pull, ``dvc repro``, push, then publish a dated release into ``archive`` (relative to ``repo``) unless
    evaluation regressed. Returns the decision: ``publish``, ``reason``, ``rows`` (metric, previous, new,
    change, regressed), ``max_regression``, ``previous_release``, ``git``, ``dvc_remote`` and, when
    published, ``release``."""
    from spotdiff.publish.retrain import decide, latest_release, release_headline

    logger = get_run_logger()
    root = Path(repo).resolve()
    git = _git_pull(root, logger)
    logger.info("git pull %s", git)
    dvc = [sys.executable, "-m", "dvc"]
    remotes = _run([*dvc, "remote", "list"], logger, root, check=False).stdout.strip()
    if remotes:
        _run([*dvc, "pull", "--allow-missing"], logger, root, check=False)  # a cold store: repro recomputes
    else:
        logger.info("dvc pull/push skipped: no DVC remote configured")
    from spotdiff.stages import check_param_paths

    p = load_params(root / "params.yaml")
    check_param_paths(p.model_dump())  # before DVC, which says only "unexpected error" on a null folder
    _run([*dvc, "repro"], logger, root)
    if remotes:
        _run([*dvc, "push"], logger, root, check=False)  # an unreachable store must not block the release
    new = json.loads((root / "data/eval/headline.json").read_text())
    folder = root / archive
    last = latest_release(folder)
    decision = decide(new, release_headline(last) if last else None, p.publish.max_regression)
    decision.update(previous_release=str(last) if last else None, git=git, dvc_remote=bool(remotes))
    if decision["publish"]:
        folder.mkdir(parents=True, exist_ok=True)
        version = time.strftime("%Y.%m.%d", time.gmtime())  # a rerun on the same day replaces that day's release
        with contextlib.chdir(root):  # where dvc ran the stages: the root the release's paths are relative to
            decision["release"] = str(_release(Path("data"), "params.yaml", version, folder))
    rows = "\n".join(f"| {r['metric']} | {r['previous']} | {r['new']} | {r['change']:+.4f} | "
                     f"{'yes' if r['regressed'] else 'no'} |" for r in decision["rows"])
    create_markdown_artifact(
        f"## Retrain decision: {'publish' if decision['publish'] else 'keep the last release'}\n\n"
        f"{decision['reason']} (tolerance {decision['max_regression']}; last release: "
        f"{decision['previous_release'] or 'none'}; new release: {decision.get('release', 'none')}).\n\n"
        "| metric | last release | this run | change | regressed |\n|---|---|---|---|---|\n" + rows,
        key="retrain-decision")
    return decision

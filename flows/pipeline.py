"""The whole pipeline as one Prefect flow, and scheduled retraining; deployed by prefect.yaml.

``pipeline_flow`` runs every stage's flow as a subflow, in order, under ``root`` (default ``data``),
and publishes Markdown/table artifacts: QA pass rates, the evaluation headline, the release. It always
recomputes; ``dvc repro`` (what ``spotdiff run`` and ``scheduled_retrain_flow`` use) skips stages
whose inputs did not change and records dvc.lock.

Why subflows here and ``dvc repro`` there: a deployment run of ``pipeline`` must work on any params
file and output root (a tiny profile in a test, an experiment beside ``data/``), which ``dvc.yaml``'s
fixed paths cannot do, and subflows give one Prefect run tree with per-stage states, logs and
artifacts. Scheduled retraining is about the versioned data itself, so it goes through DVC: only
changed stages rerun, dvc.lock records what ran, and ``dvc push`` shares the outputs.

``scheduled_retrain_flow`` pulls the latest code, params and data (git, DVC remote; each skipped with a
logged reason when there is nothing to pull from), runs ``dvc repro``, pushes outputs, and publishes a
dated release into ``archive`` only if the evaluation did not regress beyond ``publish.max_regression``
against the last archived release (``spotdiff.retrain.decide``). The decision and its numbers are an
artifact and the flow's return value.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.stages import evaluate_flow, generate_flow, qa_flow, shard_flow, train_flow
from spotdiff.cli import HOST_PRELOAD, PREFECT_PRELOAD
from spotdiff.config import load_params
from spotdiff.stagehost import ENV as STAGE_HOST_ENV, stage_host


def _qa_artifact(qa_dir: Path) -> None:
    m = json.loads((qa_dir / "metrics.json").read_text())
    rows = [{"check": k, "pass_rate": round(v["pass_rate"], 4)} for k, v in sorted(m["checks"].items())]
    create_table_artifact(rows, key="qa-pass-rates",
                          description=f"QA: {m['accepted']} of {m['samples_in']} groups accepted")


def _eval_artifact(headline: dict) -> None:
    lines = ["| metric | raw backbone | subject feature |", "|---|---|---|"]
    lines += [f"| {k} | {headline['raw'].get(k, '')} | {v} |" for k, v in headline["subject"].items()]
    verdict = "PASS" if headline["criterion_pass"] else "FAIL"
    create_markdown_artifact(f"## Evaluation (criterion {verdict})\n\n" + "\n".join(lines), key="evaluation")


def _release_artifact(tar: Path) -> None:
    digest = Path(f"{tar}.sha256").read_text().split()[0]
    create_markdown_artifact(f"## Release\n\n`{tar}`\n\nsha256 `{digest}`\n\nCheck: `spotdiff verify {tar}`",
                             key="release")


@task(name="publish-release")
def publish_release(params: str, root: str, version: str | None = None, out: str | None = None,
                    dvc_lock: str | None = None) -> str:
    """Release tar of the outputs under ``root`` into ``out`` (default ``<root>/release``); returns its path.
    ``dvc_lock`` ships a dvc.lock only where it describes these outputs (after ``dvc repro``)."""
    import yaml

    from spotdiff import release

    p = load_params(params)
    r = Path(root)
    raw = yaml.safe_load(Path(params).read_text()) or {}
    eval_metrics = r / "eval/metrics.json"
    tar = release.publish(r / "shards", out or r / "release", version=version or p.publish.version,
                          params_path=params, dvc_lock=dvc_lock, qa_metrics=r / "qa/metrics.json",
                          model_dir=r / "train", eval_metrics=eval_metrics if eval_metrics.exists() else None,
                          backends=release.backends_from_params(raw), folder_license=p.publish.folder_license)
    return str(tar)


def effective_params(params: str, overrides: tuple[str, ...] | list[str], root: Path) -> str:
    """``params`` itself, or with overrides a validated, complete copy written to
    ``<root>/params.effective.yaml``: the release ships the params file, so it must be the one every stage
    ran with."""
    if not Path(params).is_file():
        raise FileNotFoundError(f"params file {params} not found (pipeline parameter `params`)")
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
    """generate -> qa -> shard -> train -> evaluate -> publish under ``root`` (paths relative to the working
    directory: the repository in a deployment run), each stage a subflow; ``overrides`` look like
    ``generate.n_groups=50``. Returns ``{"release": tar path, "headline": evaluation headline}``."""
    r = Path(root)
    params = effective_params(params, overrides, r)
    generate_flow(params, (), str(r / "generated"), progress)
    qa_flow(params, (), str(r / "generated"), str(r / "qa"), progress)
    _qa_artifact(r / "qa")
    shard_flow(params, (), str(r / "generated"), str(r / "shards"), str(r / "qa/accepted.txt"))
    train_flow(params, (), str(r / "shards"), str(r / "train"), progress)
    headline = evaluate_flow(params, (), str(r / "shards"), str(r / "train"), str(r / "eval"), progress)
    (r / "eval/headline.json").write_text(json.dumps(headline, indent=2, sort_keys=True) + "\n")
    _eval_artifact(headline)
    # No dvc.lock: these outputs were not made by `dvc repro`, so the repository's lock does not describe them.
    tar = Path(publish_release(params, root))
    _release_artifact(tar)
    return {"release": str(tar), "headline": headline}


def _run(cmd: list[str], logger, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
           "DVC_NO_ANALYTICS": "1", **(env or {})}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
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
    from spotdiff.retrain import decide, latest_release, release_headline

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
    # Stages fork from one warm host instead of each importing torch, transformers and Prefect (spotdiff run's way).
    with stage_host(HOST_PRELOAD + PREFECT_PRELOAD, log=root / ".prefect/stagehost.log") as host:
        _run([*dvc, "repro"], logger, root, env={STAGE_HOST_ENV: host})
    if remotes:
        _run([*dvc, "push"], logger, root, check=False)  # an unreachable store must not block the release
    p = load_params(root / "params.yaml")
    new = json.loads((root / "data/eval/headline.json").read_text())
    folder = root / archive
    last = latest_release(folder)
    decision = decide(new, release_headline(last) if last else None, p.publish.max_regression)
    decision.update(previous_release=str(last) if last else None, git=git, dvc_remote=bool(remotes))
    if decision["publish"]:
        folder.mkdir(parents=True, exist_ok=True)
        version = time.strftime("%Y.%m.%d", time.gmtime())  # a rerun on the same day replaces that day's release
        decision["release"] = publish_release(str(root / "params.yaml"), str(root / "data"), version, str(folder),
                                              str(root / "dvc.lock"))
    rows = "\n".join(f"| {r['metric']} | {r['previous']} | {r['new']} | {r['change']:+.4f} | "
                     f"{'yes' if r['regressed'] else 'no'} |" for r in decision["rows"])
    create_markdown_artifact(
        f"## Retrain decision: {'publish' if decision['publish'] else 'keep the last release'}\n\n"
        f"{decision['reason']} (tolerance {decision['max_regression']}; last release: "
        f"{decision['previous_release'] or 'none'}; new release: {decision.get('release', 'none')}).\n\n"
        "| metric | last release | this run | change | regressed |\n|---|---|---|---|---|\n" + rows,
        key="retrain-decision")
    return decision

"""The whole pipeline as one Prefect flow, and scheduled retraining; deployed by prefect.yaml.

``pipeline_flow`` runs every stage's flow as a subflow, in order, under ``root`` (default ``data``),
and publishes Markdown/table artifacts: QA pass rates, the evaluation headline, the release. It always
recomputes; ``dvc repro`` (what ``spotdiff run`` and ``scheduled_retrain_flow`` use) skips stages
whose inputs did not change and records dvc.lock.

``scheduled_retrain_flow`` pulls the latest code, params and data (git, DVC remote), runs ``dvc repro``,
pushes outputs, and publishes a dated release into ``archive`` only if the evaluation did not regress
beyond ``publish.max_regression`` against the last archived release (``spotdiff.retrain.decide``). The
decision and its numbers are an artifact.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.stages import evaluate_flow, generate_flow, qa_flow, shard_flow, train_flow
from spotdiff.config import load_params


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
def publish_release(params: str, root: str, version: str | None = None, out: str | None = None) -> str:
    import yaml

    from spotdiff import release

    p = load_params(params)
    r = Path(root)
    raw = yaml.safe_load(Path(params).read_text()) if Path(params).exists() else {}
    eval_metrics = r / "eval/metrics.json"
    tar = release.publish(r / "shards", out or r / "release", version=version or p.publish.version,
                          params_path=params, qa_metrics=r / "qa/metrics.json", model_dir=r / "train",
                          eval_metrics=eval_metrics if eval_metrics.exists() else None,
                          backends=release.backends_from_params(raw), folder_license=p.publish.folder_license)
    return str(tar)


@flow(name="pipeline", log_prints=True)
def pipeline_flow(params: str = "params.yaml", overrides: tuple[str, ...] = (), root: str = "data",
                  progress: bool = False) -> dict:
    """generate -> qa -> shard -> train -> evaluate -> publish under ``root``; returns the headline
    metrics and the release path."""
    r = Path(root)
    generate_flow(params, overrides, str(r / "generated"), progress)
    qa_flow(params, overrides, str(r / "generated"), str(r / "qa"), progress)
    _qa_artifact(r / "qa")
    shard_flow(params, overrides, str(r / "generated"), str(r / "shards"), str(r / "qa/accepted.txt"))
    train_flow(params, overrides, str(r / "shards"), str(r / "train"), progress)
    headline = evaluate_flow(params, overrides, str(r / "shards"), str(r / "train"), str(r / "eval"), progress)
    (r / "eval/headline.json").write_text(json.dumps(headline, indent=2, sort_keys=True) + "\n")
    _eval_artifact(headline)
    tar = Path(publish_release(params, root))
    _release_artifact(tar)
    return {"release": str(tar), "headline": headline}


def _run(cmd: list[str], logger, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
           "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    logger.info("%s -> exit %d %s", " ".join(cmd), done.returncode, (done.stdout + done.stderr)[-500:].strip())
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {done.returncode}: {done.stderr[-2000:]}")
    return done


@flow(name="scheduled-retrain", log_prints=True)
def scheduled_retrain_flow(repo: str = ".", archive: str = "releases") -> dict:
    """Pull, ``dvc repro``, push, then publish a dated release into ``archive`` unless evaluation regressed."""
    from spotdiff.retrain import decide, latest_release, release_headline

    logger = get_run_logger()
    os.chdir(repo)
    if Path(".git").exists() and _run(["git", "remote"], logger, check=False).stdout.strip():
        _run(["git", "pull", "--ff-only"], logger)
    else:
        logger.info("git pull skipped: not a git clone with a remote")
    has_remote = bool(_run([sys.executable, "-m", "dvc", "remote", "list"], logger, check=False).stdout.strip())
    if has_remote:
        _run([sys.executable, "-m", "dvc", "pull", "--allow-missing"], logger, check=False)  # cold store: recompute
    _run([sys.executable, "-m", "dvc", "repro"], logger)
    if has_remote:
        _run([sys.executable, "-m", "dvc", "push"], logger, check=False)
    p = load_params("params.yaml")
    new = json.loads(Path("data/eval/headline.json").read_text())
    last = latest_release(archive)
    decision = decide(new, release_headline(last) if last else None, p.publish.max_regression)
    decision["previous_release"] = str(last) if last else None
    if decision["publish"]:
        Path(archive).mkdir(parents=True, exist_ok=True)
        decision["release"] = publish_release("params.yaml", "data", time.strftime("%Y.%m.%d"), archive)
    rows = "\n".join(f"| {r['metric']} | {r['previous']} | {r['new']} | {r['change']:+.4f} | "
                     f"{'yes' if r['regressed'] else 'no'} |" for r in decision["rows"])
    create_markdown_artifact(
        f"## Retrain decision: {'publish' if decision['publish'] else 'keep the last release'}\n\n"
        f"{decision['reason']} (tolerance {decision['max_regression']}).\n\n"
        "| metric | last release | this run | change | regressed |\n|---|---|---|---|---|\n" + rows,
        key="retrain-decision")
    return decision

"""Prefect deployments end to end: a real local server, the process work pool, `prefect deploy` from
prefect.yaml, a worker, and the `pipeline` deployment run on a tiny profile down to a verified release."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.server import local_server
from test_orchestration import tiny_params  # the tiny whole-pipeline profile

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def prefect(*args: str, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    run = subprocess.run([str(BIN / "prefect"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, f"prefect {' '.join(args)}:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
    return run


def test_pipeline_deployment_runs_on_a_process_worker(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    params = tiny_params(tmp_path)
    root = tmp_path / "data"
    with local_server(home=tmp_path / "prefect"):
        env = {**os.environ, "SPOTDIFF_REPO": str(ROOT), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
               "COLUMNS": "300"}  # rich tables: no truncated cells
        env.pop("SPOTDIFF_NO_PREFECT", None)
        prefect("work-pool", "create", "spotdiff-local", "--type", "process", env=env)
        prefect("--no-prompt", "deploy", "--all", env=env)
        prefect("deployment", "run", "pipeline/pipeline", "--param", f"params={params}", "--param", f"root={root}",
                env=env)
        prefect("worker", "start", "--pool", "spotdiff-local", "--run-once", env=env, timeout=600)
        runs = prefect("flow-run", "ls", "--flow-name", "pipeline", env=env).stdout
    assert "COMPLETED" in runs.upper(), runs
    tars = sorted((root / "release").glob("spotdiff10k-*.tar"))
    assert len(tars) == 1
    check = subprocess.run([str(BIN / "spotdiff"), "verify", str(tars[0])], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert (root / "eval/headline.json").is_file() and (root / "train/model.safetensors").is_file()


@pytest.mark.slow  # ~2 min: two full dvc repro runs of the tiny profile
def test_scheduled_retrain_publishes_then_keeps_when_nothing_regresses(tmp_path, monkeypatch):
    """Two retrain runs in a clone on the tiny profile: the first publishes (no previous release), the
    second compares against it, finds no regression and publishes again; decisions come back as JSON."""
    import json

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    (repo / "params.yaml").write_text(tiny_params(tmp_path).read_text())
    code = ("import json, sys; from flows.pipeline import scheduled_retrain_flow; "
            "print('DECISION ' + json.dumps(scheduled_retrain_flow(repo=sys.argv[1], archive='releases')))")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("SPOTDIFF_NO_PREFECT", None)
    decisions = []
    with local_server(home=tmp_path / "prefect"):
        for _ in range(2):
            run = subprocess.run([sys.executable, "-c", code, str(repo)], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=600)
            assert run.returncode == 0, run.stderr[-3000:]
            decisions.append(json.loads(run.stdout.split("DECISION ", 1)[1].splitlines()[0]))
    first, second = decisions
    assert first["publish"] and first["reason"] == "no previous release"
    assert second["publish"] and second["previous_release"] and second["rows"]
    assert not any(r["regressed"] for r in second["rows"])
    assert list((repo / "releases").glob("spotdiff10k-*.tar"))

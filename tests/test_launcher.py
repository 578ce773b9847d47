"""DVC stages run from any shell: every dvc.yaml cmd starts with ``bin/spotdiff``, which finds the installed
CLI whether or not the venv is activated (DVC runs cmd with the caller's PATH; a bare ``spotdiff`` exited
127 from ``.venv/bin/dvc repro`` in a plain shell). The whole tiny pipeline through ``dvc repro`` in a
plain shell is the slow release-identity test in test_orchestration.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from helpers import tiny_params

ROOT = Path(__file__).resolve().parents[1]
PLAIN_PATH = "/usr/bin:/bin"  # a shell where nothing of the venv is on PATH


def plain_env(**extra: str) -> dict[str, str]:
    """The environment of a shell that never activated the venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "SPOTDIFF_BIN", "PYTHONHOME")}
    return {**env, "PATH": PLAIN_PATH, "DVC_NO_ANALYTICS": "1", **extra}


def test_plain_path_has_no_spotdiff():
    """The premise of the tests below: a plain shell cannot find the CLI by name."""
    assert shutil.which("spotdiff", path=PLAIN_PATH) is None


def test_launcher_finds_the_repository_venv_or_says_where_it_looked(tmp_path):
    repo = tmp_path / "repo"
    (repo / "bin").mkdir(parents=True)
    shutil.copy2(ROOT / "bin/spotdiff", repo / "bin/spotdiff")
    missing = subprocess.run(["bin/spotdiff", "--version"], cwd=repo, env=plain_env(), capture_output=True, text=True)
    assert missing.returncode == 127 and missing.stdout == ""
    assert "no spotdiff installation found" in missing.stderr and f"{repo}/.venv/bin" in missing.stderr

    (repo / ".venv").symlink_to(Path(sys.prefix))  # the README installs into <repository>/.venv
    found = subprocess.run([str(repo / "bin/spotdiff"), "--version"], cwd=tmp_path, env=plain_env(),
                           capture_output=True, text=True)
    assert found.returncode == 0 and found.stdout.startswith("spotdiff "), found.stderr

    # an activated venv wins over the repository's (here: one without the CLI, so the launch fails visibly)
    other = tmp_path / "other-venv"
    (other / "bin").mkdir(parents=True)
    (other / "bin/spotdiff").write_text("#!/bin/sh\necho other venv\n")
    (other / "bin/spotdiff").chmod(0o755)
    chosen = subprocess.run(["bin/spotdiff"], cwd=repo, env=plain_env(VIRTUAL_ENV=str(other)), capture_output=True, text=True)
    assert chosen.stdout == "other venv\n"


def test_dvc_repro_runs_a_stage_from_a_shell_without_the_venv(tmp_path):
    """`.venv/bin/dvc repro generate`, PATH without the venv, in a clone: the stage runs (exit 0) and
    writes its output. Before the launcher this was `/bin/bash: spotdiff: command not found`, exit 127."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    (repo / "params.yaml").write_text(yaml.safe_dump(yaml.safe_load(tiny_params(tmp_path, n_groups=4).read_text())))
    (repo / ".venv").symlink_to(Path(sys.prefix))
    run = subprocess.run([sys.executable, "-m", "dvc", "repro", "generate"], cwd=repo, env=plain_env(),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (repo / "data/generated/records.parquet").is_file()
    assert "Running stage 'generate'" in run.stdout

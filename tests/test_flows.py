"""The Prefect flows on one real local server, run as `dvc repro` runs them: CLI subprocesses."""

import os
import subprocess
import sys

import pyarrow.parquet as pq

from flows.server import local_server


def spotdiff(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SPOTDIFF_NO_PREFECT"}
    return subprocess.run([sys.executable, "-m", "spotdiff.cli", *args], env=env, capture_output=True, text=True)


def test_stage_flows_through_cli_on_one_local_server(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    params = tmp_path / "params.yaml"
    params.write_text("generate:\n  n_groups: 4\n  image_size: 64\n  workers: 1\n  sources: {procedural: 1}\n"
                      "shard:\n  contact_sheet_groups: 2\n")
    with local_server(home=tmp_path / "prefect") as url:
        assert url.startswith("http://127.0.0.1:")
        gen = spotdiff("generate", "-q", "-p", str(params), "--out", str(tmp_path / "gen"))
        assert gen.returncode == 0, gen.stderr
        assert "Flow run" in gen.stdout + gen.stderr and "Completed" in gen.stdout + gen.stderr
        assert "4 kept" in gen.stdout
        sh = spotdiff("shard", "-q", "-p", str(params), "--in", str(tmp_path / "gen"), "--out", str(tmp_path / "shards"))
        assert sh.returncode == 0, sh.stderr
    assert "PREFECT_API_URL" not in os.environ
    assert pq.read_table(tmp_path / "shards/index.parquet").num_rows == 4
    check = spotdiff("verify-shards", str(tmp_path / "shards"))
    assert check.returncode == 0 and "4 samples match" in check.stdout


def _tree(root) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_on_dask_and_threads_is_byte_identical_to_the_library(tmp_path, monkeypatch):
    """Chunks as Prefect tasks on a local Dask cluster (2 worker processes) and on the default thread
    runner give the same bytes as the library's own process pool."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    params = tmp_path / "params.yaml"
    params.write_text("generate:\n  n_groups: 12\n  image_size: 64\n  chunk_size: 4\n  workers: 1\n"
                      "  sources: {procedural: 0.7, packaged: 0.3}\n")
    lib = spotdiff("generate", "-q", "--no-prefect", "-p", str(params), "--out", str(tmp_path / "lib"))
    assert lib.returncode == 0, lib.stderr
    with local_server(home=tmp_path / "prefect"):
        for runner in ("dask", "threads"):
            run = spotdiff("generate", "-q", "-p", str(params), "-S", f"orchestrate.task_runner={runner}",
                           "-S", "orchestrate.workers=2", "--out", str(tmp_path / runner))
            assert run.returncode == 0, run.stderr[-3000:]
            assert "12 groups in" in run.stdout
    expected = _tree(tmp_path / "lib")
    assert len([k for k in expected if k.endswith(".tar")]) == 3
    for runner in ("dask", "threads"):
        assert _tree(tmp_path / runner) == expected, runner

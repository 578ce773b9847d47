"""Stage commands as Prefect flow runs (``--prefect``) on one real local server: CLI subprocesses.

Generation on every task runner, byte-identical to the library, is the slow test in test_orchestration."""

import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from flows.server import local_server


def spotdiff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True)


@pytest.mark.server  # ~25 s: a local Prefect server
def test_stage_flows_through_cli_on_one_local_server(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    params = tmp_path / "params.yaml"
    params.write_text("generate:\n  n_groups: 4\n  image_size: 64\n  workers: 1\n  sources: {procedural: 1}\n"
                      "shard:\n  contact_sheet_groups: 2\n")
    with local_server(home=tmp_path / "prefect") as url:
        assert url.startswith("http://127.0.0.1:")
        gen = spotdiff("generate", "-q", "--prefect", "-p", str(params), "--out", str(tmp_path / "gen"))
        assert gen.returncode == 0, gen.stderr
        assert "Flow run" in gen.stdout + gen.stderr and "Completed" in gen.stdout + gen.stderr
        assert "4 kept" in gen.stdout
        qa = spotdiff("qa", "-q", "--prefect", "-p", str(params), "--generated", str(tmp_path / "gen"),
                      "--out", str(tmp_path / "qa"), "--metrics", str(tmp_path / "qa.json"))
        assert qa.returncode == 0, qa.stderr
        sh = spotdiff("shard", "-q", "--prefect", "-p", str(params), "--generated", str(tmp_path / "gen"),
                      "--accepted", str(tmp_path / "qa/accepted.txt"), "--out", str(tmp_path / "shards"))
        assert sh.returncode == 0, sh.stderr
    assert "PREFECT_API_URL" not in os.environ
    accepted = (tmp_path / "qa/accepted.txt").read_text().split()
    assert len(accepted) >= 3 and pq.read_table(tmp_path / "shards/index.parquet").num_rows == len(accepted)
    check = spotdiff("verify-shards", str(tmp_path / "shards"))
    assert check.returncode == 0 and "4 samples match" in check.stdout

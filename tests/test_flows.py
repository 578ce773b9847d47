"""The Prefect flows on one real local server, as `spotdiff run` uses them."""

import pyarrow.parquet as pq

from flows.server import local_server
from spotdiff.cli import main


def test_stage_flows_through_cli_on_one_local_server(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("SPOTDIFF_NO_PREFECT", raising=False)
    params = tmp_path / "params.yaml"
    params.write_text("generate:\n  n_groups: 4\n  image_size: 64\n  workers: 1\n  sources: {procedural: 1}\n"
                      "shard:\n  contact_sheet_groups: 2\n")
    with local_server(home=tmp_path / "prefect") as url:
        assert url.startswith("http://127.0.0.1:")
        assert main(["generate", "-q", "-p", str(params), "--out", str(tmp_path / "gen")]) == 0
        assert main(["shard", "-q", "-p", str(params), "--in", str(tmp_path / "gen"),
                     "--out", str(tmp_path / "shards")]) == 0
    assert pq.read_table(tmp_path / "shards/index.parquet").num_rows == 4
    assert main(["verify-shards", str(tmp_path / "shards")]) == 0

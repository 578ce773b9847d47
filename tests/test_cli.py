import json

from flows.cli import build_parser
from spotdiff.qa.run import write_qa_metrics


def test_every_stage_has_help():
    parser = build_parser()
    for cmd in ("generate", "qa", "shard", "verify-shards", "run"):
        assert parser.parse_args([cmd] if cmd != "verify-shards" else [cmd, "x"]).command == cmd


def test_qa_metrics_flatten_for_dvc(tmp_path):
    full = {"samples_in": 4, "accepted": 3, "rejected": 1,
            "checks": {"mask_cut": {"pass_rate": 0.75}, "decode": {"pass_rate": 1.0}}}
    (tmp_path / "m.json").write_text(json.dumps(full))
    write_qa_metrics(tmp_path / "m.json", tmp_path / "out/qa.json")
    flat = json.loads((tmp_path / "out/qa.json").read_text())
    assert flat == {"samples_in": 4, "accepted": 3, "rejected": 1, "pass_rate": 0.75,
                    "check_pass_rate": {"decode": 1.0, "mask_cut": 0.75}}


def test_a_stage_run_by_hand_says_when_it_replaces_a_pipeline_output(tmp_path, monkeypatch, capsys):
    """Outside `dvc repro` (no DVC_STAGE), writing over an existing default output is announced; under dvc,
    or to another path, it is not."""
    from flows.cli import _warn_on_pipeline_outputs
    from spotdiff.stages import STAGES

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    shard = STAGES["shard"]
    _warn_on_pipeline_outputs(shard, shard.paths())
    assert capsys.readouterr().err == ""  # nothing there yet
    (tmp_path / "data/shards").mkdir(parents=True)
    _warn_on_pipeline_outputs(shard, shard.paths(out=tmp_path / "elsewhere"))
    assert capsys.readouterr().err == ""
    _warn_on_pipeline_outputs(shard, shard.paths())
    assert "replacing data/shards, an output of the DVC pipeline" in capsys.readouterr().err
    monkeypatch.setenv("DVC_STAGE", "shard")
    _warn_on_pipeline_outputs(shard, shard.paths())
    assert capsys.readouterr().err == ""

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

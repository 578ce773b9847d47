import json
from pathlib import Path

from flows.cli import build_parser
from spotdiff.qa.run import write_qa_metrics


def test_every_stage_has_help():
    parser = build_parser()
    for cmd in ("generate", "qa", "shard", "verify-shards", "run"):
        assert parser.parse_args([cmd] if cmd != "verify-shards" else [cmd, "x"]).command == cmd


def test_stage_help_prints_a_percent_sign_once(capsys):
    """Registry text reaches argparse as help (%-formatted: a literal % is doubled there) and as a description
    (not formatted): evaluate's `--help` says "95%", never "95%%" (issue 16)."""
    import pytest

    from spotdiff.stages import STAGES

    assert "95%" in STAGES["evaluate"].summary + "".join(STAGES["evaluate"].about.values())
    for cmd in ([], ["evaluate"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*cmd, "--help"])
        out = capsys.readouterr().out
        assert "95%" in out and "%%" not in out


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


def test_plots_draws_dvc_plot_definitions_as_png(tmp_path, capsys):
    """`spotdiff plots` reads dvc.yaml's plot definitions and writes PNGs (no network needed); a plot whose
    CSV is missing is skipped with a note."""
    from PIL import Image

    from flows.cli import main

    (tmp_path / "losses.csv").write_text("step,total,subject\n0,3.0,2.0\n1,2.0,1.5\n2,1.5,1.0\n")
    (tmp_path / "scores.csv").write_text("kind,metric,feature,value,low,high\nprobe,pose,raw,0.5,0.4,0.6\n"
                                         "probe,pose,subject,0.3,0.2,0.4\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages: {}\nplots:\n  - losses:\n      x: step\n      y:\n        losses.csv: [total, subject]\n"
        "  - scores:\n      template: bar_horizontal\n      x: value\n      y:\n        scores.csv: metric\n"
        "  - gone:\n      x: step\n      y:\n        missing.csv: [total]\n")
    assert main(["plots", "--dvc-yaml", str(tmp_path / "dvc.yaml"), "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr()
    assert "missing.csv not found" in out.err
    for name in ("losses", "scores"):
        with Image.open(tmp_path / "p" / f"{name}.png") as im:
            assert im.format == "PNG" and im.width >= 400
    assert not (tmp_path / "p/gone.png").exists()


def test_segments_draws_the_photo_sheet(tmp_path, capsys):
    """`spotdiff segments` segments photos as generate does and writes the photo | cut-out | outline sheet,
    one line per photo with its backend, score and verdict (issue 15)."""
    from PIL import Image

    from flows.cli import main

    folder = tmp_path / "photos"
    (folder / "teapot").mkdir(parents=True)
    for name in ("00.jpg", "01.jpg"):
        (folder / "teapot" / name).write_bytes(
            (Path(__file__).resolve().parents[1] / "data/photos/dreambench-dev/teapot" / name).read_bytes())
    out = tmp_path / "sheet.png"
    assert main(["segments", "--folder", str(folder), "--out", str(out), "-S", "generate.image_size=96"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[:2] for line in lines[:2]] == [["teapot/00.jpg", "grabcut"], ["teapot/01.jpg", "grabcut"]]
    assert lines[-1].startswith("segments: ") and "photos kept" in lines[-1]
    assert Image.open(out).size[0] > 900

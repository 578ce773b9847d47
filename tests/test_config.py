import pytest

from flows.cli import main
from spotdiff.config import ConfigError, load_params, parse_params

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_repo_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert p.generate.n_groups >= 100
    assert abs(p.shard.split.train + p.shard.split.val + p.shard.split.test - 1) < 1e-9


@pytest.mark.parametrize("raw, needle", [
    ({"generate": {"n_grups": 5}}, "generate.n_grups: unknown key"),
    ({"generate": {"n_groups": "many"}}, "generate.n_groups = 'many'"),
    ({"generate": {"n_groups": -3}}, "greater than or equal to 1"),
    ({"generate": {"image_size": 10}}, "generate.image_size = 10"),
    ({"generate": {"sources": {"procedural": 0}}}, "at least one weight must be > 0"),
    ({"generate": {"sources": {"webcam": 1}}}, "generate.sources.webcam"),
    ({"generate": {"sources": {"folder": 1}}}, "generate.folder is not set"),
    ({"generate": {"segment": "magic"}}, "'alpha', 'grabcut', 'mediapipe' or 'sam'"),
    ({"generate": {"placement": {"scale": [0.9, 0.2]}}}, "generate.placement.scale"),
    ({"shard": {"split": {"train": 0.9, "val": 0.2, "test": 0.1}}}, "must be 1"),
    ({"shard": {"max_samples": 0}}, "shard.max_samples = 0"),
    ({"trian": {}}, "trian: unknown key"),
])
def test_bad_values_name_key_value_and_rule(raw, needle):
    with pytest.raises(ConfigError) as err:
        parse_params(raw, "params.yaml")
    assert needle in str(err.value), str(err.value)
    assert str(err.value).startswith("params.yaml:")


def test_overrides_are_yaml_values(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("generate:\n  n_groups: 7\n")
    p = load_params(path, ["generate.image_size=64", "shard.split.train=0.5", "shard.split.val=0.25",
                           "shard.split.test=0.25"])
    assert (p.generate.n_groups, p.generate.image_size, p.shard.split.val) == (7, 64, 0.25)
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_params(path, ["generate.n_groups"])


def test_not_a_mapping(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_params(path)


def test_cli_reports_config_error_before_work(tmp_path, capsys):
    rc = main(["generate", "-S", "generate.n_groups=0", "--out", str(tmp_path / "g")])
    assert rc == 2
    assert "generate.n_groups = 0" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_unknown_keys_suggest_the_nearest_known_one(tmp_path):
    with pytest.raises(ConfigError, match=r"generate.n_group: unknown key \(value 5\); did you mean generate.n_groups\?"):
        parse_params({"generate": {"n_group": 5}})
    with pytest.raises(ConfigError, match=r"did you mean train.stage2.tokens\?"):
        parse_params({"train": {"stage2": {"tokns": 3}}})
    with pytest.raises(ConfigError, match="unknown key") as err:
        parse_params({"generate": {"zzzz": 1}})
    assert "did you mean" not in str(err.value)


def test_a_missing_params_file_is_an_error_not_the_defaults(tmp_path, capsys):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "missing.yaml")
    assert main(["shard", "-p", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "s")]) == 2
    assert "missing.yaml: params file not found" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_version(capsys):
    from spotdiff import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"spotdiff {__version__}"

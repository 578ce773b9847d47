"""One stage contract: dvc.yaml says what ``spotdiff.stages`` says, code deps are the code each stage
runs, the library never imports orchestration, and no two modules import each other.

A stage's code is its ``run`` module and every module that imports, at module level or inside a
function (a lazy import runs when the stage runs), followed transitively (``tests/code_graph.py``).
``flows/`` is left out of the code deps on purpose: it parses arguments and orchestrates, and what a
stage writes comes from the library.
"""

from __future__ import annotations

import shlex

import pytest
import yaml

from code_graph import LAUNCHER, ROOT, all_modules, code_closure, compress, cycles, dvc_stages_yaml, imports, module_file
from spotdiff.stages import PIPELINE, STAGES, paths_under

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
ORCHESTRATION = {"prefect", "prefect_dask", "dask", "distributed", "argparse", "flows"}


def _outs(entries: list) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries]


def test_dvc_yaml_lists_exactly_the_registry_stages_in_order():
    assert list(DVC) == list(PIPELINE) == [n for n, s in STAGES.items() if s.in_pipeline]


def test_opt_in_stages_are_left_out_of_dvc_yaml_and_their_outputs_read_by_no_pipeline_stage():
    opt_in = [s for s in STAGES.values() if not s.in_pipeline]
    assert [s.name for s in opt_in] == ["pretrain"]
    read = {p for s in PIPELINE.values() for p in s.inputs.values()}
    for stage in opt_in:
        assert stage.name not in DVC
        assert not any(o == r or r.startswith(o + "/") for o in stage.outputs.values() for r in read)


@pytest.mark.parametrize("name", list(PIPELINE))
def test_dvc_stage_runs_the_registry_command_with_its_paths_and_params(name):
    stage, dvc = STAGES[name], DVC[name]
    argv = shlex.split(dvc["cmd"])
    assert argv[:2] == [LAUNCHER, name]
    flags = dict(zip(argv[2::2], argv[3::2]))
    assert flags == {"--" + r.replace("_", "-"): p for r, p in {**stage.inputs, **stage.outputs}.items()}
    assert dvc["params"] == list(stage.params)
    assert _outs(dvc.get("outs", [])) == [p for r, p in stage.outputs.items() if r not in stage.metrics]
    assert _outs(dvc.get("metrics", [])) == [stage.outputs[r] for r in stage.metrics]
    persisted = [next(iter(o)) for o in dvc["outs"] if isinstance(o, dict) and next(iter(o.values())).get("persist")]
    assert persisted == [stage.outputs[r] for r in stage.persist]
    data_deps = [d for d in dvc["deps"] if not d.startswith("spotdiff")]
    assert data_deps == list(stage.inputs.values()) + [f"${{{key}}}" for key in stage.param_paths]


@pytest.mark.parametrize("name", list(PIPELINE))
def test_stage_code_deps_are_exactly_the_code_it_runs(name):
    """A missing dep would keep stale outputs after an edit; an extra one reruns the stage for nothing."""
    deps = [d for d in DVC[name]["deps"] if d.startswith("spotdiff")]
    closure = code_closure(STAGES[name].entry)
    assert deps == compress(closure), f"dvc.yaml stage {name!r}: code deps differ from what it imports " \
        "(`python tests/code_graph.py` rewrites them)"


def test_dvc_yaml_is_what_the_registry_writes():
    text = (ROOT / "dvc.yaml").read_text()
    assert dvc_stages_yaml() in text, "dvc.yaml's stages differ from the registry: run `python tests/code_graph.py`"


def test_every_file_a_stage_reads_is_a_dep():
    """Hermetic inputs: what a stage reads outside the repository's code is an input of the registry, so a
    dvc.yaml dep: the real photos of evaluate, the environment lock and params file whose content publish
    records. No input lies outside the repository."""
    assert "data/photos/dreambench-dev" in DVC["evaluate"]["deps"]
    assert {"params.yaml", "requirements.lock"} <= set(DVC["publish"]["deps"])
    for stage in STAGES.values():
        for path in stage.inputs.values():
            assert not path.startswith(("/", "..")), f"{stage.name} reads {path}, outside the repository"


def test_the_closure_follows_lazy_imports():
    train = code_closure("spotdiff.train.run")
    assert "spotdiff/model/stage2.py" in train  # imported inside train's stage-2 branch
    assert not any(p.startswith("spotdiff/generate/") for p in train)  # the generator is not train's code
    assert not any(p.startswith("spotdiff/generate/sources") for p in code_closure("spotdiff.qa.run"))


def test_the_library_never_imports_orchestration():
    offenders = {m: sorted(imports(m) & ORCHESTRATION) for m in all_modules("spotdiff")}
    assert not {m: v for m, v in offenders.items() if v}


def test_no_import_cycles():
    assert cycles(all_modules("spotdiff") + all_modules("flows")) == []


def test_cycle_finder_finds_a_planted_cycle(tmp_path, monkeypatch):
    """The cycle test can fail: two modules that import each other are reported."""
    import code_graph

    pkg = tmp_path / "spotdiff"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from spotdiff.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from spotdiff import a\n")
    monkeypatch.setattr(code_graph, "ROOT", tmp_path)
    code_graph.imports.cache_clear()
    try:
        assert code_graph.cycles(["spotdiff.a", "spotdiff.b"]) == [["spotdiff.a", "spotdiff.b"]]
    finally:
        code_graph.imports.cache_clear()


def test_every_stage_entry_is_a_module_with_run():
    for stage in STAGES.values():
        assert module_file(stage.entry) is not None, stage.entry
        assert callable(stage.load())


def test_paths_under_moves_stage_outputs_only():
    p = paths_under(STAGES["publish"], "exp")
    assert str(p["shards"]) == "exp/shards" and str(p["out"]) == "exp/release"
    assert str(p["params_file"]) == "params.yaml" and str(p["requirements"]) == "requirements.lock"
    assert str(paths_under(STAGES["qa"], "exp")["metrics"]) == "exp/metrics/qa.json"
    assert str(paths_under(STAGES["shard"], "exp")["accepted"]) == "exp/qa/accepted.txt"
    assert str(paths_under(STAGES["evaluate"], "exp")["photos"]) == "data/photos/dreambench-dev"  # a source, kept
    with pytest.raises(ValueError, match="no path role"):
        STAGES["qa"].paths(shards="x")


def test_a_folder_a_param_names_is_a_dep_dvc_resolves():
    """generate reads the user's photo and background folders wherever params.yaml points: DVC's own loader
    must see them as deps (a photo added there then reruns generate), and params.yaml must name folders,
    since DVC stops with "unexpected error" on a null one; ``spotdiff run`` says which key instead."""
    import yaml
    from dvc.repo import Repo

    from spotdiff.config import ConfigError
    from spotdiff.stages import check_param_paths

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    check_param_paths(raw)
    want = [raw["generate"]["folder"], raw["generate"]["background_folder"]]
    assert all((ROOT / w).is_dir() for w in want)
    with Repo(str(ROOT)) as repo:
        (stage,) = repo.stage.collect("generate")
        assert [d.def_path for d in stage.deps][:2] == want
    raw["generate"]["folder"] = None
    with pytest.raises(ConfigError, match=r"generate.folder = None.*dep of generate"):
        check_param_paths(raw)

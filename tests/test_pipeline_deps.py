"""dvc.yaml's code dependencies match the code each stage runs, so `dvc repro` never keeps stale outputs.

A stage's code is the library module its command calls (``ENTRY``) and every ``spotdiff`` module that
module imports, at module level or inside a function (a lazy import runs when the stage runs), followed
transitively. A package's lazy ``__getattr__`` is not followed: it runs only when that attribute is
used, and the module that uses it imports what it needs. ``spotdiff/cli.py`` and ``flows/`` are left
out on purpose: they parse arguments and orchestrate, and what a stage writes comes from the library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENTRY = {
    "generate": "spotdiff.generate",
    "qa": "spotdiff.qa.run",
    "shard": "spotdiff.shards",
    "train": "spotdiff.train",
    "evaluate": "spotdiff.evaluate.run",
    "publish": "spotdiff.release",
}
"""The library module each dvc stage's command runs (see ``spotdiff.cli``)."""


def module_file(name: str) -> Path | None:
    """The source file of module ``name`` under the repo, or None when it is no module (a class, say)."""
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path) -> set[str]:
    """Dotted names ``path`` imports from ``spotdiff`` (``from a import b`` gives ``a`` and ``a.b``); the
    library imports absolutely, so a relative import fails here rather than being missed."""
    tree = ast.parse(path.read_text(), filename=str(path))
    lazy_hooks = {id(node) for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef) and fn.name == "__getattr__"
                  for node in ast.walk(fn)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in lazy_hooks:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}:{node.lineno}: relative import; spotdiff imports absolutely"
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n.split(".")[0] == "spotdiff"}


def code_closure(entry: str) -> set[str]:
    """Repo-relative paths of every ``spotdiff`` source file that running ``entry`` can import."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
        todo += imported_names(path)
    return {p.relative_to(ROOT).as_posix() for p in seen}


def covered_by(path: str, deps: list[str]) -> bool:
    """Whether ``path`` is one of ``deps`` or lies in a folder among them."""
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def code_deps(stage: str) -> list[str]:
    return [d for d in STAGES[stage]["deps"] if d.startswith("spotdiff")]


def test_every_stage_has_an_entry_module():
    assert set(STAGES) == set(ENTRY)
    for stage, entry in ENTRY.items():
        assert module_file(entry) is not None, f"{stage}: {entry} is not a module of this repo"


def test_the_closure_follows_lazy_imports_but_not_lazy_package_hooks():
    train = code_closure("spotdiff.train")
    assert "spotdiff/model/stage2.py" in train  # imported inside train's stage-2 branch
    assert "spotdiff/factors.py" in train
    # spotdiff.config imports spotdiff.qa.config, whose package's __getattr__ would pull in the QA stage
    assert "spotdiff/qa/config.py" in train and "spotdiff/qa/run.py" not in train


@pytest.mark.parametrize("stage", sorted(ENTRY))
def test_stage_code_deps_are_exactly_the_code_it_runs(stage):
    closure, deps = code_closure(ENTRY[stage]), code_deps(stage)
    missing = sorted(p for p in closure if not covered_by(p, deps))
    assert not missing, f"dvc.yaml stage {stage!r} runs code it does not depend on (edits would not rerun it): {missing}"
    # publish also depends on the code every upstream stage runs (see the last test)
    upstream = {d for name in STAGES if stage == "publish" != name for d in code_deps(name)}
    unused = [d for d in deps if not any(covered_by(p, [d]) for p in closure) and d not in upstream]
    assert not unused, f"dvc.yaml stage {stage!r} depends on code it never imports (needless reruns): {unused}"


def test_publish_depends_on_everything_the_lock_it_packs_records():
    """The release ships dvc.lock (less publish's own entry) and params.yaml as is: any change to either must
    rebuild the release, or the release on disk differs from the one a fresh clone builds."""
    publish = STAGES["publish"]
    deps = set(publish["deps"])
    assert "params.yaml" in deps  # the whole file: every section and comment is in the release
    for name, stage in STAGES.items():
        if name == "publish":
            continue
        outs = {next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", []) + stage.get("metrics", [])}
        lacking = sorted(d for d in set(stage["deps"]) | outs if not covered_by(d, list(deps)))
        assert not lacking, f"publish lacks {name}'s deps or outs {lacking}"

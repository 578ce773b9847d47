"""requirements.lock (the locked environment) agrees with pyproject.toml's dependency ranges, pins every
package with hashes, and the environment the tests run in is the locked one."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every ``name==version`` entry in requirements.lock."""
    out: dict[str, tuple[str, list[str]]] = {}
    text = (ROOT / "requirements.lock").read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9_.-]+)==([^\s\\;]+)", block)
        if m:
            out[canonicalize_name(m.group(1))] = (m.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return out


def declared() -> list[str]:
    """pyproject.toml's dependencies and every extra's (the lock is compiled with ``--all-extras``)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *(d for extra in project.get("optional-dependencies", {}).values() for d in extra)]


def test_every_dependency_is_locked_within_its_range_with_hashes():
    deps = declared()
    lock = locked()
    assert len(lock) > 100
    for dep in map(Requirement, deps):
        name = canonicalize_name(dep.name)
        assert name in lock, f"{dep.name} is in pyproject.toml but not in requirements.lock: regenerate the lock"
        version, hashes = lock[name]
        assert dep.specifier.contains(version, prereleases=True), f"{dep.name}=={version} is outside {dep.specifier}"
    assert all(hashes for _, hashes in lock.values()), "every locked package carries its sha256"


def test_this_environment_is_the_locked_one():
    """The packages pyproject.toml names (its extras too) are installed at their locked versions (the README installs the lock)."""
    lock = locked()
    deps = declared()
    wrong = {}
    for dep in map(Requirement, deps):
        installed = metadata.version(dep.name)
        if installed.split("+")[0] != lock[canonicalize_name(dep.name)][0]:
            wrong[dep.name] = (installed, lock[canonicalize_name(dep.name)][0])
    assert not wrong, f"installed vs locked: {wrong}"

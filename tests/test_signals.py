"""Ctrl-C and SIGTERM: a command stops every process it started within seconds, prints one line saying what
was interrupted and how to resume, exits 130 / 143, leaves no temporary file, and a rerun gives the same
bytes as a run that was never interrupted.

Each command runs as ``python -m flows`` in a process group of its own, as a shell runs a job: SIGINT goes to
the whole group (what Ctrl-C in a terminal does), SIGTERM to the process alone (what ``kill`` does).
Descendants are listed just before the signal; none may be left afterwards. The default run covers SIGINT to
generate's group and SIGTERM to train (~45 s); ``-m slow`` adds the other two, generate as a Prefect flow
run and a whole `spotdiff run`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from helpers import synthetic_groups, tiny_params, train_params

ROOT = Path(__file__).resolve().parents[1]
RESUME = {"generate": "rerun the same command: the chunks it finished are kept (<out>.partial/) and the rest are built",
          "train": "rerun the same command: train resumes its last checkpoint (--checkpoint)",
          "run": "rerun `spotdiff run`: finished stages are skipped; generate keeps its finished chunks, train resumes its checkpoint"}


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def interrupt(args: list[str], sig: int, ready, cwd: Path = ROOT, timeout: float = 240,
              started: dict | None = None) -> tuple[int, str, list, str]:
    """Start ``python -m flows *args`` in its own process group, wait until ``ready()``, send ``sig`` (SIGINT to
    the group, SIGTERM to the process), and return (exit code, stderr, descendants seen before the signal,
    their command lines) once it exited. Fails if it finished before ``ready()`` or took 30 s to stop.
    ``started["pid"]`` is set to the process id, for ``ready``."""
    proc = subprocess.Popen([sys.executable, "-m", "flows", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(cwd)})
    if started is not None:
        started["pid"] = proc.pid
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
            assert time.monotonic() < deadline, "never got ready"
            time.sleep(0.05)
        kids = psutil.Process(proc.pid).children(recursive=True)
        names = " | ".join(" ".join(k.cmdline()) for k in _alive(kids))
        t0 = time.monotonic()
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - t0 < 30, "took more than 30 s to stop"
        time.sleep(0.3)
        return proc.returncode, err, kids, names
    finally:
        if proc.poll() is None:  # never leave it behind, whatever failed above
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def check_stopped(rc: int, err: str, kids: list, sig: int, command: str, during: str = "") -> None:
    assert rc == 128 + sig, err
    name = signal.Signals(sig).name
    assert err.strip().splitlines()[-1] == f"spotdiff {command}: interrupted by {name}{during}; {RESUME[command]}", err
    assert "Traceback" not in err, err
    assert not _alive(kids), f"left running: {_alive(kids)}"


# ----------------------------------------------------------------------------------------------- generate


@pytest.fixture(scope="module")
def gen_params(tmp_path_factory) -> Path:
    """96 groups in 24 chunks on 2 spawned workers: the pool, its workers and the resource tracker run."""
    return tiny_params(tmp_path_factory.mktemp("gen"), workers=2, chunk_size=4, n_groups=96)


def _building(pid: int) -> bool:
    """Whether the pool's two workers run and are past their start-up (~1 s of CPU each) into building groups.
    Not "a chunk tar exists": the parent writes the first one only after importing torch (for webdataset's
    writer), by when the workers of a profile this small have built every group."""
    try:
        workers = [k for k in psutil.Process(pid).children()
                   if k.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(k.cmdline())]
        return len(workers) == 2 and all(sum(w.cpu_times()[:2]) > 1.3 for w in workers)
    except psutil.Error:
        return False


@pytest.fixture(scope="module")
def gen_reference(gen_params, tmp_path_factory) -> dict[str, bytes]:
    from spotdiff.config import load_params
    from spotdiff.generate.run import generate

    out = tmp_path_factory.mktemp("gen-ref") / "out"
    generate(load_params(gen_params).generate, out, progress=False)
    return _tree(out)


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, id="SIGINT-group"),
                                 pytest.param(signal.SIGTERM, id="SIGTERM", marks=pytest.mark.slow)])
def test_interrupted_generate_stops_its_pool_and_a_rerun_gives_the_same_bytes(sig, gen_params, gen_reference, tmp_path):
    from spotdiff.config import load_params
    from spotdiff.generate.run import generate

    out = tmp_path / "gen"
    pid = {}
    rc, err, kids, names = interrupt(["generate", "-q", "-p", str(gen_params), "--out", str(out)], sig,
                                     ready=lambda: _building(pid["pid"]), started=pid)
    assert names.count("spawn_main(") == 2 and "resource_tracker" in names, names
    check_stopped(rc, err, kids, sig, "generate")
    assert not (out / "stats.json").exists(), "interrupted mid-run"
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    generate(load_params(gen_params).generate, out, progress=False)  # the rerun
    assert _tree(out) == gen_reference


@pytest.mark.slow  # ~40 s: a Prefect server of its own, then the flow run
@pytest.mark.server
def test_interrupted_prefect_generate_stops_its_server_pool_and_task_threads(gen_params, tmp_path, monkeypatch):
    """`--prefect` on the thread runner: chunks are tasks waiting on the library's pool. Stopping the pool must
    also end the task threads waiting on it (else the task runner's exit waits forever), and the command's
    Prefect server must go too."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    out = tmp_path / "gen"
    pid = {}
    rc, err, kids, names = interrupt(["generate", "-q", "--prefect", "-p", str(gen_params), "--out", str(out)],
                                     signal.SIGINT, ready=lambda: _building(pid["pid"]), started=pid, cwd=ROOT)
    assert "prefect server start" in names and names.count("spawn_main(") == 2, names
    check_stopped(rc, err, kids, signal.SIGINT, "generate")


# -------------------------------------------------------------------------------------------------- train


@pytest.fixture(scope="module")
def train_setup(tmp_path_factory):
    """Tiny shards and params whose training checkpoints every 5 of its 240 steps."""
    from spotdiff.config import ShardConfig
    from spotdiff.shard.run import write_shards

    tmp = tmp_path_factory.mktemp("train")
    write_shards(synthetic_groups(60), tmp / "shards", ShardConfig(max_samples=16), contact_sheet=False)
    # early stopping off: it stops these tiny runs after about 36 of the 240 steps, before a signal may land
    params, p = train_params(tmp, epochs=40, checkpoint_every=5, early_stopping={"patience": 0})
    return tmp, params, p


def _train(shards: Path, out: Path, params, ckpt: Path):
    from spotdiff.train.run import train

    return train(shards, out, params, checkpoint_path=ckpt)


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, id="SIGINT-group", marks=pytest.mark.slow),
                                 pytest.param(signal.SIGTERM, id="SIGTERM")])
def test_interrupted_train_keeps_its_checkpoint_and_resumes_to_the_same_model(sig, train_setup, tmp_path):
    tmp, params_file, params = train_setup
    ref = tmp / "reference"
    if not ref.exists():
        _train(tmp / "shards", ref, params, ref / "ckpt.safetensors")
    out, ckpt = tmp_path / "train", tmp_path / "ckpt/train.safetensors"
    rc, err, kids, names = interrupt(["train", "-q", "-p", str(params_file), "--shards", str(tmp / "shards"), "--out", str(out),
                               "--checkpoint", str(ckpt)], sig, ready=ckpt.exists)
    check_stopped(rc, err, kids, sig, "train")
    assert not out.exists(), "interrupted before the end"
    assert not [p for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")]
    result = _train(tmp / "shards", out, params, ckpt)
    assert result.resumed_from > 0
    for name in ("model.safetensors", "losses.csv", "val.csv"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


# ----------------------------------------------------------------------------------------- the whole run


def _copy_repo(dest: Path) -> Path:
    """This checkout's tracked and untracked (not ignored) files in a fresh git repository at ``dest``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file() and not src.is_symlink():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


def _reset_outputs(repo: Path) -> None:
    """Back to a fresh clone: no outputs, no dvc.lock changes, no run cache."""
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=repo, check=True)
    subprocess.run(["git", "clean", "-qfdx"], cwd=repo, check=True)


@pytest.mark.slow  # ~3 min on 2 cores: the tiny pipeline twice and an interrupted run
@pytest.mark.server
def test_interrupted_spotdiff_run_leaves_no_process_and_reruns_to_the_same_release(tmp_path, monkeypatch):
    """Ctrl-C to `spotdiff run` during train: the Prefect server, dvc, the train stage all stop; the rerun skips
    the finished stages and publishes the release an uninterrupted run publishes."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    repo = _copy_repo(tmp_path / "repo")
    tiny_params(tmp_path)
    shutil.copy(tmp_path / "params.yaml", repo / "params.yaml")
    subprocess.run(["git", "commit", "-qam", "tiny"], cwd=repo, check=True)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    tar = repo / "data/release/spotdiff10k-0.1.0.tar"

    done = subprocess.run([sys.executable, "-m", "flows", "run"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = tar.read_bytes()
    _reset_outputs(repo)

    started = {}

    def in_train() -> bool:  # the shards are written: dvc has moved on to train
        if (repo / "data/shards/SHA256SUMS").exists():
            started.setdefault("t", time.monotonic())
        return "t" in started and time.monotonic() - started["t"] > 2

    rc, err, kids, names = interrupt(["run"], signal.SIGINT, ready=in_train, cwd=repo, timeout=600)
    assert "prefect" in names and "dvc" in names, names
    check_stopped(rc, err, kids, signal.SIGINT, "run", during=" during `dvc repro --single-item train`")
    rerun = subprocess.run([sys.executable, "-m", "flows", "run"], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Stage 'shard' didn't change, skipping" in rerun.stdout + rerun.stderr
    assert tar.read_bytes() == reference
    # With nothing left to build, `spotdiff run` says so from `dvc status` without starting a Prefect server.
    noop = subprocess.run([sys.executable, "-m", "flows", "run"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300)
    assert noop.returncode == 0, noop.stderr[-3000:]
    assert "up to date" in noop.stdout and "prefect: API" not in noop.stdout, noop.stdout[-2000:]
    assert f"release {tar.relative_to(repo)}" in noop.stdout

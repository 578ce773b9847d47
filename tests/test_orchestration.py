"""Prefect orchestration: task runners from params, transient-only retries, the pipeline flow's params
handling, scheduled retraining's git step, generation on every runner byte-identical to the library, and
the `pipeline` deployment from prefect.yaml run by a process worker on a real local server."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.server import local_server
from helpers import tiny_params
from spotdiff.config import ConfigError, OrchestrateConfig, load_params

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOG = logging.getLogger("test_orchestration")


def test_task_runner_follows_params():
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.runners import task_runner

    threads = task_runner(OrchestrateConfig(task_runner="threads", workers=3))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    procs = task_runner(OrchestrateConfig(task_runner="processes", workers=3))
    assert isinstance(procs, ProcessPoolTaskRunner) and procs._max_workers == 3
    local = task_runner(OrchestrateConfig(task_runner="dask", workers=3))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs["n_workers"] == 3 and local.cluster_kwargs["threads_per_worker"] == 1
    remote = task_runner(OrchestrateConfig(task_runner="dask", dask_address="tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://10.0.0.5:8786"
    with pytest.raises(ConfigError, match="orchestrate.task_runner"):
        load_params(ROOT / "params.yaml", ["orchestrate.task_runner=ray"])
    # worker resources (GPU workers) need a cluster whose workers offer them: never the local ones
    for bad in (["orchestrate.chunk_resources={GPU: 1}"],
                ["orchestrate.task_runner=dask", "orchestrate.chunk_resources={GPU: 1}"],
                ["orchestrate.task_runner=dask", "orchestrate.dask_address=tcp://h:8786", "orchestrate.chunk_resources={GPU: 0}"]):
        with pytest.raises(ConfigError, match="chunk_resources"):
            load_params(ROOT / "params.yaml", bad)
    ok = load_params(ROOT / "params.yaml", ["orchestrate.task_runner=dask", "orchestrate.dask_address=tcp://h:8786",
                                            "orchestrate.chunk_resources={GPU: 1}"])
    assert ok.orchestrate.chunk_resources == {"GPU": 1.0}


def test_retries_only_transient_errors():
    """The condition sees the state Prefect's engine builds for a raised exception: Failed(data=exc)."""
    from prefect.states import Completed, Failed

    from flows.runners import retry_transient

    def retried(exc: BaseException) -> bool:
        return retry_transient(None, None, Failed(data=exc, message=repr(exc)))

    assert retried(OSError("disk full")) and retried(BrokenPipeError()) and retried(EOFError())
    assert retried(TimeoutError()) and retried(ConnectionResetError())
    assert not retried(ConfigError("generate.n_groups: bad")) and not retried(ValueError("bad value"))
    assert not retried(KeyError("bug"))
    assert not retry_transient(None, None, Completed(data=1))


def test_pipeline_params_with_overrides_are_written_out_for_the_release(tmp_path):
    from flows.pipeline import effective_params

    params = tmp_path / "params.yaml"
    params.write_text("generate:\n  n_groups: 12\n")
    assert effective_params(str(params), (), tmp_path / "data") == str(params)
    written = effective_params(str(params), ("generate.image_size=64", "publish.version=2.0.0"), tmp_path / "data")
    assert Path(written) == tmp_path / "data/params.effective.yaml"
    assert load_params(written) == load_params(params, ["generate.image_size=64", "publish.version=2.0.0"])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        effective_params(str(tmp_path / "missing.yaml"), (), tmp_path / "data")
    with pytest.raises(ConfigError, match="n_groups"):
        effective_params(str(params), ("generate.n_groups=-1",), tmp_path / "data")


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_retrain_git_step_pulls_only_from_a_tracked_upstream(tmp_path):
    from flows.pipeline import _git_pull

    plain = tmp_path / "plain"
    plain.mkdir()
    assert _git_pull(plain, LOG) == "skipped: not a git repository"
    origin = tmp_path / "origin"
    origin.mkdir()
    git("init", "-q", "-b", "main", cwd=origin)
    (origin / "a.txt").write_text("1\n")
    git("add", "a.txt", cwd=origin)
    git("commit", "-q", "-m", "one", cwd=origin)
    assert _git_pull(origin, LOG) == "skipped: no git remote"
    git("clone", "-q", str(origin), str(tmp_path / "clone"), cwd=tmp_path)
    clone = tmp_path / "clone"
    (origin / "a.txt").write_text("2\n")
    git("commit", "-q", "-am", "two", cwd=origin)
    assert _git_pull(clone, LOG) == "pulled"
    assert (clone / "a.txt").read_text() == "2\n"
    git("checkout", "-q", "-b", "local-only", cwd=clone)
    assert _git_pull(clone, LOG) == "skipped: the current branch tracks no upstream branch"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """One real local Prefect server for this module (an already-set PREFECT_API_URL is used as is)."""
    with local_server(home=tmp_path_factory.mktemp("prefect")) as url:
        yield url


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.server
@pytest.mark.slow  # ~60 s on 2 cores: a server (~18 s), then spawned process-pool and Dask workers
def test_generation_on_every_runner_is_byte_identical_to_the_library(tmp_path, api):
    """Chunks as Prefect tasks on threads, a process pool and a local Dask cluster (2 worker processes
    each) give the same chunk tars, Parquet files and stats as the library's ``generate()``."""
    from flows.stages import stage_flow
    from spotdiff.generate.run import generate

    params = tmp_path / "params.yaml"
    params.write_text("generate:\n  n_groups: 12\n  image_size: 64\n  chunk_size: 4\n  workers: 1\n"
                      "  sources: {procedural: 1}\n")
    generate(load_params(params).generate, tmp_path / "lib", progress=False)
    expected = _tree(tmp_path / "lib")
    assert len([k for k in expected if k.endswith(".tar")]) == 3
    assert {"records.parquet", "rejects.parquet", "stats.json"} <= set(expected)
    for runner in ("threads", "processes", "dask"):
        stats = stage_flow("generate", str(params), (f"orchestrate.task_runner={runner}", "orchestrate.workers=2"),
                           {"out": tmp_path / runner}, progress=False)
        assert stats["groups_in"] == 12 and stats["kept"] + stats["rejected"] == 12, runner
        assert _tree(tmp_path / runner) == expected, runner


def prefect_cli(*args: str, env: dict, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    run = subprocess.run([str(BIN / "prefect"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, f"prefect {' '.join(args)}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


@pytest.mark.server
@pytest.mark.slow  # ~80 s on 2 cores: server (~18 s), deploy, a worker, the whole pipeline in a flow run
def test_pipeline_deployment_from_prefect_yaml_runs_on_a_process_worker(tmp_path, api):
    """README's commands: create the pool, `prefect deploy --all` from the repository, trigger `pipeline`
    with a tiny params file and an output root in tmp, `prefect worker start --run-once` from elsewhere and
    without SPOTDIFF_REPO (the deployment carries the repository path). Checks the run, the outputs, the
    release and the artifacts."""
    from prefect import get_client
    from prefect.artifacts import Artifact
    from prefect.deployments import run_deployment

    from spotdiff.publish import verify as release
    from spotdiff.publish.retrain import release_headline

    params = tiny_params(tmp_path)
    root = tmp_path / "data"
    env = {**os.environ, "PREFECT_API_URL": api, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    prefect_cli("work-pool", "create", "spotdiff-local", "--type", "process", env=env)
    prefect_cli("--no-prompt", "deploy", "--all", env={**env, "SPOTDIFF_REPO": str(ROOT)})
    run = run_deployment("pipeline/pipeline", parameters={"params": str(params), "root": str(root),
                                                          "overrides": ["publish.version=0.0.1"]}, timeout=0)
    worker_env = {k: v for k, v in env.items() if k != "SPOTDIFF_REPO"}
    prefect_cli("worker", "start", "--pool", "spotdiff-local", "--run-once", env=worker_env, cwd=tmp_path,
                timeout=600)
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    assert state is not None and state.is_completed(), state

    tar = root / "release/spotdiff10k-0.0.1.tar"
    assert release.verify(tar).samples > 0
    assert (root / "train/model.safetensors").is_file() and (root / "qa/metrics.json").is_file()
    headline = yaml.safe_load((root / "eval/headline.json").read_text())
    assert release_headline(tar)["subject"] == headline["subject"]  # what retraining compares against

    progress = Artifact.get("generate-progress")
    assert progress is not None and progress.type == "progress" and float(progress.data) == 100.0
    qa = Artifact.get("qa-pass-rates")
    assert qa is not None and qa.type == "table" and "pass_rate" in str(qa.data)
    ev = Artifact.get("evaluation")
    assert ev is not None and ev.type == "markdown" and "retrieval_cross_top1" in ev.data
    rel = Artifact.get("release")
    digest = Path(f"{tar}.sha256").read_text().split()[0]
    assert rel is not None and str(tar) in rel.data and digest in rel.data


@pytest.mark.server
@pytest.mark.slow  # ~2 min: two full dvc repro runs of the tiny profile
def test_scheduled_retrain_publishes_then_keeps_when_nothing_regresses(tmp_path, monkeypatch):
    """Two retrain runs in a clone on the tiny profile: the first publishes (no previous release), the
    second compares against it, finds no regression and publishes again; decisions come back as JSON."""
    import json

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    (repo / "params.yaml").write_text(tiny_params(tmp_path).read_text())
    code = ("import json, sys; from flows.pipeline import scheduled_retrain_flow; "
            "print('DECISION ' + json.dumps(scheduled_retrain_flow(repo=sys.argv[1], archive='releases')))")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    decisions = []
    with local_server(home=tmp_path / "prefect"):
        for _ in range(2):
            run = subprocess.run([sys.executable, "-c", code, str(repo)], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=600)
            assert run.returncode == 0, run.stderr[-3000:]
            decisions.append(json.loads(run.stdout.split("DECISION ", 1)[1].splitlines()[0]))
    first, second = decisions
    assert first["publish"] and first["reason"] == "no previous release"
    assert second["publish"] and second["previous_release"] and second["rows"]
    assert not any(r["regressed"] for r in second["rows"])
    assert list((repo / "releases").glob("spotdiff10k-*.tar"))


@pytest.mark.server
@pytest.mark.slow  # ~2-3 min on 2 cores: `dvc repro` of the tiny profile in a clone, then the pipeline flow
def test_pipeline_deployment_and_dvc_repro_build_the_same_release(tmp_path, monkeypatch):
    """One release identity (issue 14): for the same data, code and params, the Prefect `pipeline` flow (with
    an override that leaves a value as it was, so its params file is its own re-dump) and `dvc repro` in a
    fresh clone write byte-identical releases; neither holds a local path. Both run this checkout's code."""
    import hashlib

    from flows.pipeline import pipeline_flow
    from helpers import local_paths_in, member_texts
    from spotdiff.publish.compare import compare

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    raw = yaml.safe_load(tiny_params(tmp_path).read_text())
    raw["train"]["cache_dir"] = ".cache/spotdiff/features"  # the default: relative to the repository
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    # a plain shell (issue 16): the venv is not on PATH; the stages' bin/spotdiff finds <clone>/.venv
    (repo / ".venv").symlink_to(Path(sys.prefix))
    env = {**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}, "PATH": "/usr/bin:/bin", "DVC_NO_ANALYTICS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    run = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    by_dvc = repo / "data/release/spotdiff10k-0.1.0.tar"

    monkeypatch.chdir(repo)  # where a deployment runs: the repository (source inputs are read from there)
    with local_server(home=tmp_path / "prefect"):
        out = pipeline_flow(params="params.yaml", overrides=(f"shard.max_samples={raw['shard']['max_samples']}",),
                            root=str(tmp_path / "flow"))
    by_flow = Path(out["release"])
    assert (tmp_path / "flow/params.effective.yaml").read_bytes() != (repo / "params.yaml").read_bytes()

    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (by_dvc, by_flow)]
    LOG.info("release sha256: dvc repro %s, pipeline flow %s", *digests)
    assert digests[0] == digests[1], compare(by_dvc, by_flow).report()
    for name, tar in (("dvc", by_dvc), ("flow", by_flow)):
        assert not local_paths_in(member_texts(tar, tmp_path / f"x-{name}"), tmp_path, ROOT), name


def _wait(predicate, timeout: float, step: float = 0.5) -> float | None:
    """Seconds until ``predicate()`` held, or None after ``timeout``."""
    import time

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    return None


@pytest.mark.server
@pytest.mark.slow  # ~2-3 min on 2 cores: a server, deploy, a worker, a pipeline run cancelled mid-generate
def test_cancelling_a_deployment_run_stops_every_process_it_started(tmp_path, monkeypatch):
    """Issue 17: cancel a `pipeline` deployment run (`prefect flow-run cancel`, what the UI's Cancel does)
    while generate's worker pool runs: the flow-run process and every pool worker are gone within seconds,
    the run ends Cancelled, and the worker itself then stops on SIGTERM (after its server is gone, too)."""
    import signal

    import psutil
    from prefect import get_client
    from prefect.deployments import run_deployment

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    params = tiny_params(tmp_path, n_groups=2000, image_size=96, workers=2)  # minutes of generate: time to cancel
    root = tmp_path / "data"
    with local_server(home=tmp_path / "prefect") as api:
        env = {**os.environ, "PREFECT_API_URL": api, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        prefect_cli("work-pool", "create", "spotdiff-local", "--type", "process", env=env)
        prefect_cli("--no-prompt", "deploy", "--all", env={**env, "SPOTDIFF_REPO": str(ROOT)})
        # chunks on a process pool (orchestrate.task_runner=processes): the run has child processes to stop
        run = run_deployment("pipeline/pipeline", timeout=0, parameters={
            "params": str(params), "root": str(root),
            "overrides": ["orchestrate.task_runner=processes", "orchestrate.workers=2"]})
        log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 -- read on failure
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "spotdiff-local"], cwd=tmp_path,
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            seen: dict[int, psutil.Process] = {}  # every descendant of the worker seen while generate ran

            def generating() -> bool:
                seen.update((p.pid, p) for p in psutil.Process(worker.pid).children(recursive=True))
                return len(seen) >= 3 and any((root / "generated").rglob("chunk-*"))  # flow run + pool workers

            assert _wait(generating, 240) is not None, f"generate never ran on a pool: {seen}\n" + \
                (tmp_path / "worker.log").read_text()[-3000:]
            generating()
            started = list(seen.values())
            print(f"worker descendants before cancel: {len(started)}", file=sys.stderr)  # shown with -s
            prefect_cli("flow-run", "cancel", str(run.id), env=env)

            def all_gone() -> bool:
                return not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

            took = _wait(all_gone, 90)
            print(f"all gone {took} s after cancel", file=sys.stderr)
            assert took is not None, [(p.pid, p.name()) for p in started if p.is_running()]

            def cancelled() -> bool:
                with get_client(sync_client=True) as client:
                    state = client.read_flow_run(run.id).state
                return state is not None and state.is_cancelled()

            assert _wait(cancelled, 60) is not None
        except BaseException:
            worker.kill()
            raise
    # the server is gone (the README's `prefect server` stopped first): the worker still stops on SIGTERM
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        pytest.fail("the Prefect worker ignored SIGTERM for 30 s after its server stopped")


@pytest.mark.server
@pytest.mark.slow  # ~3-4 min on 2 cores: a Dask scheduler and 2 workers as processes, two tiny pipelines
def test_a_dask_cluster_builds_the_same_release_when_a_worker_dies(tmp_path, api):
    """Issue 19: a scheduler and two workers started with Dask's own commands (`dask scheduler`, `dask
    worker`, the CPU pins from `spotdiff pins` in their environment), `orchestrate.dask_address` pointed at
    it, the tiny pipeline through the Prefect flow; one worker is killed (SIGKILL, nanny and all) once
    generate has written its first chunk. The scheduler reruns its tasks on the other worker and the
    release is byte-identical to the one the default thread runner builds."""
    import hashlib
    import shlex
    import signal
    import socket
    import threading

    from distributed import Client

    from flows.pipeline import pipeline_flow

    pins = subprocess.run([str(BIN / "spotdiff"), "pins"], capture_output=True, text=True, check=True).stdout
    pinned = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in pins.splitlines())
    env = {**os.environ, **pinned}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)]
    try:
        for i in range(2):
            procs.append(subprocess.Popen([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--name", f"w{i}",
                                           "--no-dashboard"], env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, start_new_session=True))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            levels = client.run(lambda: __import__("spotdiff").common.determinism.level())
        assert set(levels.values()) == {"x86-64-v3"}, levels

        params = tiny_params(tmp_path, n_groups=160, chunk_size=4)
        root = tmp_path / "dask"
        killed = {}

        def kill_one_worker() -> None:
            # finished chunks wait in generated.partial/ (the resume store) until the last one is done
            def chunks() -> int:
                return sum(len(list((root / d).rglob("chunk-*.tar"))) for d in ("generated", "generated.partial"))

            if _wait(lambda: chunks() > 0, 300, 0.1) is not None:
                killed["chunks_before"] = chunks()
                os.killpg(procs[1].pid, signal.SIGKILL)  # nanny and worker process

        killer = threading.Thread(target=kill_one_worker, daemon=True)
        killer.start()
        on_dask = pipeline_flow(params=str(params), root=str(root),
                                overrides=("orchestrate.task_runner=dask", f"orchestrate.dask_address={address}"))
        killer.join(5)
        assert killed and killed["chunks_before"] < 40, killed  # 40 chunks: the kill came mid-generate
        assert procs[1].wait(10) is not None
        local = pipeline_flow(params=str(params), root=str(tmp_path / "threads"))
        assert _tree(root / "generated") == _tree(tmp_path / "threads/generated")
        digests = [hashlib.sha256(Path(r["release"]).read_bytes()).hexdigest() for r in (on_dask, local)]
        assert digests[0] == digests[1]
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)


@pytest.mark.slow  # ~1 min on 2 cores: a Dask scheduler and 2 workers as processes, a 24-group generate
def test_chunks_that_need_a_gpu_run_only_on_workers_that_offer_one(tmp_path):
    """Issue 19: GPU workers. `dask worker --resources GPU=1` on one of two workers and
    `orchestrate.chunk_resources: {GPU: 1}`: every chunk runs on that worker, none on the CPU-only one, and
    generate writes the same bytes as the library alone; resources no worker offers are an error before
    any chunk is sent."""
    import shlex
    import signal
    import socket

    from distributed import Client

    from flows.stages import stage_flow
    from spotdiff.errors import InputError
    from spotdiff.generate.run import generate

    pins = subprocess.run([str(BIN / "spotdiff"), "pins"], capture_output=True, text=True, check=True).stdout
    env = {**os.environ, **dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in pins.splitlines())}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], **quiet)]
    try:
        for name, extra in (("gpu", ["--resources", "GPU=1"]), ("cpu", [])):
            procs.append(subprocess.Popen([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--name", name,
                                           "--no-dashboard", *extra], **quiet))
        params = tmp_path / "params.yaml"
        params.write_text("generate:\n  n_groups: 24\n  image_size: 64\n  chunk_size: 4\n  workers: 1\n"
                          "  sources: {procedural: 1}\n")
        generate(load_params(params).generate, tmp_path / "lib", progress=False)
        on = ("orchestrate.task_runner=dask", f"orchestrate.dask_address={address}")
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            with pytest.raises(InputError, match="no worker of the Dask cluster"):
                stage_flow("generate", str(params), (*on, "orchestrate.chunk_resources={TPU: 1}"),
                           {"out": tmp_path / "tpu"}, progress=False)
            stats = stage_flow("generate", str(params), (*on, "orchestrate.chunk_resources={GPU: 1}"),
                               {"out": tmp_path / "gpu"}, progress=False)
            ran = client.run(lambda dask_worker: (dask_worker.name, dask_worker.state.executed_count))
        assert stats["groups_in"] == 24
        executed = dict(ran.values())
        assert executed["gpu"] >= 6 and executed["cpu"] == 0, executed  # 6 chunks of 4 groups
        assert _tree(tmp_path / "gpu") == _tree(tmp_path / "lib")
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)

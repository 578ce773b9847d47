"""The stage host (`spotdiff run`'s warm process): a stage forwarded to it writes the same files, prints the
same output and exits with the same code as the stage run in its own process; without a host the command
runs itself; a child that dies is reported, not hung on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spotdiff import stagehost
from spotdiff.config import load_params
from spotdiff.generate import generate

ROOT = Path(__file__).resolve().parents[1]
SPOTDIFF = str(Path(sys.executable).parent / "spotdiff")


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("host") / "generated"
    p = load_params(ROOT / "params.yaml", ["generate.n_groups=6", "generate.image_size=64", "generate.workers=1",
                                           "generate.sources.packaged=0"])
    generate(p.generate, out, progress=False)
    return out


def run(args: list[str], cwd: Path, host: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != stagehost.ENV}
    env["SPOTDIFF_NO_PREFECT"] = "1"
    if host:
        env[stagehost.ENV] = host
    return subprocess.run([SPOTDIFF, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_forwarded_stage_matches_its_own_process(generated, tmp_path):
    log = tmp_path / "host.log"
    args = lambda out: ["shard", "-p", str(ROOT / "params.yaml"), "--in", str(generated), "--out", str(out)]  # noqa: E731
    own = run(args(tmp_path / "own"), tmp_path, None)
    with stagehost.stage_host(["spotdiff.shards"], log=log) as host:
        hosted = run(args(tmp_path / "hosted"), tmp_path, host)
        bad_own = run(["shard", "-p", str(ROOT / "params.yaml"), "--in", str(tmp_path / "missing")], tmp_path, None)
        bad_hosted = run(["shard", "-p", str(ROOT / "params.yaml"), "--in", str(tmp_path / "missing")], tmp_path, host)
        usage = run(["shard", "--no-such-flag"], tmp_path, host)
    assert own.returncode == hosted.returncode == 0, hosted.stderr
    assert own.stdout.replace("own", "X") == hosted.stdout.replace("hosted", "X")
    assert files(tmp_path / "own") == files(tmp_path / "hosted") != {}
    # Errors come back the same way: message on the caller's stderr, same exit code.
    assert bad_own.returncode == bad_hosted.returncode == 1 and "missing" in bad_hosted.stderr
    assert bad_own.stderr == bad_hosted.stderr
    assert usage.returncode == 2 and "--no-such-flag" in usage.stderr
    # ... and they really ran in the host's children (relative paths resolved in the caller's cwd).
    text = log.read_text()
    assert "serving on" in text and text.count("runs spotdiff shard") == 3, text


def test_without_a_host_the_stage_runs_itself(generated, tmp_path):
    r = run(["shard", "-p", str(ROOT / "params.yaml"), "--in", str(generated), "--out", str(tmp_path / "out")],
            tmp_path, str(tmp_path / "no-host.sock"))
    assert r.returncode == 0, r.stderr
    assert "no stage host answers" in r.stderr and (tmp_path / "out/SHA256SUMS").exists()


def test_a_child_that_dies_is_reported(tmp_path):
    # The entry crashes the child with SIGSEGV: the caller must get a failure, not wait forever.
    with stagehost.stage_host([], entry="faulthandler:_sigsegv", log=tmp_path / "host.log") as host:
        assert stagehost.forward(["shard"], host) == 1


def test_preloading_that_starts_threads_is_refused(tmp_path):
    (tmp_path / "starts_a_thread.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    r = subprocess.run([sys.executable, "-m", "spotdiff.stagehost", "--socket", str(tmp_path / "s"),
                        "--preload", "starts_a_thread"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "refusing to fork" in r.stderr


def test_prefect_flow_run_through_the_host_completes_with_its_logs(generated, tmp_path):
    """As `spotdiff run` does it: the host imports Prefect before the server is up; the child must still talk
    to the server in its environment, and its queued logs must reach it before the child exits."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId

    from flows.server import local_server
    from spotdiff.cli import HOST_PRELOAD, PREFECT_PRELOAD

    with stagehost.stage_host(HOST_PRELOAD + PREFECT_PRELOAD, log=tmp_path / "host.log") as host, \
            local_server(home=tmp_path / "prefect"):
        env = {**os.environ, stagehost.ENV: host}
        env.pop("SPOTDIFF_NO_PREFECT", None)
        r = subprocess.run([SPOTDIFF, "shard", "-p", str(ROOT / "params.yaml"), "--in", str(generated), "--out",
                            str(tmp_path / "out"), "-q"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["shard"])))
            assert [run.state.type.value for run in runs] == ["COMPLETED"]
            logs = [log.message for log in client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[runs[0].id])))]
    assert "runs spotdiff shard" in (tmp_path / "host.log").read_text()
    assert any("Finished in state Completed" in m for m in logs), logs

"""CPU-independent bytes (issue 14): the pipeline builds the same shards and release under two simulated
CPUs, and every pin of ``spotdiff.common.determinism`` takes effect in a fresh process.

A "simulated CPU" is the set of switches through which numpy, OpenBLAS, OpenCV (and its IPP), torch's
ATen kernels, MKL and oneDNN let a process choose lower or other kernels than its CPU would get, plus a
thread count: what the libraries pick by themselves on another x86-64 machine. Without the pins the two
builds differ (QA's scores under numpy's and OpenBLAS's kernels, the trained weights under MKL's,
oneDNN's and the thread count); run this module with ``SPOTDIFF_CPU_PINS=none``, or with one pin left
out of the list (``SPOTDIFF_CPU_PINS=numpy,openblas,opencv,aten,onednn,threads``), to see it fail.
The pins are checked for real on another CPU with qemu in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import tiny_raw
from spotdiff.common import determinism

ROOT = Path(__file__).resolve().parents[1]

_AVX512 = "avx512f" in (determinism.cpu_flags() or ())
AVX512_SERVER = {  # what the libraries choose on their own on such a machine, and a core count
    **({"OPENBLAS_CORETYPE": "SkylakeX", "ATEN_CPU_CAPABILITY": "avx512"} if _AVX512 else {}),
    "OMP_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
}
AVX2_MACHINE = {  # an AVX2-only CPU (an older Xeon, AMD before Zen 4): every library's AVX2 path, one core
    "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL",
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENCV_CPU_DISABLE": "AVX512-SKX",
    "OPENCV_IPP": "avx2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

# Every stage in one process (one import of torch), as a program using the library would run them.
BUILD = """
import sys
from spotdiff.config import load_params
from spotdiff.stages import PIPELINE

root = sys.argv[1]  # the repository: the real photos and the environment lock are its inputs
given = {"evaluate": {"photos": f"{root}/data/photos/dreambench-dev"},
         "publish": {"requirements": f"{root}/requirements.lock"}}
params = load_params("params.yaml")
for name, stage in PIPELINE.items():
    stage.load()(params, stage.paths(**given.get(name, {})), progress=False)
"""


def tiny_params(path: Path) -> None:
    """The repository's params on a tiny profile: 24 groups at 64 px (a quarter packaged photos, so the
    GrabCut and MediaPipe paths run too), a tiny embedded backbone, 2 epochs; the feature cache inside
    the build folder, so neither build reuses the other's features."""
    raw = tiny_raw({"n_groups": 24, "sources": {"procedural": 0.75, "packaged": 0.25}},
                   {"batch_size": 8, "cache_dir": "cache"})
    raw["qa"]["workers"] = 1
    path.write_text(yaml.safe_dump(raw))


def start_build(root: Path, cpu: dict[str, str]) -> subprocess.Popen:
    """generate -> publish under ``root`` (its own params.yaml, data/, cache/) in a fresh process whose
    environment simulates ``cpu``; the pins (``SPOTDIFF_CPU_PINS`` as this process has it) apply there."""
    root.mkdir(parents=True)
    tiny_params(root / "params.yaml")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **cpu}
    return subprocess.Popen([sys.executable, "-c", BUILD, str(ROOT)], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _files(root: Path) -> dict[str, bytes]:
    """Every output under data/ and metrics/ (not the feature cache: safetensors writes its metadata in
    no fixed order, and it is no artifact)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for top in ("data", "metrics")
            for p in sorted((root / top).rglob("*")) if p.is_file()}


@pytest.mark.skipif(not determinism.supported(), reason=f"this CPU is below {determinism.LEVEL}: the pins cannot hold")
def test_two_simulated_cpus_build_the_same_shards_and_release(tmp_path):
    """15-50 s on 2 cores: the two builds run side by side."""
    builds = {"avx512": start_build(tmp_path / "avx512", AVX512_SERVER),
              "avx2": start_build(tmp_path / "avx2", AVX2_MACHINE)}
    for name, proc in builds.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{name} build failed:\n{out[-4000:]}"
    a, b = _files(tmp_path / "avx512"), _files(tmp_path / "avx2")
    assert sorted(a) == sorted(b)
    differ = [name for name in a if a[name] != b[name]]
    release = "data/release/spotdiff10k-0.1.0.tar"
    assert a["data/shards/SHA256SUMS"] == b["data/shards/SHA256SUMS"], f"shards differ; files that differ: {differ}"
    assert a[release] == b[release], f"releases differ; files that differ: {differ}"
    assert not differ, f"outputs differ between the simulated CPUs: {differ}"


PROBE = """
import spotdiff, json, cv2, numpy, torch
from numpy.core._multiarray_umath import __cpu_features__ as npy
from spotdiff.common import determinism
print(json.dumps({"level": determinism.level(), "numpy_avx512": npy["AVX512F"], "torch": torch.backends.cpu.get_cpu_capability(),
                  "torch_threads": torch.get_num_threads(), "opencv": cv2.getCPUFeaturesLine(), "ipp": cv2.ipp.getIppVersion()}))
"""


def _probe(env: dict[str, str]) -> dict:
    """What a fresh process that imports spotdiff first runs, in this environment less every variable a
    pin sets (this process's own pins are in its environment) plus ``env``."""
    import json

    pinned = {k for pin in determinism.pin_env(determinism.cpu_flags() or frozenset()).values() for k in pin}
    base = {k: v for k, v in os.environ.items() if k not in pinned}
    run = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not determinism.supported(), reason=f"this CPU is below {determinism.LEVEL}: the pins cannot hold")
def test_import_spotdiff_pins_every_library_before_it_loads():
    """Whatever the environment asks for, a process that imports spotdiff first runs the pinned kernels:
    numpy without its AVX-512 loops, torch's AVX2 kernels on one thread, OpenCV without AVX-512 dispatch,
    IPP at its AVX2 level."""
    got = _probe({**AVX512_SERVER, "OMP_NUM_THREADS": "4", "SPOTDIFF_CPU_PINS": "all"})
    assert got["level"] == determinism.LEVEL
    assert got["numpy_avx512"] is False and got["torch"] == "AVX2" and got["torch_threads"] == 1
    assert "AVX512" not in got["opencv"].replace("AVX512-SKX?", "")  # '?' marks a feature switched off
    assert "AVX2" in got["ipp"]
    off = _probe({"SPOTDIFF_CPU_PINS": "none"})
    assert off["level"].startswith("unpinned")
    if _AVX512:  # the libraries' own choice on this CPU, which the pins replaced
        assert off["numpy_avx512"] is True and off["torch"] == "AVX512"


def test_pin_selection():
    assert determinism.selected(None) == determinism.PINS == determinism.selected("all")
    assert determinism.selected("none") == () == determinism.selected("0")
    assert determinism.selected("threads, numpy") == ("numpy", "threads")
    with pytest.raises(ValueError, match="unknown pin"):
        determinism.selected("numpy,avx")


def test_opencv_disables_only_the_avx512_groups_a_cpu_has():
    """OpenCV writes a warning for each disabled feature the CPU lacks, so an AVX2 CPU gets no list."""
    avx2 = frozenset({"avx", "avx2", "fma", "f16c", "bmi1", "bmi2"})
    assert "OPENCV_CPU_DISABLE" not in determinism.pin_env(avx2)["opencv"]
    skx = avx2 | {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
    assert determinism.pin_env(skx)["opencv"]["OPENCV_CPU_DISABLE"] == "AVX512-COMMON,AVX512-SKX"

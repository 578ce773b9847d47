"""CPU-independent bytes: pin the run-time CPU dispatch of the numeric libraries the stages use.

numpy, OpenBLAS, OpenCV (and its Intel IPP), and torch's ATen kernels, MKL and oneDNN each pick, when
they load or first run, code for the CPU they find: SSE, AVX2, AVX-512 or AMX kernels, other code on
AMD than on Intel, work split over as many threads as there are cores. Those kernels round differently
in the last bits, and a last bit is enough to move a stored float, a pixel rounded to uint8 or a
training step: a fresh clone on another x86-64 machine built other bytes (issue 14). ``apply()``, run by
``import spotdiff`` before the package imports numpy, cv2 or torch, sets the environment variables those
libraries read, so that every process of ours -- the ``spotdiff`` command, ``dvc repro``'s stage
commands, Prefect flows, spawned workers (they inherit the environment), a program that imports
spotdiff first -- runs the same kernels on every CPU with AVX2 and FMA (x86-64-v3: Intel since Haswell,
AMD since Zen), whatever it has beyond that. A value already in the environment is overridden: a pin
must hold whatever the shell says.

Each pin and what it fixed (found by building the tiny pipeline under each switch, and under an
emulated AMD EPYC, ``qemu-x86_64 -cpu EPYC-Milan``; docs/benchmarks.md has the runs and the costs,
tests/test_cpu_bytes.py checks them):

* ``numpy``: ``NPY_DISABLE_CPU_FEATURES`` drops numpy's AVX-512 loops (float32 log/exp and friends
  round differently there): QA's scores differed.
* ``openblas``: ``OPENBLAS_CORETYPE=Haswell``: the same BLAS kernels on every CPU in numpy's, scipy's
  and OpenCV's OpenBLAS (they pick SkylakeX, Zen, Cooperlake or, for an unknown CPU, Prescott kernels):
  QA's identity scores, a quarantined group's scores and evaluate's projection differed.
* ``opencv``: ``OPENCV_CPU_DISABLE`` drops OpenCV's AVX-512 dispatch and ``OPENCV_IPP=avx2`` holds
  IPP, which dispatches by itself, at its AVX2 code (QA's scores differed between IPP's SSE4.2 and
  AVX2 levels; no difference between AVX2 and AVX-512 was seen in our stages, at no measurable cost).
* ``aten``: ``ATEN_CPU_CAPABILITY=avx2``: torch's own element-wise and reduction kernels (its AVX-512
  and default builds' trained weights differed from the AVX2 build's).
* ``mkl``: ``MKL_CBWR=COMPATIBLE``: MKL's reproducible code, the same on Intel and AMD. Its AVX2 branch
  is reproducible only on Intel: on the emulated EPYC the heads' matrix products already differed at
  the first step. MKL's vector math (torch's exp, log, sqrt of a tensor) differs between Intel and
  AMD under every branch, so the training code keeps clear of it (``losses.subject_contrastive``'s
  log_softmax, fused AdamW).
* ``onednn``: ``ONEDNN_MAX_CPU_ISA=AVX2`` (and the older ``DNNL_`` name): torch's convolutions:
  train differed.
* ``threads``: one OpenMP/MKL/OpenBLAS thread. torch splits a reduction (a bias gradient, a mean)
  over its threads, and MKL's reproducible mode holds only for a fixed thread count: train differed
  between 1 and 2 threads, so a machine's core count chose the bytes. (One thread is also the faster
  setting for these small models on a busy machine, docs/benchmarks.md.)

Not pinnable, so changed in the code: MediaPipe's TFLite/XNNPACK (people photos' masks) has no switch;
its mask differs in the 5th decimal between CPUs and is quantised before it decides a byte
(``spotdiff.generate.segment.mediapipe_selfie``). ``cv2.ximgproc.guidedFilter`` differed between
Intel and AMD with OpenCV pinned; GrabCut's mask is refined by our own guided filter
(``spotdiff.generate.segment.grabcut``). Unpinned and harmless: libjpeg-turbo (JPEG; its integer DCT
gave the same bytes with ``JSIMD_FORCENONE``), Pillow's resampling (fixed-point, no dispatch) and
PNG's deflate (the same bytes on the emulated AMD CPU).

On a CPU without AVX2 and FMA the ISA pins cannot hold (and forcing OpenBLAS's Haswell kernels would
crash there): ``apply`` then sets only the thread pin and warns once; ``level()`` says so.
``SPOTDIFF_CPU_PINS`` chooses pins, for measuring them: unset or ``all`` = every pin, ``none`` = no
pin, or a comma list of names (``numpy,threads``).
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import warnings

LEVEL = "x86-64-v3"
"""The CPU feature level every pin holds to: AVX2 + FMA (and AVX, F16C, BMI1/2)."""

_LEVEL_FLAGS = frozenset({"avx", "avx2", "fma", "f16c", "bmi1", "bmi2"})
"""/proc/cpuinfo flags a CPU needs for the pins to hold (and for OPENBLAS_CORETYPE=Haswell to run)."""

# OpenCV's dispatched AVX-512 groups and the cpuinfo flags each needs. OpenCV warns on stderr about
# every disabled feature the CPU lacks, so only the groups this CPU has are disabled.
_OPENCV_AVX512 = {
    "AVX512-COMMON": {"avx512f", "avx512cd"},
    "AVX512-SKX": {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"},
    "AVX512-CNL": {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512ifma", "avx512vbmi"},
    "AVX512-CLX": {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"},
    "AVX512-ICL": {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512ifma", "avx512vbmi",
                   "avx512_vnni", "avx512_vbmi2", "avx512_bitalg", "avx512_vpopcntdq"},
}

_NUMPY_AVX512 = "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
"""numpy's dispatch targets above AVX2 (names it does not know or the CPU lacks are ignored, silently)."""

PINS = ("numpy", "openblas", "opencv", "aten", "mkl", "onednn", "threads")
"""Every pin's name, in the order ``apply`` sets them."""

_applied: dict[str, dict[str, str]] = {}
_state = {"level": "not applied"}


def cpu_flags() -> frozenset[str] | None:
    """This CPU's feature flags from /proc/cpuinfo; None where there is none (not Linux, not x86-64)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def pin_env(flags: frozenset[str]) -> dict[str, dict[str, str]]:
    """Pin name -> the environment variables it sets on a CPU with ``flags``."""
    opencv = ",".join(g for g, need in _OPENCV_AVX512.items() if need <= flags)
    return {
        "numpy": {"NPY_DISABLE_CPU_FEATURES": _NUMPY_AVX512},
        "openblas": {"OPENBLAS_CORETYPE": "Haswell"},
        "opencv": {"OPENCV_IPP": "avx2", **({"OPENCV_CPU_DISABLE": opencv} if opencv else {})},
        "aten": {"ATEN_CPU_CAPABILITY": "avx2"},
        "mkl": {"MKL_CBWR": "COMPATIBLE"},
        "onednn": {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"},
        "threads": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    }


def selected(spec: str | None) -> tuple[str, ...]:
    """The pins ``SPOTDIFF_CPU_PINS`` = ``spec`` asks for (see the module doc)."""
    spec = (spec or "all").strip().lower()
    if spec in ("all", "1", "on", "yes", "true"):
        return PINS
    if spec in ("none", "0", "off", "no", "false"):
        return ()
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    unknown = sorted(set(names) - set(PINS))
    if unknown:
        raise ValueError(f"SPOTDIFF_CPU_PINS: unknown pin(s) {unknown}; known: {', '.join(PINS)}, all, none")
    return tuple(n for n in PINS if n in names)


def supported(flags: frozenset[str] | None = None) -> bool:
    """Whether a CPU with ``flags`` (default: this one) has ``LEVEL``, so that the pins hold there."""
    flags = cpu_flags() if flags is None else flags
    return flags is not None and _LEVEL_FLAGS <= flags


def apply() -> None:
    """Set the selected pins' environment variables (overriding values already set). Idempotent; run by
    ``import spotdiff``."""
    if _state["level"] != "not applied":
        return
    names = selected(os.environ.get("SPOTDIFF_CPU_PINS"))
    flags = cpu_flags()
    if flags is None:
        _state["level"] = f"unpinned ({platform.machine()}: no x86-64 dispatch to pin)"
        return
    env = pin_env(flags)
    if not supported(flags):
        missing = " ".join(sorted(_LEVEL_FLAGS - flags))
        names = tuple(n for n in names if n == "threads")  # the ISA pins cannot hold (Haswell kernels would crash)
        _state["level"] = f"unpinned (this CPU lacks {missing})"
        warnings.warn(f"spotdiff: this CPU lacks {missing}, so the {LEVEL} pins cannot hold; artifact bytes may "
                      "differ from builds on other CPUs (spotdiff.common.determinism)", RuntimeWarning, stacklevel=2)
    # Started with every pin already in its environment (`eval "$(spotdiff pins)"`, a spawned worker):
    # numpy and the rest loaded pinned even if they were imported first (a Dask worker imports numpy).
    inherited = all(os.environ.get(k) == v for name in names for k, v in env[name].items())
    for name in names:
        os.environ.update(env[name])
        _applied[name] = env[name]
    if supported(flags):
        _state["level"] = (LEVEL if names == PINS else f"{LEVEL} partly ({','.join(names)})" if names
                           else "unpinned (SPOTDIFF_CPU_PINS=none)")
    late = [m for m in ("numpy", "cv2", "torch") if m in sys.modules]
    if late and names and not inherited:
        warnings.warn(f"spotdiff: {', '.join(late)} was imported before spotdiff, so this process may run its "
                      f"native CPU kernels, not the pinned {LEVEL} ones (spawned workers are pinned); "
                      "import spotdiff first, or start the process with the pins in its environment "
                      '(`eval "$(spotdiff pins)"`, e.g. before `dask worker`), for bytes that do not depend on '
                      "the CPU", RuntimeWarning, stacklevel=2)


def exports() -> str:
    """The pins this process applied as POSIX shell ``export`` lines, for a process that imports numpy
    before spotdiff can pin it (``dask worker`` does): ``eval "$(spotdiff pins)"`` before starting it."""
    return "".join(f"export {k}={shlex.quote(v)}\n" for name in PINS for k, v in _applied.get(name, {}).items())


def level() -> str:
    """The feature level this process's numeric code is pinned to: ``LEVEL``, or why it is not."""
    return _state["level"]


def applied() -> dict[str, dict[str, str]]:
    """Pin name -> the variables it set in this process."""
    return {k: dict(v) for k, v in _applied.items()}

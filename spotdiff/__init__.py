"""SpotDiff pipeline: build a SpotDiff10k-style dataset of subject groups, shard it, train and evaluate.

Plain library code; orchestration (Prefect) lives in the top-level ``flows`` package.

Importing the package sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is already set (it only takes effect if
torch is imported afterwards): torch's OpenMP threads otherwise spin while they wait, and on a machine
whose cores are also busy with other work (the generate pool, the Prefect server, another job) that makes
the small models of train, evaluate and QA 2-3x slower (measured: train stage 36-48 s vs 18 s at load 4
on 2 cores). Waiting threads that sleep cost nothing measurable when the machine is idle.

It also pins the CPU dispatch of numpy, OpenBLAS, OpenCV and torch (ATen, MKL, oneDNN) to one feature
level through the environment variables they read when they load (``spotdiff.common.determinism``), so
stage outputs have the same bytes on every x86-64 CPU with AVX2: this must run before anything imports
them, which is why it is here.
"""

import os

from spotdiff.common import determinism

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
determinism.apply()

__version__ = "0.1.0"

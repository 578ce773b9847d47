"""Native log lines (MediaPipe's TFLite/absl) stay off the terminal; everything else written to fd 2
during a captured block comes through."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CODE = r"""
import os, sys
from spotdiff.common import native_log
with native_log.quiet_native():
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    os.write(2, b"W0000 00:00:1796493775.029036   24845 inference_feedback_manager.cc:114] Feedback manager ...\n")
    os.write(2, b"E0000 00:00:1796493775.029036   24845 calculator_graph.cc:887] a real native error\n")
    print("python's own stderr", file=sys.stderr)
    with native_log.quiet_native():  # re-entrant
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
print(native_log.dropped)
"""


def test_routine_native_lines_are_dropped_and_the_rest_passes():
    run = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "3"
    assert run.stderr.splitlines() == ["E0000 00:00:1796493775.029036   24845 calculator_graph.cc:887] a real native error",
                                       "python's own stderr"]


def test_quiet_generate_of_photos_of_people_prints_nothing(tmp_path):
    """The packaged astronaut goes through MediaPipe's selfie segmenter and pose landmarks: with -q the
    whole run prints its one summary line on stdout and nothing on stderr (it printed 6 native lines)."""
    run = subprocess.run([sys.executable, "-m", "flows.cli", "generate", "-q", "--out", str(tmp_path / "gen"),
                          "-S", "generate.n_groups=4", "-S", "generate.sources.procedural=0", "-S", "generate.sources.packaged=1",
                          "-S", "generate.workers=1", "-S", "generate.min_segment_score=0"],  # keep all 4 (issue 15's bar
                         capture_output=True, text=True, cwd=ROOT, timeout=300)  # rejects chelsea, coffee, rocket)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert run.stdout.startswith("generate: 4 groups in, 4 kept")
    import pyarrow.parquet as pq
    rows = pq.read_table(tmp_path / "gen/records.parquet").to_pylist()
    assert any("astronaut" in str(r) for r in rows), "the test needs a person photo"

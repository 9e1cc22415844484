"""The Triton kernels against the float64 reference, in a fresh process (``triton_kernel_checks.py``),
launched from C++ by the training node (``training_node_checks.py``), and those of the
compiled-inference operators (``projected_gate_checks.py``).

On CPU tensors through Triton's interpreter (``TRITON_INTERPRET=1``): no GPU needed, so CI runs
it. The interpreter must be switched on before Triton is first imported, and other tests
(torch.compile) import Triton earlier in this process, hence the subprocess. On a machine with a
CUDA GPU, ``make gpu-check`` runs the same checks compiled, plus ``cuda_checks.py``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="Triton is an optional accelerator dependency")


@pytest.mark.parametrize("checks", ["triton_kernel_checks.py", "training_node_checks.py", "projected_gate_checks.py"])
def test_kernels_match_the_reference_in_the_interpreter(checks):
    checks = Path(__file__).with_name(checks)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(checks), "-q", "-p", "no:cacheprovider"],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "ECANET_TRITON_DEVICE": "cpu"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, report
    assert " passed" in result.stdout and "failed" not in result.stdout and "skipped" not in result.stdout, report

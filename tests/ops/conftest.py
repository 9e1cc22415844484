import pytest

# Run only on request (see their docstrings): not test modules, and importing them has effects
# (switching Triton's interpreter on, or demanding a GPU) that the doctest collector must not cause.
collect_ignore = [
    "triton_kernel_checks.py",
    "training_node_checks.py",
    "projected_gate_checks.py",
    "cuda_checks.py",
]


@pytest.fixture(autouse=True)
def _fresh_prepared_calls(monkeypatch):
    """Each test starts with no prepared calls (:mod:`ecanet.ops.prepared_calls`), so that none
    serves a key another test stored. Imported here, not at the top: the check modules must set
    Triton's interpreter switch before ecanet is first imported."""
    from ecanet.ops import prepared_calls

    monkeypatch.setattr(prepared_calls, "_prepared", {})

"""Which of ECA's forwards applied a BatchNorm inside the rescale: how tests see the GPU's route
fold a block's last BatchNorm (its kernels' results alone cannot tell a folded norm from one run
as a module)."""

from __future__ import annotations

import pytest


def folded_norm_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each Triton forward from here on applied a BatchNorm inside the rescale, in order."""
    from ecanet.ops import triton_kernels  # after the caller has chosen Triton's interpreter or not

    calls = []
    forward = triton_kernels.ForwardPlan.__call__

    def spy(plan, x, weight, identity, out, known_mean=None, norm=None):
        calls.append(norm is not None)
        return forward(plan, x, weight, identity, out, known_mean, norm)

    monkeypatch.setattr(triton_kernels.ForwardPlan, "__call__", spy)
    return calls

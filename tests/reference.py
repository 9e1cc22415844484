"""Plain float64 references for the tests, written independently of the code under test.

Deliberately naive: explicit loops over channels and taps, no shared helpers with ecanet.
"""

from __future__ import annotations

import torch
from torch import Tensor


def eca_reference(
    x: Tensor,
    weight: Tensor,
    padding: str = "zeros",
    pooling: str = "avg",
    gate: str = "sigmoid",
    channel_dim: int = 1,
    descriptor: Tensor | None = None,
) -> Tensor:
    """ECA computed in float64, differentiable (its autograd gradient is the reference gradient).

    ``descriptor``, an ``(N, C)`` tensor, replaces the pooled descriptor of ``x`` when given.
    """
    x64 = x.double()
    if channel_dim == -1:
        x64 = x64.movedim(-1, 1)
    n, c = x64.shape[:2]
    flat = x64.reshape(n, c, -1)
    if descriptor is not None:
        descriptor = descriptor.double()
    else:
        descriptor = flat.mean(dim=2)
        if pooling == "avgmax":
            descriptor = descriptor + flat.max(dim=2).values
    taps = weight.double().reshape(weight.shape[0], -1)
    k = taps.shape[1]
    columns = []
    for i in range(c):
        row = taps[i] if taps.shape[0] > 1 else taps[0]
        total = torch.zeros(n, dtype=torch.float64, device=x.device)
        for j in range(k):
            source = i + j - k // 2
            if not 0 <= source < c:
                if padding == "zeros":
                    continue
                source %= c
            total = total + row[j] * descriptor[:, source]
        columns.append(total)
    logits = torch.stack(columns, dim=1)
    if gate == "sigmoid":
        attention = 1.0 / (1.0 + torch.exp(-logits))
    else:
        attention = torch.clamp(logits / 6.0 + 0.5, 0.0, 1.0)
    out = x64 * attention.reshape(n, c, *([1] * (x64.dim() - 2)))
    if channel_dim == -1:
        out = out.movedim(1, -1)
    return out


def eca_residual_reference(
    x: Tensor,
    weight: Tensor,
    identity: Tensor | None = None,
    relu: bool = False,
    padding: str = "zeros",
    gate: str = "sigmoid",
    channel_dim: int = 1,
    descriptor: Tensor | None = None,
) -> Tensor:
    """A block tail, ``relu(eca(x) + identity)`` (each part optional), in float64 and differentiable."""
    out = eca_reference(x, weight, padding, "avg", gate, channel_dim, descriptor)
    if identity is not None:
        out = out + identity.double()
    return out.clamp(min=0) if relu else out

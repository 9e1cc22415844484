"""The ECA module: a stateful shell around :func:`ecanet.functional.eca`."""

import math

import torch
from torch import Tensor, fx, nn

from ecanet import functional as F_eca
from ecanet.ops import dispatch, eager_call
from ecanet.ops.frozen_norm import FrozenNorm

__all__ = ["ECA", "ChannelKernel", "has_forward_hooks"]


class ChannelKernel(nn.Module):
    """Holds the k-tap channel kernel of an ECA layer as ``weight`` of shape ``[rows, 1, k]``.

    It sits under the name ``conv`` so that an ECA state dict reads ``conv.weight`` with shape
    ``[1, 1, k]``, exactly like the official implementation's and timm's ``Conv1d(1, 1, k)``; their
    weights load unchanged. ``rows = C`` holds one kernel per channel (ECA-NS).

    Args:
        kernel_size: odd number of taps k.
        rows: 1 for a shared kernel, C for per-channel kernels.
    """

    def __init__(
        self,
        kernel_size: int,
        rows: int = 1,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, 1, kernel_size, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Conv1d's default initialisation: uniform in ``±1/sqrt(k)`` (fan-in = k)."""
        bound = 1.0 / math.sqrt(self.weight.shape[-1])
        nn.init.uniform_(self.weight, -bound, bound)

    def extra_repr(self) -> str:
        return f"rows={self.weight.shape[0]}, kernel_size={self.weight.shape[-1]}"


def _check_channel_count(x: Tensor, channels: int | None, channel_dim: int) -> None:
    """Raises if ``x`` (3-D or more) does not have the ``channels`` the layer was built for."""
    if channels is not None and x.dim() >= 3:
        got = x.shape[1] if channel_dim == 1 else x.shape[-1]
        if got != channels:
            raise ValueError(
                f"ECA was built for {channels} channels but the input has {got} "
                f"(channel_dim={channel_dim}, shape {list(x.shape)})"
            )


# torch.fx records these two as single calls (their checks branch on the input's shape, which a
# symbolic trace does not know): a traced graph checks and computes when it runs, fast path included.
@fx.wrap
def _checked_eca(
    x: Tensor,
    weight: Tensor,
    channels: int | None,
    padding: str,
    pooling: str,
    gate: str,
    channel_dim: int,
    inplace: bool,
) -> Tensor:
    """:func:`ecanet.functional.eca` after the layer's channel count is checked."""
    _check_channel_count(x, channels, channel_dim)
    return F_eca.eca(x, weight, padding, pooling, gate, channel_dim, inplace)


@fx.wrap
def _checked_eca_residual(
    x: Tensor,
    weight: Tensor,
    identity: Tensor,
    channels: int | None,
    activation: str,
    padding: str,
    pooling: str,
    gate: str,
    channel_dim: int,
    inplace: bool,
    descriptor: Tensor | None,
) -> Tensor:
    """:func:`ecanet.functional.eca_residual` after the layer's channel count is checked."""
    _check_channel_count(x, channels, channel_dim)
    return F_eca.eca_residual(x, weight, identity, activation, padding, pooling, gate, channel_dim, inplace, descriptor)


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether calling ``module`` would run forward hooks (its own or global ones), which a fused
    call that skips running it must not skip.

    Example:
        >>> has_forward_hooks(nn.ReLU())
        False
    """
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or nn.modules.module._global_forward_hooks
        or nn.modules.module._global_forward_pre_hooks
    )


def _foldable_norm(y: Tensor, norm: nn.Module) -> FrozenNorm | None:
    """``norm``'s tensors if the call on ``y`` may apply it inside ECA's rescale: the route of
    :mod:`ecanet.ops.prepared_calls` (CUDA), grad mode off, no forward hooks that would miss it
    running, not a symbolic trace, and an eval-mode BatchNorm (:meth:`FrozenNorm.of`)."""
    if (
        isinstance(y, fx.Proxy)
        or not dispatch.takes_prepared_calls(y)
        or torch.is_grad_enabled()
        or has_forward_hooks(norm)
    ):
        return None
    return FrozenNorm.of(norm)


class ECA(nn.Module):
    """Efficient Channel Attention (Wang et al., CVPR 2020), for inputs of any dimensionality.

    ``out = x * gate(conv1d_k(pool(x)))``: a global pool gives one value per channel, a k-tap
    convolution along the channel axis lets each channel look at its k neighbours, and the gated
    result rescales every channel. k parameters, no dimensionality reduction, no sample mixing.

    The kernel size comes from ``kernel_size`` if given, else from the paper's adaptive rule
    :func:`ecanet.eca_kernel_size` on ``channels``, else it is 3 (the common fixed choice), so
    ``ECA(256)`` and ``ECA(kernel_size=3)`` both work.

    Args:
        channels: number of channels C. Enables the adaptive kernel size and a check of every
            input's channel count. Required for ``shared=False``.
        kernel_size: odd kernel size k, overriding the adaptive rule.
        gamma: ``gamma`` of the adaptive rule. Default: 2.
        beta: ``b`` of the adaptive rule. Default: 1.
        padding: ``"zeros"`` (paper) or ``"circular"`` (the channel axis wraps around).
        pooling: ``"avg"`` (paper) or ``"avgmax"`` (average and max descriptors, summed).
        gate: ``"sigmoid"`` (paper) or ``"hard_sigmoid"``.
        shared: one kernel for all channels (paper). ``False`` gives every channel its own
            kernel: the paper's ECA-NS ablation with k*C weights.
        channel_dim: ``1`` for ``(N, C, *spatial)``, ``-1`` for channels-last ``(N, *, C)``.
        inplace: write the result into the input instead of a new tensor. Saves the allocation of
            a fresh output (the largest single cost of the layer on CPU) and works in training:
            a use that needs the overwritten input raises an autograd error, never a wrong
            gradient. Default: ``False``.

    Shape:
        - Input: ``(N, C, *)`` with at least one spatial dim (1-D, 2-D, 3-D, ...), or ``(N, *, C)``
          with ``channel_dim=-1``.
        - Output: same shape, dtype and memory format as the input.

    Attributes:
        conv.weight: the kernel, shape ``[1, 1, k]`` (``[C, 1, k]`` when not shared).

    Example:
        >>> eca = ECA(256)
        >>> eca
        ECA(256, k=5, padding=zeros, pooling=avg, gate=sigmoid)
        >>> eca(torch.randn(2, 256, 14, 14)).shape
        torch.Size([2, 256, 14, 14])
        >>> ECA(64, channel_dim=-1)(torch.randn(2, 49, 64)).shape  # tokens
        torch.Size([2, 49, 64])
    """

    channels: int | None
    kernel_size: int
    padding: str
    pooling: str
    gate: str
    channel_dim: int
    inplace: bool

    def __init__(
        self,
        channels: int | None = None,
        kernel_size: int | None = None,
        *,
        gamma: float = 2.0,
        beta: float = 1.0,
        padding: str = "zeros",
        pooling: str = "avg",
        gate: str = "sigmoid",
        shared: bool = True,
        channel_dim: int = 1,
        inplace: bool = False,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
            raise ValueError(f"channels must be a positive int or None, got {channels!r}")
        if kernel_size is None:
            kernel_size = 3 if channels is None else F_eca.eca_kernel_size(channels, gamma, beta)
        elif isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
        elif kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (even k shifts the channel axis), got {kernel_size}")
        F_eca.check_eca_options(padding, pooling, gate)
        if channel_dim not in (1, -1):
            raise ValueError(f"channel_dim must be 1 (N, C, *spatial) or -1 (N, *, C), got {channel_dim!r}")
        if not shared and channels is None:
            raise ValueError("shared=False (ECA-NS, one kernel per channel) needs channels")
        if padding == "circular" and channels is not None and kernel_size // 2 > channels:
            raise ValueError(f"circular padding needs kernel_size // 2 <= channels, got {kernel_size} for {channels}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.padding = padding
        self.pooling = pooling
        self.gate = gate
        self.channel_dim = channel_dim
        self.inplace = bool(inplace)
        rows = 1 if shared else int(channels)  # type: ignore[arg-type]
        self.conv = ChannelKernel(kernel_size, rows, device=device, dtype=dtype)

    @property
    def shared(self) -> bool:
        """Whether one kernel serves all channels (the paper's ECA) or each has its own (ECA-NS)."""
        return self.conv.weight.shape[0] == 1

    def reset_parameters(self) -> None:
        """Re-initialises the kernel as ``nn.Conv1d`` would."""
        self.conv.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        # Nested, so that TorchScript (which drops the outer branch) never compiles the fx check.
        if not torch.jit.is_scripting():  # noqa: SIM102
            if not isinstance(x, fx.Proxy):  # torch.fx records the checked call below as one node
                out = self._eager_call(x, None, None, "none", self.inplace)
                if out is not None:
                    return out
        return _checked_eca(
            x, self.conv.weight, self.channels, self.padding, self.pooling, self.gate, self.channel_dim, self.inplace
        )

    @torch.jit.unused  # TorchScript sees the plain operators
    def _kernel_weight(self) -> Tensor:
        """``self.conv.weight``, read from the modules' dictionaries where it is a plain parameter:
        ``nn.Module``'s attribute lookups of a submodule and a parameter cost about a microsecond
        per call, host time that a GPU waits for. A parametrized kernel is read as an attribute."""
        weight = self._modules["conv"]._parameters.get("weight")
        return self.conv.weight if weight is None else weight

    @torch.jit.unused  # TorchScript sees the plain operators
    def _eager_call(
        self,
        x: Tensor,
        identity: Tensor | None,
        descriptor: Tensor | None,
        activation: str,
        inplace: bool,
        norm: FrozenNorm | None = None,
    ) -> Tensor | None:
        """:func:`ecanet.ops.eager_call` with this layer's kernel and options, or ``None``."""
        return eager_call(
            x,
            self._kernel_weight(),
            identity,
            descriptor,
            activation,
            inplace,
            self.padding,
            self.pooling,
            self.gate,
            self.channel_dim,
            self.channels,
            norm,
        )

    def residual(
        self,
        x: Tensor,
        identity: Tensor,
        activation: str = "relu",
        inplace: bool = True,
        descriptor: Tensor | None = None,
    ) -> Tensor:
        """The residual-block tail ``activation(self(x) + identity)`` as one fused call.

        Blocks call this instead of ``relu(eca(x) + identity)`` so that the rescale, the addition
        and the activation touch the activation memory once (see
        :func:`ecanet.functional.eca_residual`).

        ``x`` is the branch's temporary output, so by default the result is written into ``x``'s
        memory, as a plain block's ``out += identity`` does: at inference always, while training
        on the fast path when ``x`` is an intermediate float32 or float64 result (the fused
        backward then recovers ``x * gate`` from the output and the shortcut, which a block keeps
        alive anyway; half types keep ``x``, whose product the rounded output would lose); else
        the result is a new tensor. Pass ``inplace=False`` to keep ``x`` intact.

        While the layer has forward hooks (its own or global ones), it runs as a module and the
        shortcut and activation follow as separate operations, so the hooks see its input and
        output (and may replace the output) as in ``activation(self(x) + identity)``.

        Args:
            x: the residual branch's output.
            identity: the shortcut, same shape as ``x``.
            activation: ``"relu"`` or ``"none"``.
            inplace: allow writing the result into ``x`` (see above). Default: ``True``.
            descriptor: ``x``'s pooled mean, when the caller has it more cheaply than by reading
                ``x`` (see :func:`ecanet.functional.eca_residual`). Default: ``None``.

        Example:
            >>> eca = ECA(64)
            >>> x, identity = torch.randn(2, 64, 8, 8), torch.randn(2, 64, 8, 8)
            >>> torch.allclose(eca.residual(x, identity, inplace=False), torch.relu(eca(x) + identity), atol=1e-6)
            True
        """
        # Nested, so that TorchScript (which drops the outer branch) never compiles the fx check.
        if not torch.jit.is_scripting():  # noqa: SIM102
            if not isinstance(x, fx.Proxy):  # torch.fx records the checked call below as one node
                if has_forward_hooks(self):
                    F_eca._check_choice("activation", activation, ["relu", "none"])
                    out = self(x) + identity
                    return torch.relu(out) if activation == "relu" else out
                out = self._eager_call(x, identity, descriptor, activation, inplace)
                if out is not None:
                    return out
        return _checked_eca_residual(
            x,
            self.conv.weight,
            identity,
            self.channels,
            activation,
            self.padding,
            self.pooling,
            self.gate,
            self.channel_dim,
            inplace,
            descriptor,
        )

    def residual_after_norm(
        self,
        y: Tensor,
        norm: nn.Module,
        identity: Tensor,
        activation: str = "relu",
        inplace: bool = True,
        descriptor: Tensor | None = None,
    ) -> Tensor:
        """``self.residual(norm(y), identity, ...)``, the tail of a block whose branch ends in ``norm``.

        On CUDA tensors with grad mode off, an eval-mode ``nn.BatchNorm2d`` (running statistics,
        affine) is applied inside ECA's rescale once a call like this one has run, so the block
        spends no launch and no pass over memory on it (see :mod:`ecanet.ops.frozen_norm`); the
        result is then written into ``y``'s memory (``inplace``). Everywhere else, and whenever
        forward hooks would see ``norm`` or this layer run, ``norm`` runs as a module first (so
        torch.fx records it as a module call) and then :meth:`residual`. Not for TorchScript.

        Args:
            y: the norm's input (the branch's last convolution's output).
            norm: the branch's last normalization.
            identity, activation, inplace: as for :meth:`residual`.
            descriptor: ``norm(y)``'s pooled mean, if the caller has it (see :meth:`residual`).

        Example:
            >>> eca, norm = ECA(64), nn.BatchNorm2d(64).eval()
            >>> y, identity = torch.randn(2, 64, 8, 8), torch.randn(2, 64, 8, 8)
            >>> out = eca.residual_after_norm(y, norm, identity, inplace=False)
            >>> torch.allclose(out, eca.residual(norm(y), identity, inplace=False))
            True
        """
        frozen = _foldable_norm(y, norm) if descriptor is None else None
        if frozen is not None and not has_forward_hooks(self):
            out = self._eager_call(y, identity, None, activation, inplace, frozen)
            if out is not None:
                return out
        return self.residual(norm(y), identity, activation, inplace, descriptor)

    def after_norm(self, y: Tensor, norm: nn.Module) -> Tensor:
        """``self(norm(y))``: ECA after the last normalization of a block without a shortcut.

        As in :meth:`residual_after_norm`, on CUDA tensors with grad mode off an eval-mode
        ``nn.BatchNorm2d`` is applied inside ECA's rescale once a call like this one has run, into
        a new tensor (an ``inplace`` layer writes into ``norm``'s output, which then does not exist,
        and never into ``y``); everywhere else, and whenever forward hooks would see ``norm`` or
        this layer run, both run as modules. Not for TorchScript.

        Args:
            y: the norm's input (the block's last convolution's output).
            norm: the block's last normalization (any module: others than a BatchNorm just run).

        Example:
            >>> eca, norm = ECA(64), nn.BatchNorm2d(64).eval()
            >>> y = torch.randn(2, 64, 8, 8)
            >>> torch.allclose(eca.after_norm(y, norm), eca(norm(y)))
            True
        """
        frozen = _foldable_norm(y, norm)  # None at once off the GPU's route
        if frozen is not None and not has_forward_hooks(self):
            out = self._eager_call(y, None, None, "none", False, frozen)
            if out is not None:
                return out
        return self(norm(y))

    def __repr__(self) -> str:
        # One line: the kernel holder is an implementation detail of the state-dict layout.
        return f"{self._get_name()}({self.extra_repr()})"

    def extra_repr(self) -> str:
        parts = [] if self.channels is None else [str(self.channels)]
        parts.append(f"k={self.kernel_size}")
        parts += [f"padding={self.padding}", f"pooling={self.pooling}", f"gate={self.gate}"]
        if not self.shared:
            parts.append("shared=False")
        if self.channel_dim != 1:
            parts.append(f"channel_dim={self.channel_dim}")
        if self.inplace:
            parts.append("inplace=True")
        return ", ".join(parts)

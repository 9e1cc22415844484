"""CBAM (Woo et al., ECCV 2018): channel then spatial attention, a comparison point of the ECA paper."""

import torch
from torch import Tensor, fx, nn

from ecanet.layers.se import BottleneckExcitation, bottleneck_mlp, checked_descriptor, rescale_channels

__all__ = ["CBAM"]

_CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}

fx.wrap("rescale_channels")  # one call in a traced graph here too (see ecanet.layers.se)


@fx.wrap  # it branches on the input's rank and shape, which a symbolic trace does not know
def _checked_pools(x: Tensor, spatial_dims: int, channels: int, channel_dim: int) -> tuple[Tensor, Tensor]:
    """The average and the maximum of each channel of ``x`` over its positions, ``(N, C)`` each,
    after checking that ``x`` has the rank and channels the layer was built for."""
    if x.dim() != spatial_dims + 2:
        raise ValueError(
            f"CBAM was built for {spatial_dims} spatial dims (spatial_dims), so it expects "
            f"{spatial_dims + 2}-dim inputs, got shape {list(x.shape)}"
        )
    average = checked_descriptor(x, channels, channel_dim, "CBAM")
    cdim = 1 if channel_dim == 1 else x.dim() - 1
    positions: list[int] = []
    for d in range(1, x.dim()):  # a loop: TorchScript compiles no comprehension with a condition
        if d != cdim:
            positions.append(d)
    return average, x.amax(dim=positions)


class CBAM(BottleneckExcitation):
    """Convolutional Block Attention Module: channel attention, then spatial attention.

    Channel branch: ``x = x * sigmoid(mlp(avgpool(x)) + mlp(maxpool(x)))`` with SE's bottleneck MLP
    (``fc1``, ``fc2``, bias-free as in the ECA paper's counts) shared by both descriptors. Spatial
    branch: the channel-wise mean and max maps, stacked, go through one ``k x k`` convolution to a
    single gate map: ``x = x * sigmoid(spatial([mean_c(x), max_c(x)]))``.

    The original follows the spatial convolution with a BatchNorm; at inference that is an affine
    map, so ``spatial`` is a convolution with a bias instead (same function class, 1 parameter
    fewer, nothing to keep in sync between train and eval).

    Args:
        channels: number of channels C.
        reduction: ratio of C to the MLP's hidden width. Default: 16.
        spatial_kernel_size: odd size of the spatial convolution. Default: 7.
        spatial_dims: number of spatial dims of the inputs (1, 2 or 3); picks the convolution.
            Default: 2.
        min_channels: smallest hidden width of the MLP. Default: 1.
        channel_dim: ``1`` for ``(N, C, *spatial)``, ``-1`` for channels-last ``(N, *spatial, C)``.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Shape:
        - Input: ``(N, C, *spatial)`` or ``(N, *spatial, C)`` with ``spatial_dims`` spatial dims.
        - Output: same shape and dtype as the input.

    Example:
        >>> cbam = CBAM(64)
        >>> cbam
        CBAM(64, reduction=16, hidden=4, spatial_kernel_size=7, spatial_dims=2)
        >>> cbam(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
        >>> CBAM(32, spatial_dims=3)(torch.randn(1, 32, 4, 6, 6)).shape  # video
        torch.Size([1, 32, 4, 6, 6])
    """

    channels: int
    reduction: int
    spatial_kernel_size: int
    spatial_dims: int
    channel_dim: int

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        *,
        spatial_kernel_size: int = 7,
        spatial_dims: int = 2,
        min_channels: int = 1,
        channel_dim: int = 1,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if (
            isinstance(spatial_kernel_size, bool)
            or not isinstance(spatial_kernel_size, int)
            or spatial_kernel_size < 1
            or spatial_kernel_size % 2 == 0
        ):
            raise ValueError(f"spatial_kernel_size must be a positive odd int, got {spatial_kernel_size!r}")
        if spatial_dims not in _CONVS:
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
        if channel_dim not in (1, -1):
            raise ValueError(f"channel_dim must be 1 (N, C, *spatial) or -1 (N, *spatial, C), got {channel_dim!r}")
        self.channels = channels
        self.reduction = reduction
        self.spatial_kernel_size = spatial_kernel_size
        self.spatial_dims = spatial_dims
        self.channel_dim = channel_dim
        self.fc1, self.fc2 = bottleneck_mlp(channels, reduction, min_channels, device=device, dtype=dtype)
        self.spatial = _CONVS[spatial_dims](
            2, 1, spatial_kernel_size, padding=spatial_kernel_size // 2, device=device, dtype=dtype
        )

    def reset_parameters(self) -> None:
        """Re-initialises every layer with its PyTorch default."""
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()
        self.spatial.reset_parameters()

    def channel_logits(self, x: Tensor) -> Tensor:
        """The channel branch's gate logits ``mlp(avgpool(x)) + mlp(maxpool(x))``, ``(N, C)``, after
        checking that ``x`` has the rank and channels the layer was built for.

        Example:
            >>> CBAM(16).channel_logits(torch.randn(2, 16, 5, 5)).shape
            torch.Size([2, 16])
        """
        pools = _checked_pools(x, self.spatial_dims, self.channels, self.channel_dim)
        # Indexed: a traced graph records the tuple as one value.
        return self.excitation(pools[0]) + self.excitation(pools[1])

    def forward(self, x: Tensor) -> Tensor:
        x = rescale_channels(x, torch.sigmoid(self.channel_logits(x)), self.channel_dim)
        # The spatial branch reduces over the channel axis: dim 1 or -1, whatever the rank.
        cdim = self.channel_dim
        maps = torch.cat([x.mean(dim=cdim, keepdim=True), x.amax(dim=cdim, keepdim=True)], dim=cdim)
        if cdim == -1:
            maps = maps.movedim(-1, 1)
        gate = torch.sigmoid(self.spatial(maps.to(self.spatial.weight.dtype))).to(x.dtype)
        if cdim == -1:
            gate = gate.movedim(1, -1)
        return x * gate

    def extra_repr(self) -> str:
        parts = [
            str(self.channels),
            f"reduction={self.reduction}",
            f"hidden={self.fc1.out_features}",
            f"spatial_kernel_size={self.spatial_kernel_size}",
            f"spatial_dims={self.spatial_dims}",
        ]
        if self.channel_dim != 1:
            parts.append(f"channel_dim={self.channel_dim}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"{self._get_name()}({self.extra_repr()})"

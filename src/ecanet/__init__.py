"""ecanet: Efficient Channel Attention (ECA-Net, CVPR 2020) for PyTorch, done properly.

Example:
    >>> import torch, ecanet
    >>> ecanet.eca_kernel_size(256)
    5
    >>> ecanet.ECA(256)(torch.randn(2, 256, 8, 8)).shape
    torch.Size([2, 256, 8, 8])
"""

from ecanet import functional
from ecanet.functional import eca_kernel_size
from ecanet.layers import CBAM, ECA, SE, create_attention

__version__ = "0.1.0"

__all__ = ["CBAM", "ECA", "SE", "__version__", "create_attention", "eca_kernel_size", "functional"]

"""ecanet: Efficient Channel Attention (ECA-Net, CVPR 2020) for PyTorch, done properly.

Example:
    >>> import torch, ecanet
    >>> ecanet.eca_kernel_size(256)
    5
    >>> ecanet.ECA(256)(torch.randn(2, 256, 8, 8)).shape
    torch.Size([2, 256, 8, 8])
"""

from ecanet import functional
from ecanet.data import DatasetInfo, load_dataset
from ecanet.experiments import CompareConfig, CompareResult, run_compare
from ecanet.explain import AttentionReport, explain_attention
from ecanet.export import ExportReport, export_model
from ecanet.functional import eca_kernel_size
from ecanet.layers import CBAM, ECA, SE, create_attention
from ecanet.models import create_model, list_models, load_official_checkpoint, profile_model
from ecanet.ops.second_derivatives import twice_differentiable
from ecanet.retrofit import RetrofitReport, add_eca, remove_eca
from ecanet.training import TrainConfig, TrainResult, train

__version__ = "0.1.0"

__all__ = [
    "CBAM",
    "ECA",
    "SE",
    "AttentionReport",
    "CompareConfig",
    "CompareResult",
    "DatasetInfo",
    "ExportReport",
    "RetrofitReport",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "add_eca",
    "create_attention",
    "create_model",
    "eca_kernel_size",
    "explain_attention",
    "export_model",
    "functional",
    "list_models",
    "load_dataset",
    "load_official_checkpoint",
    "profile_model",
    "remove_eca",
    "run_compare",
    "train",
    "twice_differentiable",
]

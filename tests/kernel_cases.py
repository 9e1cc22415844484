"""Inputs shared by the kernel checks run in fresh processes (``tests/ops/triton_kernel_checks.py``,
``tests/ops/training_node_checks.py``): the layouts they cover, tolerances per dtype, and random
tensors on the device the checks run on (``ECANET_TRITON_DEVICE``, default ``cpu``).

Imports torch only: the checks switch Triton's interpreter on before Triton is first imported.
"""

import os

import torch

DEVICE = os.environ.get("ECANET_TRITON_DEVICE", "cpu")

LAYOUTS = {
    "channels-first": ((2, 6, 3, 5), torch.contiguous_format, 1),
    "channels-last": ((2, 6, 3, 5), torch.channels_last, 1),
    "tokens": ((2, 7, 70), torch.contiguous_format, -1),
    "1d-long": ((1, 3, 300), torch.contiguous_format, 1),
    # Long rows with few (sample, channel block) pairs: the reductions split their positions, in
    # Triton's interpreter and on a GPU (at least 32 tiles: two parts of the GPU's shortest).
    "split-positions": ((2, 5, 8192), torch.contiguous_format, 1),
    "split-positions-channels-last": ((1, 40, 32, 32), torch.channels_last, 1),
    # Channels in several blocks per sample: the gate's taps and the kernel's partial sums cross them.
    "channel-blocks-channels-last": ((2, 600, 1, 3), torch.channels_last, 1),
}

TOLERANCES = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-10},
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.bfloat16: {"rtol": 2e-2, "atol": 2e-2},
    torch.float16: {"rtol": 2e-3, "atol": 2e-3},
}


def random_tensor(shape, dtype, memory_format=torch.contiguous_format):
    return torch.randn(shape, dtype=torch.float64).to(device=DEVICE, dtype=dtype, memory_format=memory_format)

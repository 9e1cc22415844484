"""``ecanet showcase``: a short tour of the ECA layer (kernel sizes, N-D inputs, parameters)."""

from __future__ import annotations

import argparse

import torch

from ecanet import ECA, eca_kernel_size

WIDTHS = (16, 32, 64, 96, 128, 256, 512, 1024, 2048, 4096)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("showcase", help="tour of the ECA layer on random data")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print("Adaptive kernel size k = |log2(C)/2 + 1/2|_odd (ties go up; min_size=3 is timm's rule)")
    print(f"{'C':>6} {'k':>3} {'k (min 3)':>10}")
    for channels in WIDTHS:
        print(f"{channels:>6} {eca_kernel_size(channels):>3} {eca_kernel_size(channels, min_size=3):>10}")
    torch.manual_seed(0)
    examples = (
        ("1-D signal", ECA(64), torch.randn(4, 64, 100)),
        ("2-D image", ECA(256), torch.randn(4, 256, 14, 14)),
        ("3-D video", ECA(128), torch.randn(2, 128, 4, 8, 8)),
        ("tokens (N, L, C)", ECA(384, channel_dim=-1), torch.randn(2, 196, 384)),
        ("ECA-NS (per-channel)", ECA(256, shared=False), torch.randn(4, 256, 7, 7)),
    )
    print()
    print(f"{'input':<22} {'shape':<22} {'layer':<60} {'params':>6}")
    for name, layer, x in examples:
        out = layer(x)
        assert out.shape == x.shape
        params = sum(p.numel() for p in layer.parameters())
        print(f"{name:<22} {list(x.shape)!s:<22} {layer.extra_repr():<60} {params:>6}")
    return 0

"""Hand-written networks for the retrofit tests: a plain CNN and a residual CNN, both tiny."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class PlainCNN(nn.Module):
    """VGG-style: conv-BN-ReLU stages, no residual connection, a BatchNorm1d in the head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),  # narrower than min_channels=16
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(32), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-dropout-conv-BN on the branch; identity or a conv-BN projection as the shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.drop = nn.Dropout(0.1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.drop(torch.relu(self.bn1(self.conv1(x))))))
        out += self.shortcut(x)
        return torch.relu(out)


class ResidualCNN(nn.Module):
    """Stem, residual blocks ``block1``, ``block2``, ... of the given widths, classifier.

    A block that changes the width halves the resolution and has a projection shortcut; the
    default is one identity block (16) and one projection block (32).
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = len(widths)
        for index, (before, width) in enumerate(zip((16, *widths), widths, strict=False), 1):
            setattr(self, f"block{index}", ResidualBlock(before, width, stride=1 if before == width else 2))
        self.fc = nn.Linear(widths[-1], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for index in range(1, self.blocks + 1):
            x = getattr(self, f"block{index}")(x)
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture
def plain_cnn() -> PlainCNN:
    torch.manual_seed(0)
    return PlainCNN()


@pytest.fixture
def residual_cnn() -> ResidualCNN:
    torch.manual_seed(0)
    return ResidualCNN()


@pytest.fixture
def residual_cnn_type() -> type[ResidualCNN]:
    return ResidualCNN

"""The models both benchmarks measure, so their figures compare like with like.

A small ResNet (CIFAR-sized, 16/32/64 channels, two residual blocks per stage,
BatchNorm in training mode) at batch 32 and a 2-layer ``TransformerEncoder``
(d_model 128, 4 heads, dropout on) at batch 16.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """ResNet-14-ish for 32x32 images: 16/32/64 channels, two blocks per stage."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, c_in = [], 16
        for c_out, stride in ((16, 1), (16, 1), (32, 2), (32, 1), (64, 2), (64, 1)):
            blocks.append(ResidualBlock(c_in, c_out, stride))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class SmallTransformer(nn.Module):
    """Two TransformerEncoder layers (d_model 128, 4 heads, dropout) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(128, 4, 256, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


# name -> (model class, input maker taking the batch size, batch size)
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[int], torch.Tensor], int]] = {
    "small ResNet": (SmallResNet, lambda b: torch.randn(b, 3, 32, 32), 32),
    "2-layer TransformerEncoder": (SmallTransformer, lambda b: torch.randn(b, 64, 128), 16),
}


def train_step(model: nn.Module, x: torch.Tensor) -> None:
    """One training step's work: forward, a loss, backward into the parameters."""
    model.zero_grad(set_to_none=True)
    model(x).square().mean().backward()


def timed(fn: Callable[[], object], device: torch.device | None = None) -> float:
    """Wall time of one call, synchronizing CUDA around it."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start

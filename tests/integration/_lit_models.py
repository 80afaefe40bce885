"""The bundled demo network (tools/demo.py) as a LightningModule.

Shared by the training tests and the script they launch under DDP, which
imports this file by path.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

_TOOLS = str(Path(__file__).resolve().parents[2] / "tools")
if _TOOLS not in sys.path:
    sys.path.insert(0, _TOOLS)
from demo import SmallNet  # noqa: E402


def lit_small_net_class(pl):
    """A ``pl.LightningModule`` around ``SmallNet(buggy)`` with a cross-entropy training step."""

    class LitSmallNet(pl.LightningModule):
        def __init__(self, buggy: bool):
            super().__init__()
            self.net = SmallNet(buggy)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    return LitSmallNet

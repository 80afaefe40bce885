"""Run both checks on a small buggy model and on its fixed twin, and print what they say.

    hatch run demo

The buggy model has the two silent mistakes these checks exist for: a
convolution with a bias feeding a BatchNorm (the bias is cancelled), and a
flatten that reshapes across the batch (``view(channels, -1)`` instead of
``view(batch, -1)``), so every sample's prediction depends on every other
sample.  The fixed twin differs in exactly those two lines.
"""

from __future__ import annotations

import torch
from torch import nn

from batch_mix_verify import BatchGradientVerification
from bn_verify import BatchNormVerification


class SmallNet(nn.Module):
    """A four-layer image classifier; ``buggy=True`` adds both mistakes."""

    def __init__(self, buggy: bool) -> None:
        super().__init__()
        self.buggy = buggy
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=buggy)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(8 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = self.pool(x)
        if self.buggy:
            # Wrong: moves the channel axis first, then flattens, mixing samples.
            x = x.permute(1, 0, 2, 3).reshape(x.shape[0], -1)
        else:
            x = x.flatten(1)
        return self.head(x)


def run(name: str, model: nn.Module, batch: torch.Tensor) -> bool:
    """Run both checks on ``model`` and print their verdicts; return True when both pass."""
    print(f"=== {name} ===")
    bn = BatchNormVerification(model)
    bn_ok = bn.check(input_array=batch)
    print(f"bn-verify: {'OK, no bias is cancelled by a normalization' if bn_ok else 'FOUND'}")
    if not bn_ok:
        print(bn.report)
    mix = BatchGradientVerification(model)
    mix_ok = mix.check(input_array=batch)
    print(f"batch-mix-verify: {'OK, no sample depends on another sample' if mix_ok else 'FOUND'}")
    if not mix_ok:
        print(mix.report)
    print()
    return bn_ok and mix_ok


def main() -> int:
    torch.manual_seed(0)
    batch = torch.randn(8, 3, 16, 16)
    buggy_ok = run("buggy model", SmallNet(buggy=True), batch)
    fixed_ok = run("fixed twin", SmallNet(buggy=False), batch)
    expected = (not buggy_ok) and fixed_ok
    print("Both checks behaved as expected." if expected else "UNEXPECTED: see the output above.")
    return 0 if expected else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark bn-verify against one training step of the same model and batch.

    python tools/bench_bn_verify.py [--reps 9] [--device cpu|cuda]

In one process, interleaved, the median wall time of
  * one training step: forward, a loss, backward into the parameters;
  * one check: ``BatchNormVerification(model).check(x)``;
and the ratio check / training step (the goal: at most 1.00x).  Models: a small
ResNet (CIFAR-sized, two blocks per stage) at batch 32 and a 2-layer
``TransformerEncoder`` (d_model 128, 4 heads) at batch 16, both in training mode.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from bn_verify import BatchNormVerification


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.down(x))


def small_resnet() -> nn.Module:
    """16/32/64 channels, two residual blocks per stage, 32x32 inputs."""
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    c_in = 16
    for c_out, stride in ((16, 1), (16, 1), (32, 2), (32, 1), (64, 2), (64, 1)):
        layers.append(ResidualBlock(c_in, c_out, stride))
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def small_transformer() -> nn.Module:
    layer = nn.TransformerEncoderLayer(128, 4, 256, dropout=0.1, batch_first=True)
    return nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Linear(128, 10))


CASES = {
    "small ResNet": (small_resnet, (32, 3, 32, 32)),
    "2-layer TransformerEncoder": (small_transformer, (16, 64, 128)),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def measure(build, shape: tuple[int, ...], reps: int, device: torch.device) -> tuple[float, float, bool]:
    torch.manual_seed(0)
    model = build().to(device).train()
    x = torch.randn(shape, device=device)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()

    def check() -> bool:
        return BatchNormVerification(model).check(x)

    ok = check()
    train_step()  # warm-up both
    train, checks = [], []
    for _ in range(reps):
        train.append(_timed(train_step, device))
        checks.append(_timed(check, device))
    return statistics.median(train), statistics.median(checks), ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, median of {args.reps}")
    print(f"{'model':<28} {'batch':>5} {'training step':>14} {'check':>10} {'check/step':>11}")
    for name, (build, shape) in CASES.items():
        train, check, ok = measure(build, shape, args.reps, device)
        status = "" if ok else "  (found pairs)"
        print(f"{name:<28} {shape[0]:>5} {train * 1e3:>11.1f} ms {check * 1e3:>7.1f} ms {check / train:>10.2f}x{status}")


if __name__ == "__main__":
    main()

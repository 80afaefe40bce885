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

import torch

from _bench_models import CASES, timed, train_step
from bn_verify import BatchNormVerification


def measure(build, make_input, batch: int, reps: int, device: torch.device) -> tuple[float, float, bool]:
    torch.manual_seed(0)
    model = build().to(device).train()
    x = make_input(batch).to(device)

    def check() -> bool:
        return BatchNormVerification(model).check(x)

    ok = check()
    train_step(model, x)  # warm-up both
    train, checks = [], []
    for _ in range(reps):
        train.append(timed(lambda: train_step(model, x), device))
        checks.append(timed(check, device))
    return statistics.median(train), statistics.median(checks), ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, median of {args.reps}")
    print(f"{'model':<28} {'batch':>5} {'training step':>14} {'check':>10} {'check/step':>11}")
    for name, (build, make_input, batch) in CASES.items():
        train, check, ok = measure(build, make_input, batch, args.reps, device)
        status = "" if ok else "  (found pairs)"
        print(f"{name:<28} {batch:>5} {train * 1e3:>11.1f} ms {check * 1e3:>7.1f} ms {check / train:>10.2f}x{status}")


if __name__ == "__main__":
    main()

"""Benchmark batch-mix-verify against one training step of the same model and batch.

    python tools/bench_batch_mix_verify.py [--reps 7] [--no-memory]

Time: in one process, interleaved round by round, the wall time of
  * one training step: forward, a loss, backward into the parameters;
  * the complete check: ``BatchGradientVerification(model).check(x)``;
  * the single-sample check: ``check(x, sample_idx=0)``;
  * samples one by one (the original tool run for every sample), once, for reference.
Each round's check time is divided by the same round's training step, and the
median of those ratios is printed (robust to a machine whose speed drifts).
Models: a small ResNet (CIFAR-sized, BatchNorm in training mode) at batch 32
and a 2-layer TransformerEncoder (dropout on) at batch 16.

Memory, two ways, each in a fresh subprocess per measurement (the model
built, the operation run once to warm up, then measured on a second run):
  * tensors: the peak of the bytes held by tensor storages the operation
    allocates (forward activations, autograd buffers, gradients, copies),
    tracked with a ``TorchDispatchMode`` that sees every aten call, backward
    ones included, and weak references that see each storage freed.  On
    CUDA, ``torch.cuda.max_memory_allocated`` above the start is used instead.
  * RSS (Linux): the kernel's peak resident set size, reset just before the
    run through ``/proc/self/clear_refs``, minus the resident size before it.
    It also counts allocator slack, and misses memory the allocator kept from
    the warm-up run, so it is the noisier of the two.
CPU torch allocations are invisible to ``tracemalloc``, hence neither uses it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdRef

from _bench_models import CASES, timed, train_step
from batch_mix_verify import BatchGradientVerification


def _operation(name: str, model: nn.Module, x: torch.Tensor) -> None:
    if name == "train":
        train_step(model, x)
    elif name == "check":
        assert BatchGradientVerification(model).check(x)
    elif name == "single":
        assert BatchGradientVerification(model).check(x, sample_idx=0)
    else:
        raise ValueError(name)


def time_case(case: str, reps: int, one_by_one: bool) -> tuple[dict[str, float], dict[str, float]]:
    """Median times and median per-round ratios to the training step."""
    build, make_input, batch = CASES[case]
    torch.manual_seed(0)
    model, x = build().train(), make_input(batch)
    for name in ("train", "check", "single"):  # warm-up
        _operation(name, model, x)
    times: dict[str, list[float]] = {"train": [], "check": [], "single": []}
    for _ in range(reps):
        for name in times:
            times[name].append(timed(lambda: _operation(name, model, x)))
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = {name: statistics.median(a / b for a, b in zip(values, times["train"])) for name, values in times.items()}
    if one_by_one:
        verification = BatchGradientVerification(model)
        train = timed(lambda: _operation("train", model, x))
        medians["one_by_one"] = timed(lambda: [verification.check(x, sample_idx=i) for i in range(batch)])
        ratios["one_by_one"] = medians["one_by_one"] / statistics.median([train, medians["train"]])
    return medians, ratios


def _resident_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(field)


class _TensorPeak(TorchDispatchMode):
    """Peak bytes of the tensor storages allocated while the mode is active (freed ones subtracted)."""

    def __init__(self, existing: list[torch.Tensor]) -> None:
        super().__init__()
        self.known = {WeakIdRef(t.untyped_storage()) for t in existing}
        self.live: dict[WeakIdRef, int] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and not tensor.is_meta:
                self._track(tensor.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = WeakIdRef(storage)
        if key in self.known or key in self.live:
            return
        size = storage.nbytes()
        self.live[WeakIdRef(storage, self._freed)] = size
        self.current += size
        self.peak = max(self.peak, self.current)

    def _freed(self, ref: WeakIdRef) -> None:
        self.current -= self.live.pop(ref, 0)


def _peak_child(case: str, name: str, method: str) -> None:
    """Runs in a subprocess: print the peak memory (bytes) of one operation above its start."""
    build, make_input, batch = CASES[case]
    torch.manual_seed(0)
    model = build().train()
    x = make_input(batch)
    if torch.cuda.is_available():
        model, x = model.cuda(), x.cuda()
        _operation(name, model, x)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _operation(name, model, x)
        print(json.dumps(torch.cuda.max_memory_allocated() - base))
        return
    _operation(name, model, x)
    if method == "tensors":
        existing = [x, *model.parameters(), *model.buffers(), *(p.grad for p in model.parameters() if p.grad is not None)]
        with _TensorPeak(existing) as tracker:
            _operation(name, model, x)
        print(json.dumps(tracker.peak))
        return
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current VmRSS
        before = _resident_kib("VmRSS")
        _operation(name, model, x)
        print(json.dumps((_resident_kib("VmHWM") - before) * 1024))
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        _operation(name, model, x)
        print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024))


def peak_memory(case: str, name: str, method: str, runs: int) -> float:
    values = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, __file__, "--child", case, name, method], check=True, capture_output=True, text=True
        )
        values.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--memory-runs", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-one-by-one", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _peak_child(*args.child)
        return
    device = "CUDA" if torch.cuda.is_available() else "CPU"
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, {args.reps} rounds")
    labels = {
        "train": "training step (forward + backward)",
        "check": "complete check",
        "single": "single-sample check (sample_idx=0)",
        "one_by_one": "samples one by one (B checks)",
    }
    for case in CASES:
        batch = CASES[case][2]
        medians, ratios = time_case(case, args.reps, not args.no_one_by_one)
        print(f"\n{case} (batch {batch})                      time     ratio")
        for name, label in labels.items():
            if name in medians:
                print(f"  {label:36s} {medians[name] * 1e3:8.1f} ms  {ratios[name]:5.2f}x")
        if not args.no_memory:
            methods = ("tensors",) if torch.cuda.is_available() else ("tensors", "rss")
            for method in methods:
                peaks = {name: peak_memory(case, name, method, args.memory_runs) for name in ("train", "check", "single")}
                print(f"  peak memory ({method:7s})              " + ", ".join(
                    f"{name} {peaks[name] / 2**20:.1f} MiB ({peaks[name] / peaks['train']:.2f}x)" for name in peaks))


if __name__ == "__main__":
    main()

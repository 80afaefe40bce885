"""Regressions found in review: integer-domain mixing, seed-independent NaN gradients, float16 underflow."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from batch_mix_verify import BatchGradientVerification


def _all_pairs(size: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(size) for j in range(size) if i != j]


class IdsModel(nn.Module):
    """An embedding model that may rearrange its token ids before the lookup (where no gradient flows)."""

    def __init__(self, rearrange, vocab: int = 20) -> None:
        super().__init__()
        self.rearrange = rearrange
        self.embedding = nn.Embedding(vocab, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(self.rearrange(ids)))


def _edit_in_place_then_flip(ids: torch.Tensor) -> torch.Tensor:
    ids[ids > 15] = 0
    ids.clamp_(max=14)
    return ids.flip(0)


def _edit_in_place(ids: torch.Tensor) -> torch.Tensor:
    ids[ids > 15] = 0
    return ids.clamp_(max=14)


def _random_noise(ids: torch.Tensor) -> torch.Tensor:
    return (ids + torch.randint_like(ids, 0, 2)) % 20


class SumOfIdsModel(nn.Module):
    """Adds the embedding of the batch's summed ids: a tensor without a batch axis that depends on every sample."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(80, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids) + self.embedding(ids.sum(0))


@pytest.mark.parametrize(
    ("model", "ids", "expected"),
    [
        (IdsModel(lambda ids: ids.flip(0)), torch.arange(24).reshape(4, 6) % 20, [(0, 3), (1, 2), (2, 1), (3, 0)]),
        (IdsModel(lambda ids: ids.roll(1, 0)), torch.arange(24).reshape(4, 6) % 20, [(0, 3), (1, 0), (2, 1), (3, 2)]),
        (IdsModel(lambda ids: ids.cumsum(0) % 20), torch.arange(12).reshape(3, 4), [(1, 0), (2, 0), (2, 1)]),
        (IdsModel(lambda ids: ids.t()), torch.arange(16).reshape(4, 4), _all_pairs(4)),
        (IdsModel(lambda ids: ids.reshape(ids.shape[1], ids.shape[0]).t()), torch.arange(8).reshape(2, 4), _all_pairs(2)),
        (IdsModel(lambda ids: ids.roll(1, 0), vocab=5), torch.zeros(3, 4, dtype=torch.long), [(0, 2), (1, 0), (2, 1)]),
        (IdsModel(lambda ids: ids.roll(1, 0), vocab=5), torch.full((3, 4), 4), [(0, 2), (1, 0), (2, 1)]),
        (IdsModel(_edit_in_place_then_flip), torch.arange(24).reshape(4, 6) % 20, [(0, 3), (1, 2), (2, 1), (3, 0)]),
        (SumOfIdsModel(), torch.arange(15).reshape(3, 5), _all_pairs(3)),
    ],
    ids=["flip", "roll", "cumsum", "transpose-square", "wrong-view", "all-zero-ids", "all-max-ids", "in-place-then-flip",
         "sum-without-batch-axis"],
)
def test_mixing_of_integer_ids_before_the_embedding_is_found(model, ids, expected):
    verification = BatchGradientVerification(model)
    assert verification.check(ids) is False
    assert verification.report.pairs == expected


@pytest.mark.parametrize(
    "model",
    [IdsModel(lambda ids: ids), IdsModel(_edit_in_place), IdsModel(_random_noise), IdsModel(lambda ids: ids.t().t())],
    ids=["plain", "edited-in-place", "random-noise-on-ids", "transposed-back"],
)
def test_per_sample_integer_pipelines_are_clean(model):
    ids = torch.arange(24).reshape(4, 6) % 20
    before = ids.clone()
    assert BatchGradientVerification(model).check(ids) is True
    assert torch.equal(ids, before)


def test_integer_mixing_is_found_with_batch_dim_1_and_a_single_sample():
    model = IdsModel(lambda ids: ids.flip(1))  # (T, B) ids, batch flipped
    ids = torch.arange(15).reshape(5, 3)
    verification = BatchGradientVerification(model)
    assert verification.check(ids, batch_dim=1) is False
    assert verification.report.pairs == [(0, 2), (2, 0)]
    assert verification.check(ids, batch_dim=1, sample_idx=2) is False
    assert verification.report.pairs == [(2, 0)]


class Elementwise(nn.Module):
    def __init__(self, fn, leak: float = 0.0) -> None:
        super().__init__()
        self.fn = fn
        self.leak = leak

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fn(x)
        return y + self.leak * y.nan_to_num().sum(0) if self.leak else y


def _with(x: torch.Tensor, row: int, value: float) -> torch.Tensor:
    x = x.clone()
    x[row] = value
    return x


@pytest.mark.parametrize(
    ("fn", "x"),
    [
        (torch.tanh, _with(torch.rand(4, 3), 2, float("nan"))),
        (lambda x: x / x.norm(dim=1, keepdim=True), _with(torch.rand(4, 3) + 0.1, 2, 0.0)),
        (lambda x: torch.where(x > 0, x.sqrt(), torch.zeros_like(x)), torch.linspace(-1, 1, 12).reshape(4, 3)),
    ],
    ids=["nan-sample", "normalize-zero-row", "where-sqrt"],
)
def test_nan_gradients_that_do_not_depend_on_the_seed_are_not_mixing(fn, x):
    assert BatchGradientVerification(Elementwise(fn)).check(x) is True


def test_a_leak_next_to_seed_independent_nan_gradients_is_still_found():
    x = torch.linspace(-1, 1, 12).reshape(4, 3)  # samples 0 and 1 are <= 0: sqrt's gradient is 0 * inf there
    model = Elementwise(lambda x: torch.where(x > 0, x.sqrt(), torch.zeros_like(x)), leak=1e-7)
    verification = BatchGradientVerification(model)
    assert verification.check(x) is False
    # Only samples 2 and 3 reach the sum through a nonzero derivative.
    assert verification.report.pairs == [(0, 2), (0, 3), (1, 2), (1, 3), (2, 3), (3, 2)]


class HalfLeak(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3).half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y + 1e-7 * y.mean(0)


@pytest.mark.parametrize("size", [4, 33], ids=["B4", "B33"])
def test_float16_leak_scaled_by_1e_minus_7_is_found_for_every_pair(size):
    torch.manual_seed(0)
    model = HalfLeak()
    verification = BatchGradientVerification(model)
    assert verification.check(torch.randn(size, 3, dtype=torch.float16)) is False
    assert verification.report.pairs == _all_pairs(size)

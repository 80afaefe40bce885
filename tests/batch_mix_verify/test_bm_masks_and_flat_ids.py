"""Regressions: bool padding masks edited in place, token ids flattened before the lookup, masks without the batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from batch_mix_verify import BatchGradientVerification, BatchGradientVerificationError


def _padding_mask(batch: int = 4, length: int = 6) -> torch.Tensor:
    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask[:, -2:] = True
    mask[0, 2:] = True
    return mask


class PaddedEncoder(nn.Module):
    """A stock batch-first encoder given a bool padding mask; ``leak`` adds the batch mean of its output."""

    def __init__(self, leak: bool = False, layers: int = 0) -> None:
        super().__init__()
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers else layer
        self.leak = leak

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(x, src_key_padding_mask=mask)
        return out + out.mean(0, keepdim=True) if self.leak else out


class KeyPaddingAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(6, 2, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x, key_padding_mask=mask)[0]


class MaskBiasInPlace(nn.Module):
    """Turns a bool mask into an additive bias with an in-place ``masked_fill_``; may roll the bias over the batch."""

    def __init__(self, roll: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)
        self.roll = roll

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bias = torch.zeros_like(mask, dtype=torch.float).masked_fill_(mask, -1e4)
        bias = bias.roll(1, 0) if self.roll else bias
        return self.linear(x) + bias.unsqueeze(-1)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (PaddedEncoder(), True),
        (PaddedEncoder(layers=1), True),
        (PaddedEncoder(leak=True), False),
        (PaddedEncoder(leak=True, layers=1), False),
        (MaskBiasInPlace(), True),
        (MaskBiasInPlace(roll=True), False),
    ],
    ids=["encoder-layer", "encoder", "encoder-layer-mixing", "encoder-mixing", "masked-fill-bias", "masked-fill-bias-rolled"],
)
def test_bool_padding_masks_turned_into_floats_in_place_are_checked(model, expected):
    x = torch.randn(4, 6, 8)
    assert BatchGradientVerification(model).check((x, _padding_mask())) is expected


def test_multihead_attention_with_a_bool_key_padding_mask_is_clean():
    x = torch.randn(4, 5, 6)
    assert BatchGradientVerification(KeyPaddingAttention()).check((x, _padding_mask(4, 5))) is True


class FlatIds(nn.Module):
    """Looks the ids up flattened to ``(B * T,)`` and views the result back; ``mix`` rolls the rows after."""

    def __init__(self, width: int, mix=None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(50, width)
        self.head = nn.Linear(width, 3)
        self.mix = mix

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        batch, length = ids.shape
        flat = self.embedding(ids.view(-1))
        if self.mix is not None:
            flat = self.mix(flat, batch, length)
        return self.head(flat.view(batch, length, -1)).mean(1)


def _ids(batch: int = 4, length: int = 5) -> torch.Tensor:
    return torch.arange(batch * length).reshape(batch, length) * 7 % 50


@pytest.mark.parametrize("width", [8, 4, 5], ids=["width-8", "width-equals-batch", "width-equals-length"])
@pytest.mark.parametrize("sample_idx", [None, 0, 3], ids=["all-pairs", "sample-0", "sample-3"])
def test_ids_flattened_before_the_embedding_are_clean(width, sample_idx):
    verification = BatchGradientVerification(FlatIds(width))
    assert verification.check(_ids(), sample_idx=sample_idx) is True


@pytest.mark.parametrize(
    ("mix", "expected"),
    [
        (lambda flat, b, t: flat.roll(t, 0), [(0, 3), (1, 0), (2, 1), (3, 2)]),
        (lambda flat, b, t: flat.flip(0), [(0, 3), (1, 2), (2, 1), (3, 0)]),
        (lambda flat, b, t: flat + flat.mean(0, keepdim=True), [(i, j) for i in range(4) for j in range(4) if i != j]),
    ],
    ids=["rolled-by-one-sample", "flipped", "mean-over-all-tokens"],
)
@pytest.mark.parametrize("width", [8, 4], ids=["width-8", "width-equals-batch"])
def test_mixing_after_a_flattened_lookup_is_found(mix, expected, width):
    verification = BatchGradientVerification(FlatIds(width, mix))
    assert verification.check(_ids()) is False
    assert verification.report.pairs == expected


@pytest.mark.parametrize(
    ("mix", "expected"),
    [
        (lambda ids: ids.view(-1).roll(5), [(0, 3), (1, 0), (2, 1), (3, 2)]),
        (lambda ids: ids.t().reshape(-1), [(i, j) for i in range(4) for j in range(4) if i != j]),
    ],
    ids=["flat-ids-rolled", "flat-transposed-ids"],
)
def test_mixing_of_ids_flattened_before_the_lookup_is_found(mix, expected):
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(50, 8)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.embedding(mix(ids)).view(ids.shape[0], -1)

    verification = BatchGradientVerification(Model())
    assert verification.check(_ids()) is False
    assert verification.report.pairs == expected


class IdsAndMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(50, 4)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids) * mask.sum()


class NestedWithMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 3)

    def forward(self, data: dict) -> torch.Tensor:
        return self.linear(data["x"][0]) + data["x"][1] * data["mask"].sum()


@pytest.mark.parametrize(
    ("model", "input_array"),
    [
        (IdsAndMask(), (_ids(4, 10), torch.ones(10, 10))),
        (NestedWithMask(), ({"x": [torch.randn(4, 3), torch.randn(4, 3)], "mask": torch.ones(2, 2)},)),
        (NestedWithMask(), ({"x": [torch.randn(4, 3), torch.randn(4, 3)], "mask": torch.ones(3, 3)},)),
    ],
    ids=["ids-with-square-float-mask", "mask-2x2", "mask-3x3"],
)
def test_tensors_without_the_batch_size_are_left_alone(model, input_array):
    mask = input_array[-1] if isinstance(input_array[-1], torch.Tensor) else input_array[0]["mask"]
    before = mask.clone()
    assert BatchGradientVerification(model).check(input_array) is True
    assert torch.equal(mask, before) and not mask.requires_grad


def test_a_second_batch_of_the_same_shape_but_another_size_is_an_error():
    class Two(nn.Module):
        def forward(self, a, b):
            return a * 2 + b.sum()

    with pytest.raises(BatchGradientVerificationError, match=r"batch sizes disagree.*\(4, 3\) has 4.*\(5, 3\) has 5"):
        BatchGradientVerification(Two()).check((torch.randn(4, 3), torch.randn(5, 3)))

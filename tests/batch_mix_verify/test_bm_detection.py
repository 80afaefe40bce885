"""What the complete check finds, where it says it starts, and what it leaves alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from batch_mix_verify import BatchGradientVerification

LOWER_TRIANGLE_4 = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]


class CumsumOverBatch(nn.Module):
    def forward(self, x):
        return x.cumsum(0)


class CumsumNet(nn.Module):
    """Sample i sees samples 0..i-1 through a cumulative sum over the batch: a one-way leak."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
        self.mix = CumsumOverBatch()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.mix(self.encoder(x)))


class LSTMNet(nn.Module):
    """An LSTM that expects (T, B, F) unless ``batch_first``."""

    def __init__(self, batch_first):
        super().__init__()
        self.rnn = nn.LSTM(3, 5, batch_first=batch_first)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


class WrongPermuteFlatten(nn.Module):
    """Flattens (B, C, H, W) after swapping batch and channels: every row is a patchwork of samples."""

    def __init__(self, wrong):
        super().__init__()
        self.wrong = wrong
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 5 * 5, 2)

    def forward(self, x):
        h = self.conv(x)
        h = h.transpose(0, 1).reshape(x.shape[0], -1) if self.wrong else h.reshape(x.shape[0], -1)
        return self.fc(h)


class WrongView(nn.Module):
    """``view(-1, B)`` then transposed back: the classic "view instead of permute" mistake."""

    def __init__(self, wrong):
        super().__init__()
        self.wrong = wrong
        self.fc = nn.Linear(6, 6)

    def forward(self, x):  # x: (B, 6)
        h = self.fc(x)
        return h.view(6, -1).t() if self.wrong else h.t().contiguous().view(6, -1).t()


class AttentionNet(nn.Module):
    """Self-attention over the sequence; ``batch_first=False`` fed (B, T, F) attends across the batch."""

    def __init__(self, batch_first):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.proj(x)
        return self.head(self.attn(h, h, h)[0])


class EncoderNet(nn.Module):
    def __init__(self, batch_first):
        super().__init__()
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x):
        return self.encoder(x)


class TinyLeak(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        return h + self.scale * h[:1]  # every sample leaks (very slightly) from sample 0


class TokenNet(nn.Module):
    """Token ids -> embedding -> (optionally a mean over the batch) -> head."""

    def __init__(self, mix_batch):
        super().__init__()
        self.mix_batch = mix_batch
        self.embed = nn.Embedding(20, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids):
        e = self.embed(ids)
        if self.mix_batch:
            e = e + e.mean(dim=0, keepdim=True)
        return self.head(e)


class ConvBNNet(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.norm = norm
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.drop(torch.relu(self.norm(self.conv(x))))
        return self.head(h.mean(dim=(2, 3)))


def check(model, x, **kwargs):
    verification = BatchGradientVerification(model)
    return verification.check(input_array=x, **kwargs), verification.report


@pytest.mark.parametrize(
    ("model", "x"),
    [
        (CumsumNet(), torch.randn(4, 3)),
        (LSTMNet(batch_first=False), torch.randn(4, 6, 3)),
    ],
    ids=["cumsum-over-batch", "lstm-fed-batch-first"],
)
def test_one_way_leak_is_found_with_its_direction(model, x):
    ok, report = check(model, x)
    assert not ok
    assert report.pairs == LOWER_TRIANGLE_4
    assert all(dep.both_ways is False for dep in report.dependencies)
    assert "6 one-way, 0 both ways" in str(report)


def test_one_way_leak_is_missed_by_the_single_sample_that_sees_nobody():
    # Sample 0 depends on nobody: the original tool's check of sample 0 passes, the complete one does not.
    assert check(CumsumNet(), torch.randn(4, 3), sample_idx=0)[0]
    ok, report = check(CumsumNet(), torch.randn(4, 3), sample_idx=3)
    assert not ok
    assert report.pairs == [(3, 0), (3, 1), (3, 2)]
    assert report.backward_passes == 1
    assert all(dep.both_ways is None for dep in report.dependencies)


@pytest.mark.parametrize(
    ("model", "x"),
    [
        (WrongPermuteFlatten(wrong=True), torch.randn(4, 3, 5, 5)),
        (WrongView(wrong=True), torch.randn(4, 6)),
        (AttentionNet(batch_first=False), torch.randn(4, 5, 8)),
        (EncoderNet(batch_first=False).train(), torch.randn(4, 5, 8)),
        (TinyLeak(scale=1e-7), torch.randn(4, 4)),
    ],
    ids=["permute-then-flatten", "view-instead-of-permute", "attention-fed-BTF", "encoder-fed-BTF", "leak-1e-7"],
)
def test_mixing_is_found(model, x):
    ok, report = check(model, x)
    assert not ok
    assert report.pairs
    assert str(report).startswith("Your model is mixing data across the batch dimension.")


@pytest.mark.parametrize(
    ("model", "x"),
    [
        (WrongPermuteFlatten(wrong=False), torch.randn(4, 3, 5, 5)),
        (WrongView(wrong=False), torch.randn(4, 6)),
        (AttentionNet(batch_first=True), torch.randn(4, 5, 8)),
        (EncoderNet(batch_first=True).train(), torch.randn(4, 5, 8)),
        (EncoderNet(batch_first=True).eval(), torch.randn(4, 5, 8)),
        (LSTMNet(batch_first=True), torch.randn(4, 6, 3)),
        (nn.GRU(3, 4, batch_first=True), torch.randn(4, 6, 3)),
        (nn.Sequential(nn.Conv1d(3, 4, 3), nn.GroupNorm(2, 4), nn.InstanceNorm1d(4), nn.LayerNorm(3)), torch.randn(5, 3, 5)),
        (TinyLeak(scale=0.0), torch.randn(4, 4)),
    ],
    ids=["flatten", "permute", "attention-batch-first", "encoder-train", "encoder-eval", "lstm-batch-first", "gru",
         "per-sample-norms", "zero-scaled-term"],
)
def test_correct_model_passes(model, x):
    ok, report = check(model, x)
    assert ok, str(report)
    assert report.pairs == []
    assert str(report).startswith("No output sample depends on another input sample")


def test_leak_scaled_by_1e_minus_7_is_found_for_every_pair():
    ok, report = check(TinyLeak(scale=1e-7), torch.randn(5, 4))
    assert not ok
    assert report.pairs == [(i, 0) for i in range(1, 5)]


@pytest.mark.parametrize(
    ("mix_batch", "expected"), [(True, False), (False, True)], ids=["mean-over-batch-of-embeddings", "embeddings-only"]
)
def test_integer_inputs_are_followed_to_their_embeddings(mix_batch, expected):
    ids = torch.randint(0, 20, (4, 7))
    ok, report = check(TokenNet(mix_batch), ids)
    assert ok is expected
    assert any("embedding" in source for source in report.gradient_sources)
    if not expected:
        assert len(report.pairs) == 12


def test_integer_mask_turned_into_float_is_followed():
    class MaskedMean(nn.Module):
        def forward(self, x, mask):
            weights = mask.float()
            return (x * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp(min=1) + weights.mean(0)[:1]

    ok, report = check(MaskedMean(), (torch.randn(3, 4, 2), torch.randint(0, 2, (3, 4))))
    assert not ok  # weights.mean(0): the mask of every sample enters every output
    assert (0, 1) in report.pairs


@pytest.mark.parametrize(
    ("batch_first", "expected"), [(False, True), (True, False)], ids=["TBF-model-clean", "BTF-model-fed-TBF"]
)
def test_batch_dim_1(batch_first, expected):
    x = torch.randn(6, 4, 3)  # (T, B, F)
    ok, report = check(LSTMNet(batch_first=batch_first), x, batch_dim=1)
    assert ok is expected, str(report)
    assert report.batch_size == 4 and report.batch_dim == 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=["float16", "bfloat16", "float64"])
@pytest.mark.parametrize("mix", [False, True], ids=["clean", "mixing"])
def test_dtypes(dtype, mix):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            h = torch.tanh(self.fc1(x))
            if mix:
                h = h + 1e-3 * h.mean(0)
            return self.fc2(h)

    ok, report = check(Net().to(dtype), torch.randn(4, 4, dtype=dtype))
    assert ok is not mix
    assert len(report.pairs) == (12 if mix else 0)


def test_dropout_in_training_mode_is_clean():
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 2)).train()
    assert check(model, torch.randn(8, 4))[0]


@pytest.mark.parametrize(
    "norm",
    [nn.BatchNorm2d(4), nn.BatchNorm2d(4, track_running_stats=False), nn.SyncBatchNorm(4)],
    ids=["batchnorm", "batchnorm-no-running-stats", "syncbatchnorm"],
)
def test_batchnorm_in_training_mode_is_clean_and_reported(norm):
    ok, report = check(ConvBNNet(norm).train(), torch.randn(4, 3, 5, 5))
    assert ok, str(report)
    assert [module.name for module in report.batchnorm_as_eval] == ["norm"]
    assert "Treated as in evaluation mode" in str(report)
    assert "'norm' (" in str(report)


def test_batchnorm_in_eval_mode_is_not_mentioned():
    ok, report = check(ConvBNNet(nn.BatchNorm2d(4)).eval(), torch.randn(4, 3, 5, 5))
    assert ok
    assert report.batchnorm_as_eval == ()
    assert "evaluation mode" not in str(report)


def test_batchnorm_does_not_hide_real_mixing():
    class Net(ConvBNNet):
        def forward(self, x):
            return super().forward(x).cumsum(0)

    ok, report = check(Net(nn.BatchNorm2d(4)).train(), torch.randn(4, 3, 5, 5))
    assert not ok
    assert report.pairs == LOWER_TRIANGLE_4


@pytest.mark.parametrize(
    ("model", "x", "name", "module_type"),
    [
        (CumsumNet(), torch.randn(4, 3), "mix", "CumsumOverBatch"),
        (LSTMNet(batch_first=False), torch.randn(4, 6, 3), "rnn", "LSTM"),
        (AttentionNet(batch_first=False), torch.randn(4, 5, 8), "attn", "MultiheadAttention"),
        (EncoderNet(batch_first=False), torch.randn(4, 5, 8), "encoder.layers.0.self_attn", "MultiheadAttention"),
        (TokenNet(mix_batch=True), torch.randint(0, 20, (4, 7)), "", "TokenNet"),
        (WrongPermuteFlatten(wrong=True), torch.randn(4, 3, 5, 5), "", "WrongPermuteFlatten"),
    ],
    ids=["custom-module", "lstm", "attention", "nested-encoder-layer", "functional-in-root", "reshape-in-root"],
)
def test_localization_names_the_first_mixing_module(model, x, name, module_type):
    ok, report = check(model, x)
    assert not ok
    first = report.first_mixing_module
    assert (first.name, first.module_type) == (name, module_type)
    assert f"Mixing starts in '{name or '<root>'}' ({module_type})" in str(report)


def test_localization_picks_the_earliest_of_two_mixing_modules():
    model = nn.Sequential(nn.Linear(3, 3), CumsumOverBatch(), nn.Linear(3, 3), CumsumOverBatch())
    ok, report = check(model, torch.randn(4, 3))
    assert not ok
    assert report.first_mixing_module.name == "1"

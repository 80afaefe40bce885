"""What is reported and what is not: data flow, axes, see-through ops, functional forms, odd modules."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F  # noqa: N812

from bn_verify import BatchNormVerification


def pairs_of(model: nn.Module, *inputs, **kwargs) -> list[tuple[str, str]]:
    verification = BatchNormVerification(model)
    valid = verification.check(input_array=inputs[0] if len(inputs) == 1 else inputs, **kwargs)
    assert valid == (not verification.detected_pairs)
    return verification.detected_pairs


IMAGE = (2, 3, 8, 8)

# -- what flows decides, not module order -------------------------------------------------


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        (F.relu, []),
        (torch.tanh, []),
        (torch.sigmoid, []),
        (lambda y: y * y, []),
        (lambda y: y.exp(), []),
        (lambda y: y.cumsum(2), []),
        (lambda y: torch.clamp(y, max=0.5), []),
        (lambda y: y, [("conv", "bn")]),
        (lambda y: y * 2.0 - 1.0, [("conv", "bn")]),
        (lambda y: -y / 3, [("conv", "bn")]),
    ],
    ids=["F.relu", "torch.tanh", "sigmoid", "square", "exp", "cumsum", "clamp", "nothing", "affine-scalar", "neg-div"],
)
def test_op_between_conv_and_norm(nets, op, expected):
    assert pairs_of(nets.Between(op), torch.randn(IMAGE)) == expected


def test_parallel_branches_blame_the_normalized_conv(nets):
    assert pairs_of(nets.Parallel(), torch.randn(IMAGE)) == [("conv1", "bn")]


def test_sum_of_two_biased_branches_into_one_norm_cancels_both():
    class SumThenNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.bn = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(self.a(x) + self.b(x))

    assert pairs_of(SumThenNorm(), torch.randn(IMAGE)) == [("a", "bn"), ("b", "bn")]


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda nets: nets.SkipConnection(), id="skip-connection"),
        pytest.param(lambda nets: nets.CalledTwice(normalize_second=False), id="reused-layer-one-path-unnormalized"),
    ],
)
def test_biased_output_used_elsewhere_is_not_redundant(nets, model):
    assert pairs_of(model(nets), torch.randn(2, 4, 6, 6)) == []


def test_module_called_twice_and_normalized_each_time(nets):
    assert pairs_of(nets.CalledTwice(normalize_second=True), torch.randn(2, 4, 6, 6)) == [
        ("conv", "bn1"),
        ("conv", "bn2"),
    ]


def test_output_returned_by_the_model_keeps_the_bias():
    class AlsoReturned(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.bn = nn.Linear(3, 4), nn.BatchNorm1d(4)

        def forward(self, x):
            y = self.lin(x)
            return self.bn(y), y.view(-1)

    assert pairs_of(AlsoReturned(), torch.randn(5, 3)) == []


# -- axes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "shape", "expected"),
    [
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), IMAGE, [("0", "1")]),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4)), IMAGE, [("0", "1")]),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4)), IMAGE, [("0", "1")]),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(4, 4)), IMAGE, [("0", "1")]),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4)), IMAGE, []),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(1, 4)), IMAGE, []),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm([6, 6])), IMAGE, [("0", "1")]),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm([4, 6, 6])), IMAGE, []),
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), (5, 3), []),
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), (5, 3), [("0", "1")]),
        (lambda: nn.Sequential(nn.Conv2d(3, 1, 3), nn.LayerNorm([1, 6, 6])), IMAGE, [("0", "1")]),
    ],
    ids=[
        "conv-batchnorm",
        "conv-syncbatchnorm",
        "conv-instancenorm",
        "groupnorm-one-channel-per-group",
        "groupnorm-two-channels-per-group",
        "groupnorm-one-group",
        "layernorm-over-HW",
        "layernorm-over-CHW",
        "linear-layernorm-features",
        "linear-batchnorm1d",
        "single-channel-layernorm-CHW",
    ],
)
def test_norm_axes_decide(model, shape, expected):
    assert pairs_of(model(), torch.randn(shape)) == expected


@pytest.mark.parametrize(
    ("transpose", "expected"),
    [(False, []), (True, [("lin", "bn")])],
    ids=["BTF-batchnorm1d-over-T", "transposed-BFT-batchnorm1d-over-F"],
)
def test_sequence_linear_then_batchnorm1d(nets, transpose, expected):
    assert pairs_of(nets.SequenceLinear(transpose), torch.randn(2, 7, 6)) == expected


def test_channels_last_layernorm_after_permute_is_not_redundant():
    class ConvNeXtish(nn.Module):
        def __init__(self):
            super().__init__()
            self.dw, self.norm = nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.LayerNorm(4)

        def forward(self, x):
            return self.norm(self.dw(x).permute(0, 2, 3, 1))

    assert pairs_of(ConvNeXtish(), torch.randn(2, 4, 5, 5)) == []


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    channels=st.sampled_from([1, 2, 4, 6]),
    groups_index=st.integers(0, 3),
    spatial=st.integers(1, 3),
)
def test_groupnorm_reported_exactly_with_one_channel_per_group(channels, groups_index, spatial):
    divisors = [g for g in range(1, channels + 1) if channels % g == 0]
    groups = divisors[groups_index % len(divisors)]
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[spatial](2, channels, 1)
    model = nn.Sequential(conv, nn.GroupNorm(groups, channels))
    expected = [("0", "1")] if channels == 1 or groups == channels else []
    assert pairs_of(model, torch.randn(2, 2, *([3] * spatial))) == expected


@settings(max_examples=30, deadline=None, derandomize=True)
@given(order=st.permutations([0, 1, 2]))
def test_linear_then_permute_then_batchnorm1d_matches_the_feature_axis(order):
    # Linear acts on axis 2 of (B, T, F) = (2, 3, 4); after permuting with a fixed batch
    # axis first, BatchNorm1d normalizes per position of axis 1 and averages over the rest.
    order = [0, *[axis for axis in order if axis != 0]]
    sizes = (2, 3, 4)
    channels = sizes[order[1]]

    class Permuted(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.bn = nn.Linear(5, 4), nn.BatchNorm1d(channels)

        def forward(self, x):
            return self.bn(self.lin(x).permute(*order))

    expected = [("lin", "bn")] if order[1] == 2 else []
    assert pairs_of(Permuted(), torch.randn(2, 3, 5)) == expected


# -- see-through ops ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        (nn.MaxPool2d(2), [("conv", "bn")]),
        (nn.AvgPool2d(2), [("conv", "bn")]),
        (nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), [("conv", "bn")]),
        (nn.AvgPool2d(3, stride=1, padding=1), []),
        (nn.AdaptiveAvgPool2d(3), [("conv", "bn")]),
        (nn.AdaptiveMaxPool2d(3), [("conv", "bn")]),
        (nn.Upsample(scale_factor=2), [("conv", "bn")]),
        (nn.Upsample(scale_factor=2, mode="bilinear"), [("conv", "bn")]),
        (nn.Dropout(0.5), [("conv", "bn")]),
        (nn.Dropout2d(0.5), [("conv", "bn")]),
        (lambda y: y.view(2, 4, 64).view(2, 4, 8, 8), [("conv", "bn")]),
        (lambda y: y.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), [("conv", "bn")]),
        (lambda y: y.flatten(2).unflatten(2, (8, 8)), [("conv", "bn")]),
        (lambda y: y.reshape(2, 2, 2, 8, 8).reshape(2, 4, 8, 8), [("conv", "bn")]),
        (lambda y: y.transpose(1, 2).transpose(1, 2), [("conv", "bn")]),
        (lambda y: y.permute(0, 1, 3, 2), [("conv", "bn")]),
        (lambda y: y[:, :, 1:-1, ::2], [("conv", "bn")]),
        (lambda y: torch.cat([y, y.detach() * 0], dim=1)[:, :4], [("conv", "bn")]),
        (lambda y: F.pad(y, (1, 1, 1, 1), mode="reflect"), [("conv", "bn")]),
        (lambda y: F.pad(y, (1, 1, 1, 1)), []),
        (lambda y: y.view(2, 8, 32).view(2, 4, 8, 8), []),
        (lambda y: y.transpose(1, 2).reshape(2, 4, 8, 8), []),
        (lambda y: y.roll(1, 1), [("conv", "bn")]),
        (lambda y: y.roll(5), []),
        (lambda y: torch.roll(y, shifts=(1, 2), dims=(0, 3)), [("conv", "bn")]),
        (lambda y: y.flip(3), [("conv", "bn")]),
        (lambda y: torch.fliplr(y), [("conv", "bn")]),
        (nn.ChannelShuffle(2), [("conv", "bn")]),
        (lambda y: y.sort(1).values, []),
    ],
    ids=[
        "maxpool",
        "avgpool",
        "avgpool-padding-excluded",
        "avgpool-zero-padding-counted",
        "adaptive-avgpool",
        "adaptive-maxpool",
        "upsample-nearest",
        "upsample-bilinear",
        "dropout",
        "dropout2d",
        "view-roundtrip",
        "permute-roundtrip",
        "flatten-unflatten",
        "reshape-split-merge-channels",
        "transpose-twice",
        "permute-spatial-only",
        "slice-spatial",
        "cat-then-slice",
        "reflect-pad",
        "zero-pad",
        "view-mixes-channels-and-space",
        "transpose-then-reshape-scrambles",
        "roll-over-channels",
        "roll-flattened-scrambles",
        "roll-batch-and-width",
        "flip-width",
        "fliplr-channels",
        "channel-shuffle",
        "sort",
    ],
)
def test_see_through_ops(nets, op, expected):
    assert pairs_of(nets.Between(op), torch.randn(IMAGE)) == expected


def test_flatten_then_batchnorm1d_over_features():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.BatchNorm1d(4 * 6 * 6))
    assert pairs_of(model, torch.randn(IMAGE)) == [("0", "2")]


def test_channel_concatenation_then_batchnorm_cancels_every_branch():
    class Inception(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.bn = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(5)

        def forward(self, x):
            return self.bn(torch.cat([self.a(x), self.b(x)], dim=1))

    assert pairs_of(Inception(), torch.randn(IMAGE)) == [("a", "bn"), ("b", "bn")]


# -- functional forms and odd modules -------------------------------------------------------


@pytest.mark.parametrize("norm", ["batch_norm", "instance_norm", "group_norm", "layer_norm"])
def test_functional_normalization_named_after_calling_module(nets, norm):
    model = nn.Sequential(nn.Identity(), nets.FunctionalBlock(norm))
    verification = BatchNormVerification(model)
    assert not verification.check(torch.randn(IMAGE))
    assert verification.detected_pairs == [("1.conv", "1")]
    (finding,) = verification.report.findings
    assert finding.functional and finding.normalization_call == f"F.{norm}"
    assert f"F.{norm} called in '1' (FunctionalBlock)" in str(verification.report)


@pytest.mark.parametrize("conv", [False, True], ids=["F.linear", "F.conv2d"])
def test_biased_functional_call_blames_the_bias_owner(nets, conv):
    shape = IMAGE if conv else (5, 3)
    assert pairs_of(nn.Sequential(nets.FunctionalBiased(conv)), torch.randn(shape)) == [("0", "0.bn")]


def test_custom_module_with_bias_parameter(nets):
    model = nn.Sequential(nets.CustomAffine(3, 4), nn.BatchNorm1d(4))
    verification = BatchNormVerification(model)
    assert not verification.check(torch.randn(5, 3))
    assert verification.detected_pairs == [("0", "1")]
    assert verification.report.findings[0].bias_layer_type == "CustomAffine"
    assert "remove the bias parameter of '0' (CustomAffine)" in str(verification.report)


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (lambda: nn.Sequential(nn.LazyConv2d(4, 3), nn.LazyBatchNorm2d()), IMAGE),
        (lambda: nn.Sequential(nn.LazyLinear(4), nn.BatchNorm1d(4)), (5, 3)),
    ],
    ids=["lazy-conv-lazy-bn", "lazy-linear"],
)
def test_lazy_modules_are_checked_and_stay_lazy(model, shape):
    model = model()
    assert pairs_of(model, torch.randn(shape)) == [("0", "1")]
    assert type(model[0]).__name__.startswith("Lazy")
    assert isinstance(model[0].weight, nn.parameter.UninitializedParameter)


def test_weight_norm_parametrization():
    conv = nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 4, 3))
    assert pairs_of(nn.Sequential(conv, nn.BatchNorm2d(4)), torch.randn(IMAGE)) == [("0", "1")]


def test_parametrized_bias_is_reported_under_its_module():
    class Softplus(nn.Module):
        def forward(self, value):
            return F.softplus(value)

    lin = nn.Linear(3, 4)
    nn.utils.parametrize.register_parametrization(lin, "bias", Softplus())
    assert pairs_of(nn.Sequential(lin, nn.BatchNorm1d(4)), torch.randn(5, 3)) == [("0", "1")]


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.BatchNorm1d(4)), (2, 3, 8)),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), (2, 3, 8, 8)),
        (lambda: nn.Sequential(nn.Conv3d(3, 4, 3), nn.BatchNorm3d(4)), (2, 3, 5, 5, 5)),
        (lambda: nn.Sequential(nn.ConvTranspose1d(3, 4, 3), nn.InstanceNorm1d(4)), (2, 3, 8)),
        (lambda: nn.Sequential(nn.ConvTranspose2d(3, 4, 3, stride=2), nn.BatchNorm2d(4)), (2, 3, 5, 5)),
        (lambda: nn.Sequential(nn.ConvTranspose3d(3, 4, 2), nn.GroupNorm(4, 4)), (2, 3, 3, 3, 3)),
        (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4)), (3, 8, 8)),
    ],
    ids=["conv1d", "conv2d", "conv3d", "convtranspose1d", "convtranspose2d", "convtranspose3d", "unbatched-conv2d"],
)
def test_dimensionalities_and_transposed_convolutions(model, shape):
    assert pairs_of(model(), torch.randn(shape)) == [("0", "1")]


@pytest.mark.parametrize("batch", [1, 4], ids=["batch-of-one", "batch-of-four"])
def test_eval_mode_model_is_checked_as_it_trains(batch):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.3)).eval()
    assert pairs_of(model, torch.randn(batch, 3, 8, 8)) == [("0", "1")]
    assert not any(module.training for module in model.modules())


def test_frozen_bias_is_reported_and_flagged():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model[0].bias.requires_grad_(False)
    verification = BatchNormVerification(model)
    assert not verification.check(torch.randn(IMAGE))
    (finding,) = verification.report.findings
    assert finding.frozen and finding.wasted_parameters == 4
    assert "(frozen: requires_grad=False)" in str(verification.report)


def test_bias_free_layers_and_norms_without_mean_are_clean():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.ReLU())
    assert pairs_of(model, torch.randn(IMAGE)) == []


def test_hand_written_bias_add_before_norm():
    class AddBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.shift = nn.Parameter(torch.zeros(1, 4, 1, 1))

        def forward(self, x):
            return x + self.shift

    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), AddBias(), nn.BatchNorm2d(4))
    assert pairs_of(model, torch.randn(IMAGE)) == [("1", "2")]


def test_keyword_and_positional_inputs():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.bn = nn.Linear(3, 4), nn.BatchNorm1d(4)

        def forward(self, x, scale=None):
            return self.bn(self.lin(x)) * scale

    model = TwoInputs()
    assert BatchNormVerification(model).check({"x": torch.randn(5, 3), "scale": torch.ones(1)}) is False
    assert BatchNormVerification(model).check((torch.randn(5, 3), torch.ones(1))) is False


def test_example_input_array_is_used():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model.example_input_array = torch.randn(5, 3)
    verification = BatchNormVerification(model)
    assert verification.check() is False
    assert verification.detected_pairs == [("0", "1")]


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    ops=st.lists(
        st.sampled_from(["relu", "maxpool", "upsample", "scale", "permute2", "pad0", "padr", "view", "skip"]),
        max_size=3,
    ),
    norm=st.sampled_from(["bn", "in", "gn1", "gn2", "ln_hw", "ln_chw"]),
)
def test_reported_biases_are_really_cancelled(ops, norm):
    """Soundness: when a pair is reported, changing the bias does not change the model's output."""
    torch.manual_seed(0)

    class Chain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.norm = {
                "bn": nn.BatchNorm2d(4),
                "in": nn.InstanceNorm2d(4),
                "gn1": nn.GroupNorm(4, 4),
                "gn2": nn.GroupNorm(2, 4),
                "ln_hw": nn.LayerNorm([8, 8]),
                "ln_chw": nn.LayerNorm([4, 8, 8]),
            }[norm]

        def forward(self, x):
            y = self.conv(x)
            extra = 0
            for op in ops:
                if op == "relu":
                    y = F.relu(y)
                elif op == "maxpool":
                    y = F.interpolate(F.max_pool2d(y, 2), scale_factor=2)
                elif op == "upsample":
                    y = F.avg_pool2d(F.interpolate(y, scale_factor=2, mode="bilinear"), 2)
                elif op == "scale":
                    y = y * 3.0
                elif op == "permute2":
                    y = y.permute(0, 1, 3, 2)
                elif op == "pad0":
                    y = F.pad(y, (1, 1, 1, 1))[:, :, 1:-1, 2:]
                elif op == "padr":
                    y = F.pad(y, (1, 1, 1, 1), mode="replicate")[:, :, :-2, :-2]
                elif op == "view":
                    y = y.reshape(2, 4, 64).reshape(2, 4, 8, 8)
                elif op == "skip":
                    extra = y
            return self.norm(y) + extra

    model = Chain()
    x = torch.randn(2, 3, 8, 8)
    reported = pairs_of(model, x) == [("conv", "norm")]
    with torch.no_grad():
        before = model(x)
        model.conv.bias.add_(torch.randn(4) * 5)
        after = model(x)
    if reported:
        assert torch.allclose(before, after, atol=1e-4)
    else:
        assert not torch.allclose(before, after, atol=1e-4)


class _InPlace(nn.Module):
    """conv -> ``body(y, conv2(x))`` with in-place changes -> returns what body returns."""

    def __init__(self, body):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.conv2 = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.body = body

    def forward(self, x):
        return self.body(self, self.conv(x), self.conv2(x))


def _unsqueeze_in_place_then_layernorm(m, y, _):
    y.unsqueeze_(1)  # (N, 1, C, H, W): the mean over (C, H, W) includes the bias axis
    return F.layer_norm(y, y.shape[2:])


def _scale_samples_then_normalize_a_view(m, y, _):
    view = y.view(y.shape[0], 4, -1)
    y.mul_(torch.arange(1.0, y.shape[0] + 1).view(-1, 1, 1, 1))  # the view now varies along the batch too
    return F.batch_norm(view, None, None, training=True)


def _scale_samples_then_normalize_a_slice(m, y, _):
    part = y[:, :2]
    y.mul_(torch.arange(1.0, y.shape[0] + 1).view(-1, 1, 1, 1))
    return F.batch_norm(part, None, None, training=True)


def _add_other_bias_then_use_a_view(m, y, z):
    view = y.view(y.shape[0], 4, -1)
    y.add_(z)  # conv2's bias now flows through the view into relu
    return F.relu(view), m.bn(z)


def _scale_by_constant_through_a_view(m, y, z):
    y.view(y.shape[0], 4, -1).mul_(2.0).add_(1.0)  # per-channel constants stay constants
    return m.bn(y), z.relu()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_unsqueeze_in_place_then_layernorm, []),
        (_scale_samples_then_normalize_a_view, []),
        (_scale_samples_then_normalize_a_slice, []),
        (_add_other_bias_then_use_a_view, []),
        (_scale_by_constant_through_a_view, [("conv", "bn")]),
    ],
    ids=[
        "unsqueeze_-then-layernorm-over-channels",
        "mul_-by-sample-weights-seen-through-view",
        "mul_-by-sample-weights-seen-through-slice",
        "add_-of-another-bias-seen-through-view",
        "constant-in-place-changes-through-view",
    ],
)
def test_in_place_changes_and_views(body, expected):
    torch.manual_seed(0)
    assert pairs_of(_InPlace(body), torch.randn(3, 3, 6, 6)) == expected

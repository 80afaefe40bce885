"""The report: contract lines first, details after, JSON-safe ``to_dict``."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from bn_verify import BatchNormVerification, BiasNormFinding, BiasNormReport

CONTRACT = [
    "Detected a layer '{}' with bias followed by a normalization layer '{}'.",
    "This makes the normalization ineffective and can lead to unstable training.",
    "Either remove the normalization or turn off the bias.",
]


class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        self.model.conv1 = nn.Conv2d(3, 4, 3)
        self.model.bn1 = nn.BatchNorm2d(4)
        self.model.conv2 = nn.Conv2d(4, 6, 1)
        self.model.bn2 = nn.BatchNorm2d(6)

    def forward(self, x):
        return self.model.bn2(self.model.conv2(torch.relu(self.model.bn1(self.model.conv1(x)))))


@pytest.fixture
def report() -> BiasNormReport:
    verification = BatchNormVerification(Wrapped())
    assert not verification.check(torch.randn(2, 3, 8, 8))
    return verification.report


def test_str_starts_with_the_contract_lines_per_pair(report):
    lines = str(report).splitlines()
    assert lines[:3] == [CONTRACT[0].format("model.conv1", "model.bn1"), *CONTRACT[1:]]
    assert lines[3:6] == [CONTRACT[0].format("model.conv2", "model.bn2"), *CONTRACT[1:]]


def test_details_name_layers_axes_and_waste(report):
    text = str(report)
    assert (
        "'model.conv1' (Conv2d, 4 bias parameters): bias cancelled by 'model.bn1' (BatchNorm2d) -- it takes "
        "the mean over (N, H, W) of a (2, 4, 6, 6) tensor, and the bias varies only along (C); "
        "4 parameters wasted. Fix: construct 'model.conv1' with bias=False." in text
    )
    assert text.endswith("In total 10 bias parameters are wasted.")
    assert report.wasted_parameters == 10


def test_finding_fields(report):
    first = report.findings[0]
    assert isinstance(first, BiasNormFinding)
    assert (first.bias_layer, first.bias_layer_type, first.normalization, first.normalization_type) == (
        "model.conv1",
        "Conv2d",
        "model.bn1",
        "BatchNorm2d",
    )
    assert (first.mean_axes, first.bias_axes, first.input_shape) == ((0, 2, 3), (1,), (2, 4, 6, 6))
    assert str(first).splitlines()[:3] == [CONTRACT[0].format("model.conv1", "model.bn1"), *CONTRACT[1:]]
    with pytest.raises(AttributeError):
        first.bias_layer = "other"  # frozen


def test_to_dict_round_trips_through_json(report):
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["pairs"] == [["model.conv1", "model.bn1"], ["model.conv2", "model.bn2"]]
    assert data["findings"][1]["wasted_parameters"] == 6
    assert data["findings"][0]["fix"] == "construct 'model.conv1' with bias=False"
    assert data["ok"] is False


def test_clean_report():
    verification = BatchNormVerification(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)))
    assert verification.check(torch.randn(2, 3))
    assert verification.report.ok and verification.detected_pairs == []
    assert str(verification.report) == (
        "No normalization cancels a bias: checked 1 biased layer and 1 normalization call."
    )
    assert json.loads(json.dumps(verification.report.to_dict()))["findings"] == []


def test_report_before_check_is_empty():
    verification = BatchNormVerification(nn.Linear(2, 2))
    assert verification.detected_pairs == [] and verification.report.ok


def test_root_module_is_named_root_in_the_message():
    class RootNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return nn.functional.batch_norm(self.conv(x), None, None, training=True)

    verification = BatchNormVerification(RootNorm())
    assert not verification.check(torch.randn(2, 3, 4, 4))
    assert verification.detected_pairs == [("conv", "")]
    assert str(verification.report).splitlines()[0] == CONTRACT[0].format("conv", "<root>")

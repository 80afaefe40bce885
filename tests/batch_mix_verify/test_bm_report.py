"""The report: the contract's three lines first, then the detail; JSON-safe and frozen."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from batch_mix_verify import BatchGradientVerification, BatchMixingReport, MixingModule, SampleDependency

HEADLINE = [
    "Your model is mixing data across the batch dimension.",
    "This can lead to wrong gradient updates in the optimizer.",
    "Check the operations that reshape and permute tensor dimensions in your model.",
]


class Leaky(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x):
        h = self.bn(self.fc(x))
        return torch.cat([h[:, :1].cumsum(0), h[:, 1:] + h[:, 1:].flip(0)], dim=1)


def run(model, x, **kwargs):
    verification = BatchGradientVerification(model)
    verification.check(input_array=x, **kwargs)
    return verification.report


def test_failing_report_starts_with_the_contract_lines_then_the_detail():
    report = run(Leaky().train(), torch.randn(4, 3))
    lines = str(report).splitlines()
    assert lines[:3] == HEADLINE
    assert lines[3] == (
        "Mixing starts in '<root>' (Leaky): its output rows depend on other rows of its input "
        "(input (4, 3) -> output (4, 3), batch along dimension 0 -> 0)."
    )
    assert lines[4] == (
        "8 dependencies between different samples (batch size 4, batch_dim=0; all 12 ordered pairs checked in "
        "4 backward passes): 4 one-way, 4 both ways:"
    )
    assert lines[5] == "  output sample 0 depends on input sample 3 (both ways)"
    assert lines[8] == "  output sample 3 depends on input samples 1-2 (one-way), 0 (both ways)"
    assert "Treated as in evaluation mode" in lines[9] and "'bn' (BatchNorm1d)" in lines[9]
    assert lines[10] == "Gradients measured at: input tensor 0 (4, 3)."


def test_dependencies_matrix_and_directions():
    report = run(Leaky(), torch.randn(4, 3))
    assert report.pairs == [(0, 3), (1, 0), (1, 2), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    assert report.matrix[3] == [True, True, True, False]
    assert report.matrix[0] == [False, False, False, True]
    both = {(dep.output_sample, dep.input_sample) for dep in report.dependencies if dep.both_ways}
    assert both == {(0, 3), (3, 0), (1, 2), (2, 1)}


def test_sample_idx_report_names_the_sample_and_leaves_direction_open():
    report = run(Leaky(), torch.randn(4, 3), sample_idx=-1)
    assert report.sample_idx == 3
    assert report.pairs == [(3, 0), (3, 1), (3, 2)]
    assert "only output sample 3 checked, in 1 backward pass" in str(report)
    clean = run(nn.Linear(3, 2), torch.randn(4, 3), sample_idx=1)
    assert str(clean).startswith("Output sample 1 depends on no other input sample")


def test_clean_report():
    report = run(nn.Linear(3, 2), torch.randn(32, 3))
    assert report.ok and report.backward_passes == 7
    assert str(report).splitlines()[0] == (
        "No output sample depends on another input sample (batch size 32, batch_dim=0; all 992 ordered pairs "
        "checked in 7 backward passes)."
    )
    assert report.first_mixing_module is None and report.dependencies == ()


def test_many_dependent_outputs_are_summarised():
    report = run(nn.Softmax(dim=0), torch.randn(20, 2))
    assert len(report.pairs) == 20 * 19
    assert "  ... and 12 more output samples (see report.dependencies)" in str(report)
    assert "  output sample 0 depends on input samples 1-19 (both ways)" in str(report)


@pytest.mark.parametrize("sample_idx", [None, 2], ids=["complete", "single-sample"])
def test_to_dict_round_trips_through_json(sample_idx):
    report = run(Leaky().train(), torch.randn(4, 3), sample_idx=sample_idx)
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["ok"] is False and data["message"] == str(report)
    assert data["pairs"] == [list(pair) for pair in report.pairs]
    assert data["first_mixing_module"]["name"] == ""
    assert data["batchnorm_as_eval"] == [{"name": "bn", "module_type": "BatchNorm1d", "detail": ""}]


def test_report_classes_are_frozen_and_printable():
    report = run(Leaky(), torch.randn(3, 3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.ok = True
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.dependencies[0].input_sample = 0
    assert isinstance(report, BatchMixingReport)
    assert str(SampleDependency(2, 1, True)) == "output sample 2 depends on input sample 1 (both ways)"
    assert str(MixingModule("", "Net")) == "'<root>' (Net)"
    assert SampleDependency(2, 1).to_dict() == {"output_sample": 2, "input_sample": 1, "both_ways": None}


def test_report_is_reset_when_a_check_raises():
    verification = BatchGradientVerification(nn.Linear(3, 2))
    verification.check(torch.randn(4, 3))
    assert verification.report is not None
    with pytest.raises(ValueError, match="at least 2 samples"):
        verification.check(torch.randn(1, 3))
    assert verification.report is None

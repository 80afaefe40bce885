"""Inputs and outputs of every shape the check must take, the mappings, and the errors for bad input."""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

from batch_mix_verify import (
    BatchGradientVerification,
    BatchGradientVerificationError,
    default_input_mapping,
    default_output_mapping,
)


class NestedInput(nn.Module):
    """forward(batch: dict, flags: tuple, scale: float) with tensors nested in both."""

    def __init__(self, mix):
        super().__init__()
        self.mix = mix
        self.fc = nn.Linear(3, 2)

    def forward(self, batch, flags, scale=1.0):
        h = self.fc(batch["x"]) * scale + batch["pair"][1].unsqueeze(1)
        if batch["name"] != "demo" or flags[0] is not True:
            raise AssertionError("non-tensor entries must reach the model unchanged")
        h = h * flags[1]  # (3, 3, ...) would be a mask of another rank; here a per-sample weight
        if self.mix:
            h = h + batch["pair"][1].sum()
        return h


def nested_input():
    batch = {"x": torch.randn(4, 3), "pair": ("label", torch.randn(4)), "name": "demo"}
    return (batch, (True, torch.rand(4, 1)), 2.0)


@pytest.mark.parametrize(("mix", "expected"), [(False, True), (True, False)], ids=["clean", "mixing"])
def test_nested_inputs_with_non_tensor_entries(mix, expected):
    verification = BatchGradientVerification(NestedInput(mix))
    assert verification.check(input_array=nested_input()) is expected
    assert len(verification.report.gradient_sources) == 3


def test_keyword_inputs_from_a_dict():
    class KeywordModel(nn.Module):
        def forward(self, x, y=None):
            return x * 2 + y.flip(0)

    verification = BatchGradientVerification(KeywordModel())
    assert not verification.check(input_array={"x": torch.randn(4, 2), "y": torch.randn(4, 2)})
    assert verification.report.pairs == [(0, 3), (1, 2), (2, 1), (3, 0)]


def test_mask_of_another_rank_and_state_with_batch_elsewhere_are_left_alone():
    class WithMaskAndState(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(3, 4, batch_first=True)

        def forward(self, x, causal_mask, h0):
            return self.rnn(x * causal_mask.sum(), h0)[0]

    inputs = (torch.randn(4, 5, 3), torch.ones(5, 5), torch.zeros(1, 4, 4))
    verification = BatchGradientVerification(WithMaskAndState())
    assert verification.check(input_array=inputs)
    assert verification.report.gradient_sources == ("input tensor 0 (4, 5, 3)",)


class DictOutput(nn.Module):
    def __init__(self, mix):
        super().__init__()
        self.mix = mix
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        h = self.fc(x)
        aux = h.roll(1, 0) if self.mix else h * 2
        return {"logits": h, "loss": None, "aux": (aux, "tag"), "count": 3, "pred": h.argmax(1), "total": h.sum()}


@pytest.mark.parametrize(("mix", "expected"), [(False, True), (True, False)], ids=["clean", "mixing"])
def test_dict_output_with_none_non_tensor_and_integer_entries(mix, expected):
    assert BatchGradientVerification(DictOutput(mix)).check(input_array=torch.randn(4, 3)) is expected


def test_namedtuple_output():
    Out = collections.namedtuple("Out", ["a", "b"])

    class Model(nn.Module):
        def forward(self, x):
            return Out(x * 3, x.cumsum(0))

    verification = BatchGradientVerification(Model())
    assert not verification.check(input_array=torch.randn(3, 2))
    assert verification.report.pairs == [(1, 0), (2, 0), (2, 1)]


def test_custom_mappings():
    class TwoInputs(nn.Module):
        def forward(self, x, context):
            return {"out": x + context.mean(0), "other": x.cumsum(0)}

    x, context = torch.randn(4, 3), torch.randn(4, 3)
    verification = BatchGradientVerification(TwoInputs())
    # Only x is a batch input, and only "out" is checked: context is shared by design.
    assert verification.check(
        input_array=(x, context),
        input_mapping=lambda inputs: [inputs[0]],
        output_mapping=lambda output: output["out"],
    )
    assert not verification.check(input_array=(x, context), output_mapping=lambda output: output["out"])


def test_input_mapping_sees_the_input_array_and_mapping_a_new_tensor_is_refused():
    seen = []

    def mapping(data):
        seen.append(data)
        return [data[0] * 1.0]

    with pytest.raises(BatchGradientVerificationError, match="input_mapping must return tensors taken from the input"):
        BatchGradientVerification(nn.Identity()).check(input_array=(torch.randn(3, 2), "x"), input_mapping=mapping)
    assert isinstance(seen[0], tuple) and seen[0][1] == "x"


class TinyHF:
    @staticmethod
    def bert():
        transformers = pytest.importorskip("transformers")
        config = transformers.BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=32,
        )
        return transformers.BertModel(config)

    @staticmethod
    def gpt2():
        transformers = pytest.importorskip("transformers")
        config = transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32)
        return transformers.GPT2LMHeadModel(config)


@pytest.mark.parametrize("build", [TinyHF.bert, TinyHF.gpt2], ids=["bert", "gpt2"])
def test_hugging_face_model_output_is_clean(build):
    torch.manual_seed(0)
    model = build().train()
    ids = torch.randint(0, 50, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[0, 4:] = 0
    verification = BatchGradientVerification(model)
    assert verification.check(input_array={"input_ids": ids, "attention_mask": mask}), str(verification.report)
    assert any("embedding" in source for source in verification.report.gradient_sources)


def test_hugging_face_model_with_a_batch_leak_is_found():
    model = TinyHF.bert().eval()

    def leak(module, args, output):
        return output + output.mean(0, keepdim=True)  # a mean over the batch after the embeddings

    handle = model.embeddings.register_forward_hook(leak)
    try:
        verification = BatchGradientVerification(model)
        assert not verification.check(input_array={"input_ids": torch.randint(0, 50, (3, 6))})
    finally:
        handle.remove()
    assert verification.report.first_mixing_module.name == "embeddings"


def test_default_input_mapping():
    x, mask, y, scalar = torch.zeros(4, 3), torch.zeros(3, 3), torch.zeros(4), torch.zeros(())
    assert [id(t) for t in default_input_mapping({"x": x, "mask": mask, "n": 1, "y": [y, None]})] == [id(x), id(y)]
    assert [id(t) for t in default_input_mapping((scalar, x))] == [id(x)]  # a scalar has no batch dimension
    seq, lengths, other = torch.zeros(5, 4, 2), torch.zeros(2, 4), torch.zeros(4, 5)
    assert [id(t) for t in default_input_mapping([y, seq, lengths, other], batch_dim=1)] == [id(seq), id(lengths)]


def test_default_output_mapping():
    out = {"a": torch.ones(4, 3, 2), "b": None, "c": (torch.ones(4), "text"), "d": torch.ones(2, 2)}
    combined = default_output_mapping(out)
    assert combined.shape == (4, 7)
    assert default_output_mapping({"x": torch.ones(6, 4, 2)}, batch_dim=1).shape == (4, 12)
    assert default_output_mapping((torch.ones(4, 2, dtype=torch.float16),)).dtype == torch.float32
    assert default_output_mapping((torch.rand(3, 5), "foo", torch.tensor(1))).shape == (3, 5)
    # As in the original tool, a plain tensor comes back as it is.
    single = torch.ones(4, 3, 2)
    assert default_output_mapping(single) is single
    with pytest.raises(ValueError, match="no output tensor has"):
        default_output_mapping({"loss": None})


class TwoInputSum(nn.Module):
    def forward(self, a, b):
        return a.sum(1, keepdim=True) + b.sum(1, keepdim=True)[:1]


class NoGrad(nn.Module):
    def forward(self, x):
        with torch.no_grad():
            return x * 2


class Raises(nn.Module):
    def forward(self, x):
        raise KeyError("missing feature 'age'")


@pytest.mark.parametrize(
    ("model", "kwargs", "match"),
    [
        (nn.Linear(3, 2), {"input_array": torch.randn(1, 3)}, r"at least 2 samples.*batch size is 1"),
        (nn.Linear(3, 2), {"input_array": ("a", 1)}, r"holds no tensor"),
        (nn.Linear(3, 2), {}, r"No input to check Linear"),
        (TwoInputSum(), {"input_array": (torch.randn(4, 3), torch.randn(5, 3))}, r"batch sizes disagree.*\(4, 3\) has 4.*\(5, 3\) has 5"),
        (TwoInputSum(), {"input_array": (torch.randn(4, 3), torch.randn(5, 3)), "input_mapping": lambda d: list(d)},
         r"batch sizes disagree"),
        (nn.Linear(3, 2), {"input_array": torch.randn(4, 3), "batch_dim": 2}, r"batch_dim=2 is out of range.*\(4, 3\)"),
        (nn.Linear(3, 2), {"input_array": torch.randn(4, 3), "batch_dim": -1}, r"batch_dim=-1 is out of range"),
        (nn.Linear(3, 2), {"input_array": torch.randn(4, 3), "sample_idx": 4}, r"sample_idx=4 is out of range for batch size 4"),
        (NoGrad(), {"input_array": torch.randn(4, 3)}, r"output is not differentiable"),
        (nn.Embedding(5, 2), {"input_array": torch.randint(0, 5, (4,)), "output_mapping": lambda o: o.argmax(1)},
         r"output is not differentiable"),
        (TwoInputSum(), {"input_array": (torch.randn(4, 3), torch.randn(4, 3)), "output_mapping": lambda o: o[:2]},
         r"does not have the batch size 4"),
        (nn.Flatten(0), {"input_array": torch.randn(4, 3)}, r"output does not match the input's batch size 4"),
        (Raises(), {"input_array": torch.randn(4, 3)}, r"forward pass of Raises raised KeyError: .*missing feature"),
    ],
    ids=["batch-size-1", "no-tensor", "no-input", "batch-sizes-disagree", "mapped-batch-sizes-disagree",
         "batch-dim-too-large", "batch-dim-negative", "sample-idx-out-of-range", "no-grad-output",
         "integer-output", "output-mapping-wrong-size", "output-without-batch", "forward-raises"],
)
def test_bad_input_gets_a_clear_error(model, kwargs, match):
    with pytest.raises(BatchGradientVerificationError, match=match) as info:
        BatchGradientVerification(model).check(**kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, RuntimeError)
    assert str(info.value).startswith("BatchGradientVerification")


def test_example_input_array_is_used_when_no_input_is_given():
    model = nn.Linear(3, 2)
    model.example_input_array = torch.randn(4, 3)
    verification = BatchGradientVerification(model)
    assert verification.check()
    assert verification.report.batch_size == 4


def test_forward_that_edits_its_input_in_place_still_runs():
    class InPlace(nn.Module):
        def forward(self, x):
            x.mul_(2)
            return x.cumsum(0)

    assert not BatchGradientVerification(InPlace()).check(input_array=torch.randn(3, 2))


def test_check_under_no_grad_still_works():
    with torch.no_grad():
        assert BatchGradientVerification(nn.Linear(2, 2)).check(torch.randn(3, 2))
        assert not BatchGradientVerification(nn.Sequential(nn.Linear(2, 2), nn.Softmax(0))).check(torch.randn(3, 2))
        assert not torch.is_grad_enabled()

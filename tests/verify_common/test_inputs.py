import pytest
import torch
from torch import nn

from verify_common import CallArgs, VerificationError, call_model, copy_to_device, model_device, resolve_input


@pytest.mark.parametrize(
    ("input_array", "n_args", "kwarg_names"),
    [
        (torch.zeros(2, 3), 1, []),
        ((torch.zeros(2, 3), torch.zeros(2)), 2, []),
        ({"x": torch.zeros(2, 3), "mask": None}, 0, ["x", "mask"]),
        ([torch.zeros(2, 3)], 1, []),
    ],
    ids=["single", "tuple", "dict", "list-is-one-argument"],
)
def test_call_convention(input_array, n_args, kwarg_names):
    call_args = CallArgs.from_input_array(input_array)
    assert len(call_args.args) == n_args
    assert list(call_args.kwargs) == kwarg_names


def test_resolve_input_falls_back_to_example_input_array():
    model = nn.Linear(3, 1)
    model.example_input_array = torch.zeros(4, 3)
    assert resolve_input(model, None).args[0].shape == (4, 3)


def test_resolve_input_without_any_input_names_the_fix():
    with pytest.raises(VerificationError, match="pass input_array=... or set model.example_input_array"):
        resolve_input(nn.Linear(3, 1), None)


@pytest.mark.parametrize("bad", [{"a": 1}, ("text", 3), [None]], ids=["dict", "tuple", "list"])
def test_resolve_input_without_tensors_is_a_clear_error(bad):
    with pytest.raises(VerificationError, match="holds no tensor"):
        resolve_input(nn.Linear(3, 1), bad)


def test_copy_to_device_never_touches_the_callers_tensors():
    original = torch.ones(2, 3, requires_grad=True)
    copied = copy_to_device(CallArgs((original,)), torch.device("cpu")).args[0]
    assert copied is not original and not copied.requires_grad
    copied.add_(1)
    assert original.sum().item() == 6.0


def test_model_device_of_empty_model_is_cpu():
    assert model_device(nn.ReLU()) == torch.device("cpu")


def test_call_model_reraises_naming_the_check():
    with pytest.raises(VerificationError, match=r"MyCheck: the forward pass of Linear raised RuntimeError") as info:
        call_model(nn.Linear(3, 1), CallArgs((torch.zeros(2, 5),)), "MyCheck")
    assert isinstance(info.value.__cause__, RuntimeError)


def test_verification_error_is_both_value_and_runtime_error():
    assert issubclass(VerificationError, ValueError)
    assert issubclass(VerificationError, RuntimeError)

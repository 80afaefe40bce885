import pickle
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests._trainer import quiet_trainer
from verify_common import CallArgs, VerificationCallback, lightning_callback_classes


class RecordingWarning(UserWarning):
    pass


class RecordingCallback(VerificationCallback):
    """A check that records what it was run on and fails when told to."""

    install_command = 'pip install "recording[lightning]"'
    warning_category = RecordingWarning

    def __init__(self, fail: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.fail = fail
        self.calls: list[CallArgs] = []

    def run_check(self, pl_module, call_args):
        self.calls.append(call_args)
        return (not self.fail), "recorded a failure"


def _module_class(pl):
    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 1)
            self.forward_calls = 0

        def forward(self, x):
            self.forward_calls += 1
            return self.layer(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Tiny


def _fit(pl, module, callback, steps=3):
    torch.manual_seed(0)
    data = TensorDataset(torch.arange(24.0).reshape(8, 3) / 10, torch.ones(8, 1))
    trainer = quiet_trainer(pl, callback if isinstance(callback, list) else [callback], max_steps=steps)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer.fit(module, DataLoader(data, batch_size=4))
    return trainer


def test_missing_lightning_raises_import_error_with_the_install_command(monkeypatch):
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r'pip install "recording\[lightning\]"'):
        RecordingCallback()
    with pytest.raises(ImportError, match="Install it with"):
        lightning_callback_classes('pip install "x[lightning]"')


def test_callback_is_a_callback_of_the_trainers_namespace(pl):
    callback = RecordingCallback()
    assert isinstance(callback, pl.Callback)
    assert isinstance(callback, RecordingCallback)
    assert type(callback).__qualname__ == "RecordingCallback"


def test_callback_pickles_through_the_public_class(pl):
    callback = RecordingCallback(warn=False, error=True)
    clone = pickle.loads(pickle.dumps(callback))
    assert isinstance(clone, pl.Callback) and isinstance(clone, RecordingCallback)
    assert (clone.warn, clone.error) == (False, True)


def test_runs_once_on_the_first_forward_inputs_and_removes_its_hook(pl):
    module = _module_class(pl)()
    callback = RecordingCallback()
    _fit(pl, module, callback, steps=3)
    assert len(callback.calls) == 1
    (x,) = callback.calls[0].args
    assert x.shape == (4, 3)
    assert torch.equal(x, torch.arange(12.0).reshape(4, 3) / 10)
    assert callback.result is True and callback.message is None
    assert not module._forward_pre_hooks
    assert module.forward_calls == 3  # the check calls nothing itself here


def test_uses_example_input_array_before_the_first_batch(pl):
    module = _module_class(pl)()
    module.example_input_array = torch.full((2, 3), 7.0)
    callback = RecordingCallback()
    _fit(pl, module, callback, steps=2)
    assert len(callback.calls) == 1
    assert torch.equal(callback.calls[0].args[0], torch.full((2, 3), 7.0))


def test_failure_warns_with_the_checks_category(pl):
    callback = RecordingCallback(fail=True)
    with pytest.warns(RecordingWarning, match="recorded a failure"):
        _fit(pl, _module_class(pl)(), callback)
    assert callback.result is False and callback.message == "recorded a failure"


def test_failure_with_error_raises_runtime_error(pl):
    module = _module_class(pl)()
    with pytest.raises(RuntimeError, match="recorded a failure"):
        _fit(pl, module, RecordingCallback(fail=True, error=True))
    assert not module._forward_pre_hooks


def test_warn_false_stays_silent(pl):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RecordingWarning)
        _fit(pl, _module_class(pl)(), RecordingCallback(fail=True, warn=False))


class ForwardingCallback(RecordingCallback):
    """A check that, like the real ones, runs the module itself."""

    def run_check(self, pl_module, call_args):
        pl_module(*call_args.args, **call_args.kwargs)
        return super().run_check(pl_module, call_args)


def test_two_callbacks_that_run_the_module_each_capture_the_real_input(pl):
    module = _module_class(pl)()
    first, second = ForwardingCallback(), ForwardingCallback()
    trainer = _fit(pl, module, [first, second], steps=2)
    assert [len(first.calls), len(second.calls)] == [1, 1]
    for callback in (first, second):
        assert torch.equal(callback.calls[0].args[0], torch.arange(12.0).reshape(4, 3) / 10)
    assert module.forward_calls == 2 + 2  # two training steps, one extra call per check
    assert trainer.global_step == 2
    assert not module._forward_pre_hooks


def test_a_step_that_calls_a_submodule_gets_that_submodule_checked_under_its_name(pl):
    class CallsSubmoduleOnly(_module_class(pl)):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self.layer(x), y)

    class NamingCallback(RecordingCallback):
        def run_check(self, module, call_args):
            self.names = [name for name, _ in module.named_modules()]
            return super().run_check(module, call_args)

    module = CallsSubmoduleOnly()
    callback = NamingCallback(fail=True)
    with pytest.warns(RecordingWarning, match="recorded a failure"):
        _fit(pl, module, callback, steps=3)
    assert callback.checked == ["layer"] and callback.names == ["", "layer"]
    assert len(callback.calls) == 1 and callback.calls[0].args[0].shape == (4, 3)
    assert not any(m._forward_pre_hooks for m in module.modules())
    assert dict(module.named_children()).keys() == {"layer"}  # the scoping wrapper left no trace


def test_a_submodule_the_check_cannot_handle_warns_and_training_goes_on(pl):
    class CallsSubmoduleOnly(_module_class(pl)):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self.layer(x), y)

    class Refusing(RecordingCallback):
        def run_check(self, module, call_args):
            raise ValueError("no batch here")

    module = CallsSubmoduleOnly()
    with pytest.warns(UserWarning, match="could not check submodule 'layer': no batch here"):
        trainer = _fit(pl, module, Refusing(), steps=2)
    assert trainer.global_step == 2


def test_a_step_that_calls_nothing_checkable_is_reported_not_silently_skipped(pl):
    class CallsNoModule(_module_class(pl)):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(nn.functional.linear(x, self.layer.weight, self.layer.bias), y)

    module = CallsNoModule()
    callback = RecordingCallback()
    with pytest.warns(UserWarning, match="RecordingCallback did not run: the first training step called neither"):
        _fit(pl, module, callback, steps=3)
    assert callback.calls == [] and callback.has_run
    assert not module._forward_pre_hooks

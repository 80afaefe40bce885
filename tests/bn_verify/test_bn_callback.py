"""The Lightning callback in real ``Trainer.fit`` runs, in both namespaces, and without Lightning."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests._trainer import quiet_trainer
from bn_verify import BatchNormVerificationCallback, BiasBeforeNormWarning

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning:lightning",
    "ignore::UserWarning:pytorch_lightning",
    "ignore:.*num_workers.*",
    "ignore:.*LeafSpec.*",
)


def lit_class(pl):
    class Lit(pl.LightningModule):
        def __init__(self, bias: bool = True, example: bool = False):
            super().__init__()
            self.model = nn.Sequential(
                nn.Conv2d(3, 4, 3, padding=1, bias=bias),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.Dropout(0.3),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(4, 2),
            )
            if example:
                self.example_input_array = torch.randn(2, 3, 6, 6)
            self.hook_counts: list[int] = []

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, batch_idx):
            self.hook_counts.append(sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in self.modules()))
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Lit


def fit(pl, module, callbacks, steps: int = 3):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(12, 3, 6, 6), torch.randint(0, 2, (12,)))
    trainer = quiet_trainer(pl, callbacks, max_steps=steps)
    trainer.fit(module, DataLoader(data, batch_size=4))
    return module


@pytest.mark.lightning
def test_warns_on_first_batch_without_example_input_and_removes_its_hook(pl):
    module = lit_class(pl)()
    callback = BatchNormVerificationCallback()
    with pytest.warns(BiasBeforeNormWarning, match=r"Detected a layer 'model\.0' with bias followed by a normalization layer 'model\.1'\.") as caught:
        fit(pl, module, [callback])
    assert sum(issubclass(w.category, BiasBeforeNormWarning) for w in caught) == 1
    assert callback.result is False and callback.report.pairs == [("model.0", "model.1")]
    assert module.hook_counts[1:] == [0, 0]


@pytest.mark.lightning
def test_uses_example_input_array_when_present(pl):
    callback = BatchNormVerificationCallback()
    with pytest.warns(BiasBeforeNormWarning, match="model.0"):
        fit(pl, lit_class(pl)(example=True), [callback], steps=1)
    assert callback.report.findings[0].input_shape == (2, 4, 6, 6)


@pytest.mark.lightning
def test_error_true_raises_runtime_error(pl):
    with pytest.raises(RuntimeError, match=r"Detected a layer 'model\.0' with bias"):
        fit(pl, lit_class(pl)(), [BatchNormVerificationCallback(error=True)], steps=1)


@pytest.mark.lightning
def test_clean_model_trains_silently(pl):
    with warnings.catch_warnings():
        warnings.simplefilter("error", BiasBeforeNormWarning)
        callback = BatchNormVerificationCallback(error=True)
        fit(pl, lit_class(pl)(bias=False), [callback], steps=1)
    assert callback.result is True


@pytest.mark.lightning
def test_training_is_identical_with_and_without_the_callback(pl):
    torch.manual_seed(7)
    with_callback = lit_class(pl)()
    without = lit_class(pl)()
    without.load_state_dict(with_callback.state_dict())
    with pytest.warns(BiasBeforeNormWarning):
        fit(pl, with_callback, [BatchNormVerificationCallback()])
    fit(pl, without, [])
    after_with, after_without = with_callback.state_dict(), without.state_dict()
    assert after_with.keys() == after_without.keys()
    for name in after_with:
        assert torch.equal(after_with[name], after_without[name]), name


def test_without_lightning_creating_the_callback_names_the_install_command(monkeypatch):
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r'pip install "bn-verify\[lightning\]"'):
        BatchNormVerificationCallback()


@pytest.mark.lightning
def test_warn_false_stays_silent_but_records(pl):
    callback = BatchNormVerificationCallback(warn=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BiasBeforeNormWarning)
        fit(pl, lit_class(pl)(), [callback], steps=1)
    assert callback.result is False and "model.0" in callback.message


@pytest.mark.lightning
def test_two_callbacks_on_one_module_each_check_once(pl):
    # The second callback's capture hook must not fire inside the first one's check.
    first, second = BatchNormVerificationCallback(), BatchNormVerificationCallback()
    with pytest.warns(BiasBeforeNormWarning) as caught:
        module = fit(pl, lit_class(pl)(), [first, second], steps=2)
    assert sum(issubclass(w.category, BiasBeforeNormWarning) for w in caught) == 2
    assert first.report.pairs == second.report.pairs == [("model.0", "model.1")]
    assert module.hook_counts[1:] == [0]

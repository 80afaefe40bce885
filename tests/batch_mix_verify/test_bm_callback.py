"""The Lightning callback with a real ``Trainer.fit``, in both namespaces, and without Lightning."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests._trainer import quiet_trainer
from batch_mix_verify import BatchGradientVerificationCallback, BatchMixingWarning

INSTALL = 'pip install "batch-mix-verify[lightning]"'


def make_module(pl, mixing=False, example=True):
    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1))
            if example:
                self.example_input_array = torch.randn(4, 3)

        def forward(self, x):
            out = self.net(x)
            return out.cumsum(0) if mixing else out

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Module()


def fit_with(pl, module, callback, steps=3):
    """``Trainer.fit`` for ``steps`` batches of 4; returns the BatchMixingWarnings issued."""
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 3, generator=generator), torch.randn(16, 1, generator=generator))
    trainer = quiet_trainer(pl, [callback] if callback is not None else [], max_steps=steps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, DataLoader(data, batch_size=4))
    return [w for w in caught if issubclass(w.category, BatchMixingWarning)]


def hook_count(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@pytest.mark.lightning
@pytest.mark.parametrize("example", [True, False], ids=["example_input_array", "first-batch"])
def test_mixing_model_warns_once_and_leaves_no_hook(pl, example):
    module = make_module(pl, mixing=True, example=example)
    callback = BatchGradientVerificationCallback()
    assert isinstance(callback, pl.Callback)
    caught = fit_with(pl, module, callback)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.splitlines()[:3] == [
        "Your model is mixing data across the batch dimension.",
        "This can lead to wrong gradient updates in the optimizer.",
        "Check the operations that reshape and permute tensor dimensions in your model.",
    ]
    assert callback.has_run and callback.result is False
    assert callback.report.batch_size == 4 and not callback.report.ok
    assert "'net.1' (BatchNorm1d)" in message  # BatchNorm in training mode is treated as eval, and said so
    assert hook_count(module) == 0


@pytest.mark.lightning
def test_error_true_raises_runtime_error(pl):
    module = make_module(pl, mixing=True, example=False)
    with pytest.raises(RuntimeError, match="Your model is mixing data across the batch dimension"):
        fit_with(pl, module, BatchGradientVerificationCallback(error=True))
    assert hook_count(module) == 0


@pytest.mark.lightning
def test_clean_model_trains_exactly_as_without_the_callback(pl):
    torch.manual_seed(0)
    with_callback = make_module(pl, example=False)
    torch.manual_seed(0)
    without = make_module(pl, example=False)
    callback = BatchGradientVerificationCallback(sample_idx=None)
    torch.manual_seed(1)
    assert fit_with(pl, with_callback, callback) == []
    torch.manual_seed(1)
    fit_with(pl, without, None)
    assert callback.result is True and callback.report.ok
    state, reference = with_callback.state_dict(), without.state_dict()
    assert all(torch.equal(state[key], reference[key]) for key in reference)
    assert hook_count(with_callback) == 0


def test_callback_arguments_are_kept(pl):
    mapping = lambda output: output  # noqa: E731
    callback = BatchGradientVerificationCallback(output_mapping=mapping, sample_idx=2, batch_dim=1, warn=False, error=True)
    assert (callback.output_mapping, callback.sample_idx, callback.batch_dim) == (mapping, 2, 1)
    assert (callback.warn, callback.error, callback.input_mapping) == (False, True, None)
    assert callback.install_command == INSTALL and callback.warning_category is BatchMixingWarning
    assert issubclass(BatchMixingWarning, UserWarning)


def test_without_lightning_the_callback_says_how_to_install_it(monkeypatch):
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail
    with pytest.raises(ImportError, match=r'pip install "batch-mix-verify\[lightning\]"'):
        BatchGradientVerificationCallback()


class FakeTrainer:
    def __init__(self, is_global_zero):
        self.is_global_zero = is_global_zero


@pytest.mark.parametrize(("rank_zero", "expected"), [(True, 1), (False, 0)], ids=["rank-0", "other-rank"])
def test_warns_on_global_rank_zero_only(pl, rank_zero, expected):
    module = make_module(pl, mixing=True, example=True)
    callback = BatchGradientVerificationCallback()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        callback.on_train_start(FakeTrainer(rank_zero), module)
    assert len([w for w in caught if issubclass(w.category, BatchMixingWarning)]) == expected
    assert callback.result is False

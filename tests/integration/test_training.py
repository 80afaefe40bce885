"""Both callbacks together in real Lightning training runs, single process and DDP."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests._trainer import quiet_trainer
from batch_mix_verify import BatchGradientVerificationCallback, BatchMixingWarning
from bn_verify import BatchNormVerificationCallback, BiasBeforeNormWarning

from ._lit_models import lit_small_net_class as _lit_class

HERE = Path(__file__).resolve().parent


def _fit(pl, module, callbacks):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,)))
    trainer = quiet_trainer(pl, callbacks, max_steps=4)
    trainer.fit(module, DataLoader(data, batch_size=8))
    return module


@pytest.mark.lightning
def test_buggy_model_gets_both_warnings_and_trains_as_without_callbacks(pl):
    torch.manual_seed(1)
    with_callbacks = _lit_class(pl)(buggy=True)
    without = _lit_class(pl)(buggy=True)
    without.load_state_dict(with_callbacks.state_dict())

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(pl, with_callbacks, [BatchNormVerificationCallback(), BatchGradientVerificationCallback()])
    categories = [w.category for w in caught]
    assert categories.count(BiasBeforeNormWarning) == 1
    assert categories.count(BatchMixingWarning) == 1

    _fit(pl, without, [])
    for (name, a), (_, b) in zip(with_callbacks.state_dict().items(), without.state_dict().items()):
        assert torch.equal(a, b), name
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in with_callbacks.modules())


@pytest.mark.lightning
def test_fixed_twin_trains_silently(pl):
    with warnings.catch_warnings():
        warnings.simplefilter("error", BiasBeforeNormWarning)
        warnings.simplefilter("error", BatchMixingWarning)
        _fit(pl, _lit_class(pl)(buggy=False), [BatchNormVerificationCallback(), BatchGradientVerificationCallback()])


DDP_SCRIPT = """
import sys, warnings
sys.path.insert(0, {here!r})
import torch
from torch.utils.data import DataLoader, TensorDataset
import {namespace} as pl
from bn_verify import BatchNormVerificationCallback, BiasBeforeNormWarning
from batch_mix_verify import BatchGradientVerificationCallback, BatchMixingWarning
from _lit_models import lit_small_net_class

if __name__ == "__main__":
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,)))
    callbacks = [BatchNormVerificationCallback(), BatchGradientVerificationCallback()]
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=callbacks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(lit_small_net_class(pl)(buggy=True), DataLoader(data, batch_size=8))
    ours = sorted(w.category.__name__ for w in caught if w.category in (BiasBeforeNormWarning, BatchMixingWarning))
    ran = [cb.has_run for cb in callbacks]
    # One file per rank: the ranks share stdout, where their lines can interleave.
    with open(f"rank{{trainer.global_rank}}.txt", "w") as out:
        out.write(f"RANK {{trainer.global_rank}} RAN {{ran}} WARNED {{ours}}")
"""


@pytest.mark.lightning
@pytest.mark.parametrize("namespace", ["lightning.pytorch", "pytorch_lightning"], ids=["lightning", "pytorch_lightning"])
def test_under_ddp_every_rank_checks_and_only_rank_zero_warns(namespace, tmp_path):
    pytest.importorskip(namespace)
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT.format(here=str(HERE), namespace=namespace))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = sorted(path.read_text() for path in tmp_path.glob("rank*.txt"))
    assert lines == [
        "RANK 0 RAN [True, True] WARNED ['BatchMixingWarning', 'BiasBeforeNormWarning']",
        "RANK 1 RAN [True, True] WARNED []",
    ], result.stdout + result.stderr[-2000:]


@pytest.mark.lightning
def test_a_step_that_calls_the_network_attribute_is_checked_with_qualified_names(pl):
    class CallsNet(_lit_class(pl)):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

    bn_callback, mix_callback = BatchNormVerificationCallback(), BatchGradientVerificationCallback()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(pl, CallsNet(buggy=True), [bn_callback, mix_callback])
    messages = {w.category: str(w.message) for w in caught if w.category in (BiasBeforeNormWarning, BatchMixingWarning)}
    assert messages[BiasBeforeNormWarning].startswith(
        "Detected a layer 'net.conv1' with bias followed by a normalization layer 'net.bn1'."
    )
    assert messages[BatchMixingWarning].startswith("Your model is mixing data across the batch dimension.")
    assert bn_callback.verification.detected_pairs == [("net.conv1", "net.bn1")]

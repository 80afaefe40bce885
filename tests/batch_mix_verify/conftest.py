"""Shared helpers for the batch_mix_verify tests: a snapshot of everything a check must leave alone."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


class Snapshot:
    """Parameters, buffers, ``.grad`` objects and values, flags, hooks and the global RNG of one model."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.params = {name: (p, p.detach().clone(), p.requires_grad) for name, p in model.named_parameters()}
        self.grads = {name: (p.grad, None if p.grad is None else p.grad.clone()) for name, p in model.named_parameters()}
        self.buffers = {name: (b, b.clone()) for name, b in model.named_buffers()}
        self.training = {name: m.training for name, m in model.named_modules()}
        self.hooks = {
            (name, attr): list(getattr(m, attr).keys()) for name, m in model.named_modules() for attr in HOOK_DICTS
        }
        self.attributes = {name: sorted(vars(m)) for name, m in model.named_modules()}
        self.torch_rng = torch.get_rng_state()
        self.python_rng = random.getstate()

    def assert_unchanged(self) -> None:
        model = self.model
        for name, p in model.named_parameters():
            same, value, flag = self.params[name]
            assert p is same, f"parameter {name} replaced"
            assert torch.equal(p.detach(), value), f"parameter {name} changed"
            assert p.requires_grad == flag, f"requires_grad of {name} changed"
            grad, grad_value = self.grads[name]
            assert p.grad is grad, f".grad of {name} replaced"
            if grad is not None:
                assert torch.equal(p.grad, grad_value), f".grad of {name} changed"
        for name, b in model.named_buffers():
            same, value = self.buffers[name]
            assert b is same, f"buffer {name} replaced"
            assert torch.equal(b, value), f"buffer {name} changed"
        assert {name: m.training for name, m in model.named_modules()} == self.training
        assert {
            (name, attr): list(getattr(m, attr).keys()) for name, m in model.named_modules() for attr in HOOK_DICTS
        } == self.hooks
        assert {name: sorted(vars(m)) for name, m in model.named_modules()} == self.attributes
        assert torch.equal(torch.get_rng_state(), self.torch_rng), "global torch RNG consumed"
        assert random.getstate() == self.python_rng, "python RNG consumed"


@pytest.fixture
def snapshot():
    """``snapshot(model)`` records the model's state; ``.assert_unchanged()`` compares."""
    return Snapshot

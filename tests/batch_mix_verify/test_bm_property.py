"""Property: on random models built from mixing and non-mixing blocks, the check agrees with brute force.

The brute force computes the full Jacobian of the output with respect to the input and reads which
output samples depend on which input samples; the check must report exactly those pairs, with the
right directions, and ``sample_idx`` must report exactly one row of them.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from batch_mix_verify import BatchGradientVerification

FEATURES = 3


class Block(nn.Module):
    """One building block; ``kind`` says what it does to a (B, F) tensor."""

    def __init__(self, kind, a=0, b=1, seed=0):
        super().__init__()
        self.kind, self.a, self.b = kind, a, b
        generator = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(FEATURES, FEATURES, generator=generator, dtype=torch.float64))

    def forward(self, x):
        size = x.shape[0]
        a, b = self.a % size, self.b % size
        if self.kind == "linear":
            return torch.tanh(x @ self.weight)
        if self.kind == "features":  # mixes features within each sample
            return x * x.sum(1, keepdim=True) + x.roll(1, 1)
        if self.kind == "layernorm":
            return nn.functional.layer_norm(x, (FEATURES,))
        if self.kind == "zero-coefficient":  # touches other samples with an exact zero factor
            return x + 0.0 * x.flip(0)
        if self.kind == "leak":  # sample b reads sample a
            out = x.clone()
            out[b] = out[b] + 0.5 * x[a] if a != b else out[b]
            return out
        if self.kind == "roll":
            return x + 0.25 * x.roll(1 + a, 0)
        if self.kind == "cumsum":
            return x.cumsum(0)
        if self.kind == "mean":
            return x - x.mean(0, keepdim=True) * 1e-3
        if self.kind == "flip":
            return x.flip(0)
        raise ValueError(self.kind)


KINDS = ["linear", "features", "layernorm", "zero-coefficient", "leak", "roll", "cumsum", "mean", "flip"]
blocks = st.builds(
    Block,
    kind=st.sampled_from(KINDS),
    a=st.integers(0, 7),
    b=st.integers(0, 7),
    seed=st.integers(0, 2**16),
)


def brute_force_pairs(model, x):
    jacobian = torch.autograd.functional.jacobian(model, x)  # (B, F_out, B, F_in)
    depends = (jacobian != 0).any(dim=3).any(dim=1)  # (B_out, B_in)
    depends.fill_diagonal_(False)
    return [tuple(pair) for pair in depends.nonzero().tolist()]


@settings(max_examples=35, deadline=None, derandomize=True)
@given(
    layers=st.lists(blocks, min_size=1, max_size=4),
    size=st.integers(2, 7),
    sample=st.integers(0, 6),
    data_seed=st.integers(0, 2**16),
)
def test_check_matches_the_brute_force_jacobian(layers, size, sample, data_seed):
    model = nn.Sequential(*layers)
    x = torch.randn(size, FEATURES, generator=torch.Generator().manual_seed(data_seed), dtype=torch.float64)
    expected = brute_force_pairs(model, x)

    verification = BatchGradientVerification(model)
    assert verification.check(input_array=x) is (not expected)
    report = verification.report
    assert report.pairs == expected
    for dep in report.dependencies:
        assert dep.both_ways == ((dep.input_sample, dep.output_sample) in expected)
    if expected:
        assert report.first_mixing_module is not None
        assert report.first_mixing_module.module_type == "Block"
        first_mixing = next(str(i) for i, layer in enumerate(layers) if brute_force_pairs(layer, _input_of(model, i, x)))
        assert report.first_mixing_module.name == first_mixing

    sample %= size
    assert verification.check(input_array=x, sample_idx=sample) is (not [p for p in expected if p[0] == sample])
    assert verification.report.pairs == [pair for pair in expected if pair[0] == sample]


def _input_of(model, index, x):
    with torch.no_grad():
        for layer in list(model)[:index]:
            x = layer(x)
    return x


@pytest.mark.parametrize("size", [2, 3, 6, 7, 20, 21, 70, 71])
def test_every_ordered_pair_is_tested(size):
    # A leak between any one ordered pair is found, for every pair: the codes cover all of them.
    pairs = [(i, j) for i in range(size) for j in range(size) if i != j]
    if size > 7:
        pairs = pairs[:: max(1, len(pairs) // 40)]
    for reader, source in pairs:
        verification = BatchGradientVerification(Block("leak", a=source, b=reader))
        assert not verification.check(input_array=torch.randn(size, FEATURES)), (reader, source)
        assert verification.report.pairs == [(reader, source)]

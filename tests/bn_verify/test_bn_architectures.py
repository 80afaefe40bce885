"""Real architectures: clean where they should be, every conv reported in a VGG-BN stack."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bn_verify import BatchNormVerification


def test_resnet_style_stack_without_biases_is_clean(nets):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nets.BasicBlock(8),
        nets.BasicBlock(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    verification = BatchNormVerification(model)
    assert verification.check(torch.randn(2, 3, 8, 8))
    assert verification.report.normalizations_checked == 5


@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
def test_transformer_encoder_is_clean(norm_first):
    layer = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, norm_first=norm_first)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    verification = BatchNormVerification(model.eval())
    assert verification.check(torch.randn(2, 5, 16))
    # out_proj, linear1 and linear2 of both layers were followed and found needed
    assert verification.report.biased_layers_checked == 6


def test_vgg_bn_stack_reports_every_conv(nets):
    model = nets.vgg_bn()
    verification = BatchNormVerification(model)
    assert not verification.check(torch.randn(2, 3, 16, 16))
    assert verification.detected_pairs == [("0", "1"), ("4", "5"), ("8", "9")]
    assert verification.report.wasted_parameters == 8 + 16 + 16


@pytest.mark.parametrize("head", ["BertModel", "BertForSequenceClassification", "BertForMaskedLM"])
def test_huggingface_bert_from_tiny_config_is_clean(head):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    model = getattr(transformers, head)(config).eval()
    ids = torch.randint(0, 60, (2, 7))
    verification = BatchNormVerification(model)
    assert verification.check({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert verification.report.normalizations_checked >= 5


def test_mlp_with_batchnorm_reports_each_linear():
    model = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)
    )
    assert BatchNormVerification(model).check(torch.randn(5, 4)) is False

import dataclasses
import enum
import json
import warnings

import pytest
import torch
from torch import nn

from verify_common import describe_module, emit_warning, json_safe


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass(frozen=True)
class Finding:
    name: str
    axes: tuple[int, ...]
    color: Color


@pytest.mark.parametrize(
    ("name", "module", "detail", "expected"),
    [
        ("enc.0", nn.Conv2d(3, 8, 3), "8 channels", "'enc.0' (Conv2d, 8 channels)"),
        ("enc.1", nn.BatchNorm2d(8), "", "'enc.1' (BatchNorm2d)"),
        ("", nn.ReLU(), "", "'<root>' (ReLU)"),
        ("fn", None, "", "'fn'"),
    ],
    ids=["detail", "no-detail", "root", "no-module"],
)
def test_describe_module(name, module, detail, expected):
    assert describe_module(name, module, detail) == expected


def test_json_safe_round_trips_through_json():
    value = {"finding": Finding("a", (0, 2), Color.RED), "size": torch.Size([2, 3]), "t": torch.tensor([1, 2]), "s": {3, 1}}
    text = json.dumps(json_safe(value))
    assert json.loads(text) == {
        "finding": {"name": "a", "axes": [0, 2], "color": "red"},
        "size": [2, 3],
        "t": [1, 2],
        "s": [1, 3],
    }


def test_emit_warning_points_at_the_caller():
    def library_function():
        emit_warning("look here", UserWarning)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        library_function()
    assert caught[0].filename == __file__

import collections
import dataclasses

import pytest
import torch

from verify_common import iter_tensors, map_tensors


@dataclasses.dataclass
class Batch:
    image: torch.Tensor
    label: torch.Tensor | None = None
    name: str = "x"


Pair = collections.namedtuple("Pair", ["left", "right"])


def test_iter_tensors_walks_every_container_in_order():
    a, b, c, d = (torch.full((1,), float(i)) for i in range(4))
    nested = {"first": (a, [b, None, "text"]), "second": Batch(c, d), "third": 7}
    assert [t.item() for t in iter_tensors(nested)] == [0.0, 1.0, 2.0, 3.0]


def test_iter_tensors_of_a_leaf_without_tensors_is_empty():
    assert list(iter_tensors(None)) == []
    assert list(iter_tensors({"a": 1, "b": "s"})) == []


@pytest.mark.parametrize(
    "container",
    [
        (torch.ones(1), torch.ones(2)),
        [torch.ones(1), torch.ones(2)],
        Pair(torch.ones(1), torch.ones(2)),
        collections.OrderedDict(a=torch.ones(1), b=torch.ones(2)),
        {"a": torch.ones(1), "b": torch.ones(2)},
    ],
    ids=["tuple", "list", "namedtuple", "ordereddict", "dict"],
)
def test_map_tensors_keeps_the_container_type(container):
    doubled = map_tensors(container, lambda t: t * 2)
    assert type(doubled) is type(container)
    assert [t.sum().item() for t in iter_tensors(doubled)] == [2.0, 4.0]


def test_map_tensors_rebuilds_dataclasses_and_leaves_other_values():
    batch = Batch(torch.ones(2), None, "keep")
    mapped = map_tensors(batch, lambda t: t + 1)
    assert isinstance(mapped, Batch)
    assert mapped.image.tolist() == [2.0, 2.0]
    assert mapped.label is None and mapped.name == "keep"
    assert batch.image.tolist() == [1.0, 1.0]


def test_map_tensors_rebuilds_hugging_face_model_output():
    transformers = pytest.importorskip("transformers")
    output = transformers.modeling_outputs.BaseModelOutput(last_hidden_state=torch.ones(2, 3))
    mapped = map_tensors(output, lambda t: t * 3)
    assert type(mapped) is type(output)
    assert mapped.last_hidden_state.sum().item() == 18.0

import pickle
from multiprocessing.reduction import ForkingPickler

import pytest
import torch
import torch.multiprocessing  # noqa: F401  (registers the reductions that share tensors)

from fgbg.data.packed import PackedBatch, packed, packed_copy

SHAPES = {"background": (2, 3, 4, 4), "mask": (2, 1, 4, 4)}


def storages(batch: dict) -> set[int]:
    return {value.untyped_storage().data_ptr() for value in batch.values()}


def test_packed_tensors_are_contiguous_views_of_one_storage():
    batch = packed(SHAPES)
    assert {key: tuple(value.shape) for key, value in batch.items()} == SHAPES
    assert all(value.is_contiguous() and value.dtype == torch.float32 for value in batch.values())
    assert len(storages(batch)) == 1 and batch.flat.numel() == 2 * 3 * 16 + 2 * 16
    batch["background"].fill_(0)
    batch["mask"].fill_(1)  # the views do not overlap
    assert batch["background"].eq(0).all() and batch["mask"].eq(1).all()


@pytest.mark.parametrize("dumps", [pickle.dumps, lambda batch: bytes(ForkingPickler.dumps(batch))])
def test_a_packed_batch_arrives_as_a_dict_of_views_of_one_storage(dumps):
    tensors = {"background": torch.rand(2, 3, 4, 4), "mask": torch.rand(2, 1, 4, 4)}
    arrived = pickle.loads(dumps(packed_copy(tensors)))
    assert type(arrived) is dict and arrived.keys() == tensors.keys()
    assert all(torch.equal(arrived[key], tensors[key]) for key in tensors)
    assert len(storages(arrived)) == 1


def test_a_batch_whose_value_was_replaced_pickles_as_a_plain_dict():
    batch = packed_copy({"background": torch.rand(2, 3, 4, 4), "mask": torch.rand(2, 1, 4, 4)})
    replaced = torch.zeros(2, 1, 4, 4)
    batch["mask"] = replaced
    arrived = pickle.loads(pickle.dumps(batch))
    assert torch.equal(arrived["mask"], replaced) and torch.equal(arrived["background"], batch["background"])


def test_a_packed_batch_made_as_a_dict_pickles_as_one():
    arrived = pickle.loads(pickle.dumps(PackedBatch(a=torch.ones(2))))
    assert type(arrived) is dict and torch.equal(arrived["a"], torch.ones(2))

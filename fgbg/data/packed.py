"""Batches whose tensors are views of one storage, so that a loader worker hands a batch over in one piece.

torch passes a tensor from a DataLoader worker to the training process by sharing its storage; with the
default ``file_descriptor`` strategy each storage is a file descriptor sent through a socket, one round trip
per storage. A batch of four tensors made four, and on 2 cores that hand-over, not decoding, was the ceiling
of loading with workers (bench/README.md). A :class:`PackedBatch` pickles as its one flat storage and the
layout of its views, and arrives as a plain dict of views of it; a :class:`PixelHandover` (what the datasets'
``__getitems__`` gives in a worker) sends a batch's uint8 pixels that way and is made float on arrival.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import get_worker_info

if TYPE_CHECKING:  # transforms makes its tensors with packed()
    from fgbg.data.transforms import Preprocessing


class PackedBatch(dict):
    """A dict of tensors that are views of ``flat``, one 1-D storage (made by :func:`packed`).

    Pickled (as a loader worker's result is), it crosses as ``flat`` and the views' layout; a dict whose
    values were replaced by other tensors pickles as a plain dict.
    """

    flat: Tensor | None = None

    def __reduce__(self):
        if self.flat is None or not all(_is_view_of(value, self.flat) for value in self.values()):
            return dict, (dict(self),)
        layout = [(key, value.storage_offset(), tuple(value.shape)) for key, value in self.items()]
        return _views, (self.flat, layout)


def packed(
    shapes: Mapping[str, tuple[int, ...]], dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> PackedBatch:
    """Empty contiguous tensors of ``shapes`` (key -> shape) on ``device`` (default: the CPU), views of one
    storage: in shared memory when made in a loader worker, where it is bound for the training process."""
    sizes = [math.prod(shape) for shape in shapes.values()]
    if get_worker_info() is not None and torch.device(device or "cpu").type == "cpu":
        flat = _shared(sum(sizes), dtype)
    else:
        flat = torch.empty(sum(sizes), dtype=dtype, device=device)
    out, start = PackedBatch(), 0
    for (key, shape), size in zip(shapes.items(), sizes):
        out[key] = flat[start : start + size].view(shape)
        start += size
    out.flat = flat
    return out


def packed_copy(tensors: Mapping[str, Tensor]) -> PackedBatch:
    """``tensors`` (one dtype, on one device) copied into a :class:`PackedBatch` there."""
    first = next(iter(tensors.values()))
    out = packed({key: tuple(value.shape) for key, value in tensors.items()}, first.dtype, first.device)
    for key, value in tensors.items():
        out[key].copy_(value)
    return out


class PixelHandover:
    """A batch's uint8 pixels (``{key: (B, ...) array}``, as ``Preprocessing.resized`` gives them) on their way
    from a loader worker: pickled as one uint8 storage, made float tensors by ``preprocessing`` on arrival.

    Per batch the worker's cost is dominated by creating the shared-memory segment, which grows with its bytes;
    the float conversion it moves to the training process is a few element-wise passes.
    """

    def __init__(self, preprocessing: Preprocessing, pixels: Mapping[str, np.ndarray]):
        self.preprocessing = preprocessing
        self.pixels = packed({key: value.shape for key, value in pixels.items()}, torch.uint8)
        for key, value in pixels.items():
            self.pixels[key].numpy()[...] = value

    def __reduce__(self):
        return _made_float, (self.preprocessing, self.pixels)


def _made_float(preprocessing: Preprocessing, pixels: Mapping[str, Tensor]) -> PackedBatch:
    return preprocessing.tensors({key: value.numpy() for key, value in pixels.items()})


def collated(batch: PackedBatch) -> PackedBatch:
    """The DataLoader ``collate_fn`` of this package's datasets: their ``__getitems__`` returns the batch made."""
    return batch


def _shared(numel: int, dtype: torch.dtype) -> Tensor:
    # Allocated in shared memory at once, as torch's default_collate does in workers: sharing an ordinary
    # tensor when it is pickled would copy it there.
    storage = torch.UntypedStorage._new_shared(numel * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, (numel,))


def _is_view_of(tensor: Tensor, flat: Tensor) -> bool:
    return isinstance(tensor, Tensor) and tensor.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()


def _views(flat: Tensor, layout: list[tuple[str, int, tuple[int, ...]]]) -> dict[str, Tensor]:
    """The dict a :class:`PackedBatch` pickled as: each ``(key, offset, shape)`` a view of ``flat``."""
    return {key: flat[offset : offset + math.prod(shape)].view(shape) for key, offset, shape in layout}

"""Map-style datasets of samples: read straight from the batch zips (no extraction), or from the decoded cache."""

from __future__ import annotations

import abc
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import simplejpeg
import torch
from torch.utils.data import Dataset, get_worker_info

from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, MASK
from fgbg.data.index import SAMPLE_IMAGES, sample_id
from fgbg.data.packed import PackedBatch, PixelHandover
from fgbg.data.transforms import Preprocessing
from fgbg.errors import check_choice
from fgbg.format.names import BG, BG_SIZE, composite_member, source_member
from fgbg.format.zipdir import MemberReader

log = logging.getLogger(__name__)

# What to do with a sample whose image is corrupt: raise naming it, or skip it and count.
BAD_SAMPLE_CHOICES = ("raise", "skip")


class PixelDataset(Dataset, abc.ABC):
    """Items follow the batch contract (:mod:`fgbg.data.batch`); subclasses supply uint8 pixels.

    ``has_depth`` False (mask-only data, made with depth=none): items have no ``depth`` key, and no depth
    map is read. A DataLoader fetches a whole batch through ``__getitems__``: its pixels are stacked and
    turned into float tensors at once (per image, those conversions cost as much as decoding), views of one
    storage (:class:`~fgbg.data.packed.PackedBatch`); a loader worker hands its pixels over in one piece.
    """

    def __init__(self, samples: np.ndarray, preprocessing: Preprocessing, has_depth: bool):
        self.samples, self.preprocessing, self.has_depth = samples, preprocessing, has_depth

    def __len__(self) -> int:
        return len(self.samples)

    @abc.abstractmethod
    def stacked_pixels(self, indices: list[int]) -> dict[str, np.ndarray]:
        """Each key of the batch contract -> uint8 pixels of ``indices`` at the preprocessing's size, stacked."""

    def batch(self, indices: list[int]) -> PackedBatch:
        """The batch of ``indices`` as float tensors: fewer samples when bad ones were skipped."""
        return self.preprocessing.tensors(self.stacked_pixels(indices))

    def __getitems__(self, indices: list[int]) -> PackedBatch | PixelHandover:
        """:meth:`batch`, as a DataLoader fetches it (its ``collate_fn``: :func:`~fgbg.data.packed.collated`). In a
        loader worker the batch crosses to the training process as its uint8 pixels, a quarter of the float
        tensors' bytes per plane (an eighth in gray, whose inputs the tensors replicate to 3 channels), and is
        made float there (:class:`~fgbg.data.packed.PixelHandover`)."""
        if get_worker_info() is None:
            return self.batch(indices)
        return PixelHandover(self.preprocessing, self.stacked_pixels(indices))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.batch([index]).items()}


class ZipSampleDataset(PixelDataset):
    """``samples`` (:data:`~fgbg.data.index.SAMPLE` rows) read from ``zips`` (``{batch: path}``) at the
    locations the index found; each worker process opens its own file descriptors.

    A background is shared by every composite made on it, so each process keeps those it has decoded
    (at most the dataset's backgrounds: 100 per zip, a few kB each).

    ``on_bad_sample``: ``raise`` (an error naming the zip and the member) or ``skip`` a sample with a
    truncated, corrupt or wrongly sized image (its batch is one smaller; ``skipped`` counts them per process).
    ``has_depth``: :attr:`fgbg.data.index.Selection.has_depth` (False: the samples have no depth member).
    """

    def __init__(
        self,
        zips: dict[int, Path],
        samples: np.ndarray,
        preprocessing: Preprocessing,
        on_bad_sample: str = "raise",
        has_depth: bool = True,
    ):
        check_choice("data.on_bad_sample", on_bad_sample, BAD_SAMPLE_CHOICES)
        super().__init__(samples, preprocessing, has_depth)
        self.zips, self.on_bad_sample, self.skipped = zips, on_bad_sample, 0
        self._handles: dict[int, MemberReader] = {}
        self._backgrounds: dict[tuple[int, int], np.ndarray] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        # Open zip handles cannot cross into worker processes; each worker reopens its own.
        return {**self.__dict__, "_handles": {}, "_backgrounds": {}}

    def _zip(self, batch: int) -> MemberReader:
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        if batch not in self._handles:
            self._handles[batch] = MemberReader(self.zips[batch])
        return self._handles[batch]

    def _decoded(self, sample: np.void, image: int, decode: Callable[[bytes], np.ndarray]) -> np.ndarray:
        """Image ``image`` (index into SAMPLE_IMAGES) of ``sample``, read and passed to ``decode``.

        Every image of the dataset is BG_SIZE square. Errors name the zip and the member; the name is
        made only then (making it for every image costs a tenth of loading).
        """
        try:
            data = self._zip(int(sample["batch"])).read(*sample["members"][image].item())
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            if (height, width) != (BG_SIZE, BG_SIZE):
                raise ValueError(f"{width}x{height} pixels, expected {BG_SIZE}x{BG_SIZE}")
            return decode(data)
        except (ValueError, zipfile.BadZipFile) as error:
            category = SAMPLE_IMAGES[image]
            member = source_member(BG, int(sample["bg"])) if category == BG else composite_member(category, sample_id(sample))
            raise type(error)(f"{self.zips[int(sample['batch'])]}:{member}: {error}") from error

    def _background(self, sample: np.void) -> np.ndarray:
        key = int(sample["batch"]), int(sample["bg"])
        if key not in self._backgrounds:
            self._backgrounds[key] = self._decoded(sample, 0, self.preprocessing.image)
        return self._backgrounds[key]

    def pixels(self, index: int) -> dict[str, np.ndarray]:
        """Sample ``index``'s JPEGs decoded at reduced scale, by key of the batch contract (not yet resized)."""
        sample, t = self.samples[index], self.preprocessing
        pixels = {  # images 1, 2 (3) of SAMPLE_IMAGES: the composite, its mask (its depth)
            BACKGROUND: self._background(sample),
            COMPOSITE: self._decoded(sample, 1, t.image),
            MASK: self._decoded(sample, 2, t.target),
        }
        if self.has_depth:
            pixels[DEPTH] = self._decoded(sample, 3, t.target)
        return pixels

    def _good_pixels(self, indices: list[int]) -> list[dict[str, np.ndarray]]:
        decoded = []
        for index in indices:
            try:
                decoded.append(self.pixels(index))
            except (ValueError, zipfile.BadZipFile) as error:
                if self.on_bad_sample == "raise":
                    raise
                self.skipped += 1
                log.warning("skipped a bad sample (%d in this process so far): %s", self.skipped, error)
        if not decoded:
            raise ValueError(f"every sample of a batch was bad (data.on_bad_sample=skip), e.g. sample {indices[0]}")
        return decoded

    def stacked_pixels(self, indices: list[int]) -> dict[str, np.ndarray]:
        decoded = self._good_pixels(indices)
        return self.preprocessing.resized({key: np.stack([d[key] for d in decoded]) for key in decoded[0]})

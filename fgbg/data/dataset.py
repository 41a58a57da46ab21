"""A map-style dataset reading samples straight from the batch zips (no extraction)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from torch.utils.data import Dataset

from ..names import BG, DEPTH, FG_BG, MASK_BLACK, composite_member, source_member
from .index import Sample
from .transforms import SampleTransform


class ZipSampleDataset(Dataset):
    """``samples`` read from ``zips`` (``{batch: path}``); each worker process opens its own zip handles."""

    def __init__(self, zips: dict[int, Path], samples: list[Sample], transform: SampleTransform):
        self.zips, self.samples, self.transform = zips, samples, transform
        self._handles: dict[int, zipfile.ZipFile] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict:
        # Open zip handles cannot cross into worker processes; each worker reopens its own.
        return {**self.__dict__, "_handles": {}}

    def _zip(self, batch: int) -> zipfile.ZipFile:
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        if batch not in self._handles:
            self._handles[batch] = zipfile.ZipFile(self.zips[batch])
        return self._handles[batch]

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        zf, path, t = self._zip(sample.batch), self.zips[sample.batch], self.transform
        bg, fg_bg, mask, depth = (
            source_member(BG, sample.id.bg),
            *(composite_member(c, sample.id) for c in (FG_BG, MASK_BLACK, DEPTH)),
        )
        return {
            "bg_image": t.image(zf.read(bg), BG, f"{path}:{bg}"),
            "fg_bg_image": t.image(zf.read(fg_bg), FG_BG, f"{path}:{fg_bg}"),
            "ms_bg_image": t.mask(zf.read(mask), f"{path}:{mask}"),
            "dp_image": t.depth(zf.read(depth), f"{path}:{depth}"),
        }

"""The LightningDataModule over the batch zips: strategy -> samples -> held-out split -> loaders."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from .cache import CachedSampleDataset, build
from .dataset import PixelDataset, ZipSampleDataset
from .index import select, split
from .transforms import SampleTransform


class ZipDataModule(L.LightningDataModule):
    """Samples of ``strategy`` (see ``conf/data/default.yaml``) from the zips in ``data_dir``.

    Args:
        data_dir: folder holding ``batch<N>_images.zip``.
        strategy: key of ``strategies``, e.g. ``4k``; each is ``{"batches": [...], "n_bg": N | None}``.
        split: keyword arguments of :func:`fgbg.data.index.split` (held-out fractions, seed).
        image_size, grayscale: the transform (the source document: 64, True).
        stats: per-category mean/std; used to normalise the inputs when ``normalize``.
        cache: decode the strategy's samples once into memory-mapped uint8 arrays under
            ``data_dir/cache/`` and read them from there (see :mod:`fgbg.data.cache`).
        on_bad_sample: ``raise`` or ``skip`` (and count) samples whose images are corrupt, when reading the zips.
    """

    def __init__(
        self,
        data_dir: str,
        strategy: str,
        strategies: dict,
        split: dict,
        image_size: int = 64,
        grayscale: bool = True,
        normalize: bool = False,
        stats: dict | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        cache: bool = False,
        on_bad_sample: str = "raise",
    ):
        super().__init__()
        self.data_dir, self.strategy, self.strategies, self.split_args = Path(data_dir), strategy, strategies, split
        self.transform = SampleTransform(image_size, grayscale, stats if normalize else None)
        self.batch_size, self.num_workers, self.cache = batch_size, num_workers, cache
        self.on_bad_sample = on_bad_sample
        self.parts: dict[str, PixelDataset] = {}
        self.split_description: dict = {}

    def _build_cache(self, zips: dict, samples: np.ndarray) -> Path:
        return build(self.data_dir, self.strategy, zips, samples, self.transform, self.num_workers)

    def prepare_data(self) -> None:
        # Lightning calls this on one process per node before setup: the cache is built once, not per device.
        if self.cache:
            self._build_cache(*select(self.data_dir, self.strategy, self.strategies))

    def setup(self, stage: str | None = None) -> None:
        if self.parts:
            return
        zips, samples = select(self.data_dir, self.strategy, self.strategies)
        parts, self.split_description = split(samples, **self.split_args)
        self.split_description = {"strategy": self.strategy, "data_dir": str(self.data_dir), **self.split_description}
        if self.cache:
            folder = self._build_cache(zips, samples)
            self.parts = {name: CachedSampleDataset(folder, part, self.transform) for name, part in parts.items()}
        else:
            self.parts = {name: ZipSampleDataset(zips, part, self.transform, self.on_bad_sample) for name, part in parts.items()}
        if self.trainer is not None and self.trainer.is_global_zero:
            out = Path(self.trainer.default_root_dir) / "split.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(self.split_description, indent=1))

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.parts[part],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

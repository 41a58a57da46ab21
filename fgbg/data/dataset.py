"""Map-style datasets of samples: read straight from the batch zips (no extraction), or from the decoded cache."""

from __future__ import annotations

import abc
import logging
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import simplejpeg
import torch
from torch.utils.data import Dataset

from ..names import BG, BG_SIZE, composite_member, source_member
from .index import SAMPLE_IMAGES, sample_id
from .transforms import BG_KEY, DEPTH_KEY, FG_BG_KEY, MASK_KEY, SampleTransform

log = logging.getLogger(__name__)


class PixelDataset(Dataset, abc.ABC):
    """Items follow the batch contract (see :class:`SampleTransform`); subclasses supply uint8 pixels.

    A DataLoader fetches a whole batch through ``__getitems__``: its pixels are stacked and turned into
    float tensors at once (per image, those conversions cost as much as decoding).
    """

    def __init__(self, samples: np.ndarray, transform: SampleTransform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    @abc.abstractmethod
    def stacked_pixels(self, indices: list[int]) -> dict[str, np.ndarray]:
        """Each key of the batch contract -> uint8 pixels of ``indices`` at the transform's size, stacked."""

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        batch = self.transform.tensors(self.stacked_pixels(indices))
        # Fewer than len(indices) when bad samples were skipped.
        return [{key: value[i] for key, value in batch.items()} for i in range(len(batch[BG_KEY]))]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]


class _ZipFile:
    """One zip's members read by their location (:data:`~fgbg.data.zipdir.MEMBER`), with ``os.pread``: no
    directory to parse when a worker opens the zip, and a third of ``ZipFile.read``'s time for small stored
    members. What ``ZipFile.read`` checks is checked: the local header's signature and the CRC.
    """

    _HEADER = struct.Struct("<4s22xHH")  # signature ... file name length, extra field length

    def __init__(self, path: Path):
        self.path, self.fd = path, os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def __del__(self) -> None:
        if hasattr(self, "fd"):  # not when opening failed
            os.close(self.fd)

    def _pread(self, size: int, offset: int) -> bytes:
        if hasattr(os, "pread"):
            return os.pread(self.fd, size, offset)
        os.lseek(self.fd, offset, os.SEEK_SET)  # Windows: each process has its own descriptors
        return os.read(self.fd, size)

    def read(self, member: np.void, name: str) -> bytes:
        """The data of ``member`` (``name``, for errors, is ``zip path:member name``)."""
        offset, size, crc, method = (int(member[f]) for f in ("header_offset", "size", "crc", "method"))
        header = self._pread(self._HEADER.size, offset)
        if len(header) != self._HEADER.size or header[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"{name}: bad local header (the zip is damaged)")
        _, name_length, extra_length = self._HEADER.unpack(header)
        data = self._pread(size, offset + self._HEADER.size + name_length + extra_length)
        if len(data) != size:
            raise zipfile.BadZipFile(f"{name}: truncated (the zip is damaged)")
        if method == zipfile.ZIP_DEFLATED:  # a zip tool may have re-packed the zip
            try:
                data = zlib.decompress(data, -zlib.MAX_WBITS)
            except zlib.error as error:
                raise zipfile.BadZipFile(f"{name}: cannot inflate ({error})") from error
        elif method != zipfile.ZIP_STORED:
            raise zipfile.BadZipFile(f"{name}: compression method {method} is not read here; store or deflate it")
        if zlib.crc32(data) != crc:
            raise zipfile.BadZipFile(f"{name}: bad CRC-32 (the zip is damaged)")
        return data


class ZipSampleDataset(PixelDataset):
    """``samples`` (:data:`~fgbg.data.index.SAMPLE` rows) read from ``zips`` (``{batch: path}``) at the
    locations the index found; each worker process opens its own file descriptors.

    A background is shared by every composite made on it, so each process keeps those it has decoded
    (at most the dataset's backgrounds: 100 per zip, a few kB each).

    ``on_bad_sample``: ``raise`` (an error naming the zip and the member) or ``skip`` a sample with a
    truncated, corrupt or wrongly sized image (its batch is one smaller; ``skipped`` counts them per process).
    """

    def __init__(
        self, zips: dict[int, Path], samples: np.ndarray, transform: SampleTransform, on_bad_sample: str = "raise"
    ):
        if on_bad_sample not in ("raise", "skip"):
            raise ValueError(f"on_bad_sample must be 'raise' or 'skip', got {on_bad_sample!r}")
        super().__init__(samples, transform)
        self.zips, self.on_bad_sample, self.skipped = zips, on_bad_sample, 0
        self._handles: dict[int, _ZipFile] = {}
        self._backgrounds: dict[tuple[int, int], np.ndarray] = {}
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        # Open zip handles cannot cross into worker processes; each worker reopens its own.
        return {**self.__dict__, "_handles": {}, "_backgrounds": {}}

    def _zip(self, batch: int) -> _ZipFile:
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        if batch not in self._handles:
            self._handles[batch] = _ZipFile(self.zips[batch])
        return self._handles[batch]

    def _read(self, sample: np.void, image: int) -> tuple[bytes, str]:
        """Image ``image`` (index into SAMPLE_IMAGES) of ``sample``: its bytes and its name for errors.

        Every image of the dataset is BG_SIZE square.
        """
        category, batch = SAMPLE_IMAGES[image], int(sample["batch"])
        member = source_member(BG, int(sample["bg"])) if category == BG else composite_member(category, sample_id(sample))
        name = f"{self.zips[batch]}:{member}"
        data = self._zip(batch).read(sample["members"][image], name)
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as error:
            raise ValueError(f"{name}: cannot decode JPEG ({error})") from error
        if (height, width) != (BG_SIZE, BG_SIZE):
            raise ValueError(f"{name}: {width}x{height} pixels, expected {BG_SIZE}x{BG_SIZE}")
        return data, name

    def _background(self, sample: np.void) -> np.ndarray:
        key = int(sample["batch"]), int(sample["bg"])
        if key not in self._backgrounds:
            self._backgrounds[key] = self.transform.image(*self._read(sample, 0))
        return self._backgrounds[key]

    def pixels(self, index: int) -> dict[str, np.ndarray]:
        """Sample ``index``'s JPEGs decoded at reduced scale, by key of the batch contract (not yet resized)."""
        sample, t = self.samples[index], self.transform
        fg_bg, mask, depth = (self._read(sample, image) for image in range(1, len(SAMPLE_IMAGES)))
        return {
            BG_KEY: self._background(sample),
            FG_BG_KEY: t.image(*fg_bg),
            MASK_KEY: t.target(*mask),
            DEPTH_KEY: t.target(*depth),
        }

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
        return self.transform.resized({key: np.stack([d[key] for d in decoded]) for key in decoded[0]})

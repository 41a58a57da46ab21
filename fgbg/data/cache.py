"""A decoded cache: a strategy's samples decoded once to uint8 pixels, then read from memory-mapped arrays.

Decoding the JPEGs is most of the cost of loading a sample; the cache pays it once per (zips, selected
samples, image size, grayscale) and afterwards feeds batches with a few array copies. It lives under
``<data_dir>/cache/<strategy>_<size>_<gray|rgb>_<key>/``, where ``key`` hashes what decides its contents
(each zip's name, size and modification time, the samples' selection, the preprocessing's size and colour),
so a regenerated dataset or another selection gets a cache of its own. It is built in a temporary folder
(``<folder>.partial-<pid>``) renamed into place when complete: an interrupted build leaves nothing that
would be read. One process builds a given cache (:func:`~fgbg.format.locks.sole_writer`; a second waits, then
reads it), its loader workers die with it, and partials of killed builds are removed by the next build.

Per folder, one ``.npy`` per key of the batch contract (pixels as ``Preprocessing.resized`` gives them):
``composite``, ``mask``, ``depth`` (none for mask-only data) ``(N, ...)`` in the order of ``samples.npy``, ``(N, 6)``
int32 rows ``(batch, fg, bg, flip, k, background row)``, and ``background`` ``(backgrounds, ...)``, each
background once. Normalisation is not cached: it is applied when the pixels become tensors.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from contextlib import suppress
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, MASK
from fgbg.data.dataset import PixelDataset, ZipSampleDataset
from fgbg.data.transforms import Preprocessing
from fgbg.format.locks import sole_writer
from fgbg.format.writer import PARTIAL_SUFFIX, partial_path
from fgbg.format.zips import ArchiveError
from fgbg.processes import die_with_parent
from fgbg.progress import progress

SAMPLES = "samples.npy"
PER_SAMPLE = (COMPOSITE, MASK, DEPTH)
# Samples decoded per task of the build's worker processes.
BUILD_CHUNK = 512


def _table(samples: np.ndarray) -> np.ndarray:
    """:data:`~fgbg.data.index.SAMPLE` rows -> ``(N, 5)`` int32 rows ``(batch, fg, bg, flip, k)``."""
    return np.column_stack([samples[name].astype(np.int32) for name in ("batch", "fg", "bg", "flip", "k")]).reshape(-1, 5)


def per_sample(has_depth: bool) -> tuple[str, ...]:
    """The keys of the batch contract cached per sample: :data:`PER_SAMPLE`, less DEPTH for mask-only data."""
    return PER_SAMPLE if has_depth else tuple(key for key in PER_SAMPLE if key != DEPTH)


def cache_dir(
    data_dir: Path,
    strategy: str,
    zips: dict[int, Path],
    table: np.ndarray,
    preprocessing: Preprocessing,
    has_depth: bool = True,
) -> Path:
    """The folder of the cache of ``strategy``'s samples (``table``, see :func:`_table`) from ``zips``."""
    stats = {str(batch): [path.name, path.stat().st_size, path.stat().st_mtime_ns] for batch, path in sorted(zips.items())}
    # The arrays' names too: a cache written under other names is another cache, not a broken one.
    decided_by = {
        "zips": stats,
        "size": preprocessing.image_size,
        "grayscale": preprocessing.grayscale,
        "arrays": [BACKGROUND, *per_sample(has_depth)],
    }
    digest = hashlib.sha256(json.dumps(decided_by, sort_keys=True).encode())
    digest.update(table.tobytes())
    colour = "gray" if preprocessing.grayscale else "rgb"
    return Path(data_dir) / "cache" / f"{strategy}_{preprocessing.image_size}_{colour}_{digest.hexdigest()[:12]}"


class _Chunks(Dataset):
    """Consecutive chunks of a zip dataset's samples, each decoded and stacked (the build's work items)."""

    def __init__(self, source: ZipSampleDataset):
        self.source = source

    def __len__(self) -> int:
        return -(-len(self.source) // BUILD_CHUNK)

    def __getitem__(self, chunk: int) -> dict[str, np.ndarray]:
        indices = range(chunk * BUILD_CHUNK, min((chunk + 1) * BUILD_CHUNK, len(self.source)))
        return {key: value for key, value in self.source.stacked_pixels(list(indices)).items() if key != BACKGROUND}


def _unchanged(chunk: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return chunk


def build(
    data_dir: Path,
    strategy: str,
    zips: dict[int, Path],
    samples: np.ndarray,
    preprocessing: Preprocessing,
    workers: int = 0,
    has_depth: bool = True,
) -> Path:
    """The cache folder of ``strategy``'s ``samples``, decoded with ``workers`` processes unless it exists;
    ``has_depth`` False (mask-only data): no depth array."""
    table = _table(samples)
    folder = cache_dir(data_dir, strategy, zips, table, preprocessing, has_depth)
    if folder.exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_partials(folder.parent)
    with sole_writer(folder, wait=True):  # another process building it: wait, then use what it built
        if not folder.exists():
            _write(folder, ZipSampleDataset(zips, samples, preprocessing, has_depth=has_depth), table, workers)
    return folder


def _remove_abandoned_partials(root: Path) -> None:
    """Remove the partial folders in ``root`` whose builders are gone: those whose cache's lock is free."""
    for owner in {p.with_name(p.name.rsplit(PARTIAL_SUFFIX, 1)[0]) for p in root.glob(f"*{PARTIAL_SUFFIX}-*")}:
        with suppress(ArchiveError), sole_writer(owner):
            pass  # taking the lock removes the owner's leftovers; a live builder keeps it (ArchiveError)


def _write(folder: Path, source: ZipSampleDataset, table: np.ndarray, workers: int) -> None:
    """Decode ``source``'s samples (rows ``table``) into a partial folder, then rename it to ``folder``."""
    # Each background's row in background.npy, and the first sample that shows it.
    _, first_use, bg_rows = np.unique(table[:, :3:2], axis=0, return_index=True, return_inverse=True)
    partial = partial_path(folder)
    partial.mkdir()
    try:
        np.save(partial / SAMPLES, np.column_stack([table, bg_rows.reshape(-1).astype(np.int32)]))
        # Through the samples' own path, so that each background's pixels are exactly those loading gives.
        np.save(partial / f"{BACKGROUND}.npy", source.stacked_pixels(first_use.tolist())[BACKGROUND])
        arrays, start = {}, 0
        loader = DataLoader(
            _Chunks(source), batch_size=None, num_workers=workers, collate_fn=_unchanged,
            worker_init_fn=functools.partial(_die_with_parent, os.getpid()),
        )
        with progress(total=len(table), desc=f"decoding the cache {folder.name}", unit="sample") as bar:
            for chunk in loader:
                for key, pixels in chunk.items():
                    if key not in arrays:
                        shape = (len(table), *pixels.shape[1:])
                        arrays[key] = np.lib.format.open_memmap(partial / f"{key}.npy", "w+", np.uint8, shape)
                    arrays[key][start : start + len(pixels)] = pixels
                n = len(next(iter(chunk.values())))
                start += n
                bar.update(n)
        for array in arrays.values():
            array.flush()
        del arrays  # unmapped before the folder moves
        partial.rename(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _die_with_parent(parent_pid: int, worker_id: int) -> None:
    """A loader worker's ``worker_init_fn``: :func:`~fgbg.processes.die_with_parent`."""
    die_with_parent(parent_pid)


class CachedSampleDataset(PixelDataset):
    """``samples`` (all held by the cache in ``folder``) read from its memory-mapped arrays.

    Items equal :class:`ZipSampleDataset`'s for the same samples, preprocessing and ``has_depth`` (that the
    cache was built with): the same pixels become tensors the same way. Each process maps the arrays itself
    (a mapping does not cross into workers).
    """

    def __init__(self, folder: Path, samples: np.ndarray, preprocessing: Preprocessing, has_depth: bool = True):
        super().__init__(samples, preprocessing, has_depth)
        self.folder = Path(folder)
        table = np.load(self.folder / SAMPLES)
        row_of = {tuple(key): row for row, key in enumerate(table[:, :5].tolist())}
        self.rows = np.array([row_of[tuple(key)] for key in _table(samples).tolist()], np.int64)
        self.bg_rows = table[:, 5].astype(np.int64)
        self._arrays: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": {}}

    def _array(self, key: str) -> np.ndarray:
        if key not in self._arrays:
            self._arrays[key] = np.load(self.folder / f"{key}.npy", mmap_mode="r")
        return self._arrays[key]

    def stacked_pixels(self, indices: list[int]) -> dict[str, np.ndarray]:
        rows = self.rows[indices]
        pixels = {key: self._array(key)[rows] for key in per_sample(self.has_depth)}
        pixels[BACKGROUND] = self._array(BACKGROUND)[self.bg_rows[rows]]
        return pixels


class DeviceCachedDataset(CachedSampleDataset):
    """:class:`CachedSampleDataset` with the cache's arrays moved to ``device`` (a GPU) once: a batch is gathered
    and made float there, so that a GPU fast enough to outrun decoding is fed at the speed of indexing.

    Items equal :class:`CachedSampleDataset`'s. Read in the training process only (``num_workers=0``): a CUDA
    tensor does not cross into loader workers, and nothing is left for them to do. The arrays take
    ``samples x (composite, mask, depth)`` bytes of device memory: about 20 kB per sample at 64x64 in colour.
    """

    def __init__(self, folder: Path, samples: np.ndarray, preprocessing: Preprocessing, has_depth: bool, device: str):
        super().__init__(folder, samples, preprocessing, has_depth)
        self.device = torch.device(device)
        self._on_device: dict[str, torch.Tensor] = {}
        self._device_rows = torch.from_numpy(self.rows).to(self.device)
        self._device_bg_rows = torch.from_numpy(self.bg_rows).to(self.device)

    def _tensor(self, key: str) -> torch.Tensor:
        if key not in self._on_device:
            self._on_device[key] = torch.from_numpy(np.array(self._array(key))).to(self.device)  # a writable copy
        return self._on_device[key]

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = self._device_rows[torch.as_tensor(indices, device=self.device)]
        pixels = {key: self._tensor(key)[rows] for key in per_sample(self.has_depth)}
        pixels[BACKGROUND] = self._tensor(BACKGROUND)[self._device_bg_rows[rows]]
        return self.preprocessing.torch_tensors(pixels)

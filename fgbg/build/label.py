"""The depth stage: label the composites of finished batch zips with a :class:`~fgbg.build.teacher.Teacher`.

Each zip is rewritten as ``<zip>.partial-<pid>`` and renamed over the original only when complete: first
the new ``depth_fg_bg_jpg`` maps under the seed's names, in the composites' order; then every other member
but the old depth maps, copied as it was stored, in its order; then the manifest, its ``settings.depth``
now the teacher's record. An interrupted run leaves each zip either labelled or as it was, and resumes
per zip: a zip whose manifest already holds the same record is skipped. The run holds the zips' write
locks (:func:`~fgbg.format.locks.sole_writer`) throughout, and checks every zip's members against their CRCs
before it trusts or copies them.

While the model runs on the device, a thread pool reads and decodes the next composites and encodes the
finished depth maps (simplejpeg releases the GIL), so the device does not wait on the CPU.
"""

from __future__ import annotations

import os
import threading
import zipfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import simplejpeg
import torch

from fgbg.build.teacher import Teacher
from fgbg.errors import check_int
from fgbg.format.locks import sole_writer_of_each
from fgbg.format.manifest import as_json, damaged_member, manifest_of
from fgbg.format.names import (
    BG_SIZE,
    DEPTH,
    FG_BG,
    MANIFEST,
    BadNameError,
    SampleId,
    composite_member,
    images_by_category,
    parse_member,
)
from fgbg.format.writer import BatchWriter, atomic_zip, encode_jpeg
from fgbg.format.zips import ArchiveError
from fgbg.progress import progress


def label_zips(
    paths: list[Path],
    teacher: Teacher,
    quality: int,
    workers: int | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    wait_for_lock: bool = False,
) -> list[Path]:
    """Label each zip of ``paths`` that is not labelled with ``teacher``'s record yet; return those written.

    Args:
        quality: JPEG quality of the depth maps for zips whose manifest does not give one.
        workers: decode/encode threads; None = all cores.
        overwrite: relabel zips that already hold this teacher's labels.
        wait_for_lock: wait for another run writing one of the zips to end, rather than stop.
    """
    if workers is not None:
        check_int("workers", workers, 1)
    with sole_writer_of_each(paths, wait_for_lock):
        return label_locked_zips(paths, teacher, quality, workers, overwrite, show_progress)


def label_locked_zips(
    paths: list[Path],
    teacher: Teacher,
    quality: int,
    workers: int | None,
    overwrite: bool,
    show_progress: bool,
) -> list[Path]:
    """:func:`label_zips` for a caller that holds the zips' write locks already (generation, for its run)."""
    teacher.load()
    record = as_json(teacher.describe())  # as a manifest gives it back
    todo = [(path, n) for path, found, n in map(survey, paths) if overwrite or found != record]
    desc = f"labelling {len(todo)} of {len(paths)} zips"
    with progress(total=sum(n for _, n in todo), desc=desc, unit="image", enabled=show_progress) as bar:
        return [label_zip(path, teacher, quality, workers, bar.update) for path, _ in todo]


def label_zip(
    path: Path,
    teacher: Teacher,
    quality: int,
    workers: int | None = None,
    progress: Callable[[int], None] = lambda n: None,
    dest: Path | None = None,
) -> Path:
    """Write ``path`` with ``teacher``'s depth maps to ``dest`` (default: over ``path``, atomically)."""
    dest = dest or path
    threads = workers or os.cpu_count() or 1
    try:
        with atomic_zip(dest, quality) as writer, zipfile.ZipFile(path) as source, ThreadPoolExecutor(threads) as pool:
            manifest = manifest_of(source)
            quality = manifest.get("settings", {}).get("jpeg_quality", quality)
            old_depth = set(images_by_category(source.namelist())[DEPTH])
            kept = [i for i in source.infolist() if i.filename != MANIFEST and i.filename not in old_depth]
            composites = [parse_member(member)[1] for member in images_by_category([i.filename for i in kept])[FG_BG]]
            depth = _DepthWriter(path, source, writer, quality, progress)
            depth.write(composites, teacher, pool, ahead=2 * threads)
            writer.copy_members(source, kept)  # last: it takes over (and closes) the source
            writer.write_manifest(_labelled(manifest, teacher, len(composites)))
    except (zipfile.BadZipFile, BadNameError) as error:
        raise ArchiveError(f"{path}: cannot label ({error})") from error
    return dest


def _labelled(manifest: dict, teacher: Teacher, n_depth: int) -> dict:
    """``manifest`` with ``teacher``'s record as its depth settings, ``n_depth`` depth maps and the versions used."""
    manifest.setdefault("settings", {})["depth"] = teacher.describe()
    manifest.setdefault("counts", {})[DEPTH] = n_depth
    manifest.setdefault("versions", {}).update({pkg: version(pkg) for pkg in ("torch", "transformers")})
    return manifest


def survey(path: Path) -> tuple[Path, dict | None, int]:
    """``(path, its depth record or None, number of composites)`` of an intact zip; :class:`ArchiveError` if damaged."""
    try:
        with zipfile.ZipFile(path) as zf:
            damaged = damaged_member(zf)
            if damaged is not None:
                raise ArchiveError(
                    f"{path}: member {damaged} is damaged (it fails its CRC); write the zip again "
                    "(python generate.py ... overwrite=true) and label it"
                )
            n = len(images_by_category(zf.namelist())[FG_BG])
            return path, manifest_of(zf).get("settings", {}).get("depth"), n
    except zipfile.BadZipFile as error:
        raise ArchiveError(f"{path}: not a readable zip ({error})") from error


class _DepthWriter:
    """Appends the depth maps of one zip's composites in their order: decode, model and encode overlap."""

    def __init__(self, path: Path, source: zipfile.ZipFile, writer: BatchWriter, quality: int, progress: Callable):
        self.path, self.source, self.writer, self.quality, self.progress = path, source, writer, quality, progress
        self.read_lock = threading.Lock()  # one ZipFile handle is not safe to read from several threads at once
        self.pin = False

    def write(self, composites: list[SampleId], teacher: Teacher, pool: ThreadPoolExecutor, ahead: int) -> None:
        """``ahead`` bounds the batches decoded ahead of the model and the encoded ones waiting to be written."""
        self.pin = teacher.device.type == "cuda"
        chunks = [composites[i : i + teacher.batch_size] for i in range(0, len(composites), teacher.batch_size)]
        encoded: deque[tuple[list[SampleId], Future]] = deque()
        for chunk, depth in zip(chunks, teacher.predict_batches(_in_order(pool, self.decode, chunks, ahead))):
            encoded.append((chunk, pool.submit(self.encode, depth)))
            while encoded and (encoded[0][1].done() or len(encoded) > ahead):
                self.write_oldest(encoded)
        while encoded:
            self.write_oldest(encoded)

    def decode(self, chunk: list[SampleId]) -> torch.Tensor:
        """The composites of ``chunk`` as one ``(B, BG_SIZE, BG_SIZE, 3)`` uint8 tensor (pinned for a GPU)."""
        images = torch.empty((len(chunk), BG_SIZE, BG_SIZE, 3), dtype=torch.uint8, pin_memory=self.pin)
        array = images.numpy()
        for i, sample in enumerate(chunk):
            member = composite_member(FG_BG, sample)
            with self.read_lock:
                data = self.source.read(member)
            image = simplejpeg.decode_jpeg(data, colorspace="RGB")
            if image.shape != array.shape[1:]:
                h, w = image.shape[:2]
                raise ArchiveError(f"{self.path}: {member} is {w}x{h}, composites are {BG_SIZE}x{BG_SIZE}")
            array[i] = image
        return images

    def encode(self, depth: np.ndarray) -> list[bytes]:
        """``(B, H, W)`` uint8 depth maps -> their JPEG bytes."""
        return [encode_jpeg(d, self.quality) for d in depth]

    def write_oldest(self, encoded: deque) -> None:
        chunk, future = encoded.popleft()
        for sample, data in zip(chunk, future.result()):
            self.writer.write_bytes(composite_member(DEPTH, sample), data)
        self.progress(len(chunk))


def _in_order(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, ahead: int) -> Iterator:
    """``fn(item)`` for each item, run on ``pool`` with up to ``ahead`` in flight, yielded in order."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()

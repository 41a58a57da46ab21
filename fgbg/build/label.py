"""The depth stage: label the composites of finished batch zips with a :class:`~fgbg.build.depth.Teacher`.

Each zip is rewritten as ``<zip>.partial-<pid>`` and renamed over the original only when complete: first
the new ``depth_fg_bg_jpg`` maps under the seed's names, in the composites' order; then every other member
but the old depth maps, copied as it was stored, in its order; then the manifest, its ``settings.depth``
now the teacher's record. An interrupted run leaves each zip either labelled or as it was, and resumes
per zip: a zip whose manifest already holds the same record is skipped. The run holds the zips' write
locks (:func:`~fgbg.format.archive.sole_writer`) throughout, and checks every zip's members against their CRCs
before it trusts or copies them.

While the model runs on the device, a thread pool reads and decodes the next composites and encodes the
finished depth maps (simplejpeg releases the GIL), so the device does not wait on the CPU.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import zipfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import simplejpeg
import torch
from tqdm import tqdm

from fgbg.build.depth import Teacher
from fgbg.errors import ConfigError, check_int
from fgbg.format.archive import (
    ArchiveError,
    BatchWriter,
    as_json,
    atomic_zip,
    batch_zips,
    damaged_member,
    encode_jpeg,
    sole_writer_of_each,
)
from fgbg.format.names import (
    BG_SIZE,
    DEPTH,
    FG_BG,
    MANIFEST,
    BadNameError,
    SampleId,
    composite_member,
    parse_member,
    zip_name,
)


def find_zips(out_dir: str | Path, batch: int | None = None) -> list[Path]:
    """The batch zips in ``out_dir`` by batch number (only ``batch``'s when given); raises if there are none."""
    out_dir = Path(out_dir)
    found = batch_zips(out_dir)
    if batch is not None:
        found = {batch: found[batch]} if batch in found else {}
    if not found:
        wanted = zip_name(batch) if batch is not None else "batch<N>_images.zip files"
        raise ArchiveError(f"{out_dir}: no {wanted} to label (make them with `python generate.py out_dir={out_dir}`)")
    return [found[b] for b in sorted(found)]


def label_dataset(
    out_dir: str | Path,
    depth,
    batch: int | None,
    quality: int,
    workers: int | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    wait_for_lock: bool = False,
) -> list[Path]:
    """``python generate.py stage=depth``: label the zips in ``out_dir`` (or only ``batch``'s) with ``depth``.

    ``depth`` is what the depth config made; only a :class:`Teacher` labels finished zips.
    """
    if batch is not None:
        check_int("batch", batch, 1)
    check_int("jpeg_quality", quality, 1, 100)
    teacher = _teacher(depth, "depth")
    return label_zips(find_zips(out_dir, batch), teacher, quality, workers, overwrite, show_progress, wait_for_lock)


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
    todo = [(path, n) for path, found, n in map(_survey, paths) if overwrite or found != record]
    bar = tqdm(
        total=sum(n for _, n in todo), unit="image", desc=f"labelling {len(todo)} of {len(paths)} zips",
        disable=not show_progress, smoothing=0.1,
    )
    written = [label_zip(path, teacher, quality, workers, bar.update) for path, _ in todo]
    bar.close()
    return written


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
            manifest = _read_manifest(source)
            quality = manifest.get("settings", {}).get("jpeg_quality", quality)
            kept = [i for i in source.infolist() if i.filename != MANIFEST and not _is_image(i, DEPTH)]
            composites = [parse_member(i.filename)[1] for i in kept if _is_image(i, FG_BG)]
            _write_depth(path, source, composites, teacher, pool, 2 * threads, writer, quality, progress)
            writer.copy_members(source, kept)  # last: it takes over (and closes) the source
            manifest.setdefault("settings", {})["depth"] = teacher.describe()
            manifest.setdefault("counts", {})[DEPTH] = len(composites)
            manifest.setdefault("versions", {}).update({pkg: version(pkg) for pkg in ("torch", "transformers")})
            writer.write_manifest(manifest)
    except (zipfile.BadZipFile, BadNameError) as error:
        raise ArchiveError(f"{path}: cannot label ({error})") from error
    return dest


def measure(path: Path, teacher: Teacher, quality: int, workers: int | None = None) -> dict:
    """Time the depth stage over zip ``path`` against the model's forward alone on as many images.

    The stage writes its zip to a temporary folder (``path`` is left alone). The forward time is the
    model's call on normalised ``input_size`` batches already on the device, synchronised at both ends.
    The target on a GPU: ``ratio`` (stage / forward) within 1.3.
    """
    _teacher(teacher, "measure").load()
    n = _survey(path)[2]
    size, batch = teacher.size, teacher.batch_size
    pixels = torch.randn(batch, 3, size, size, device=teacher.device).to(teacher.dtype)
    sizes = [batch] * (n // batch) + ([n % batch] if n % batch else [])
    with torch.inference_mode():
        for b in set(sizes):  # warm-up: kernels chosen for each batch shape, memory cached
            teacher.forward(pixels[:b])
        _synchronize(teacher.device)
        start = time.perf_counter()
        for b in sizes:
            teacher.forward(pixels[:b])
        _synchronize(teacher.device)
        forward_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        label_zip(path, teacher, quality, workers, dest=Path(tmp) / path.name)
        stage_s = time.perf_counter() - start
    return {
        "zip": str(path),
        "images": n,
        "device": str(teacher.device),
        "teacher": teacher.describe(),
        "batch_size": batch,
        "stage_s": stage_s,
        "forward_s": forward_s,
        "stage_images_per_s": n / stage_s,
        "forward_images_per_s": n / forward_s,
        "ratio": stage_s / forward_s,
    }


def _teacher(depth, stage: str) -> Teacher:
    if not isinstance(depth, Teacher):
        raise ConfigError(
            f"stage={stage} needs a depth model (depth=depth_anything_v2_small | dpt_hybrid | hub), got "
            f"{type(depth).__name__}; scene depth is made with the composites (stage=all)"
        )
    return depth


def _is_image(info: zipfile.ZipInfo, category: str) -> bool:
    return info.filename.startswith(category + "/") and not info.is_dir()


def _survey(path: Path) -> tuple[Path, dict | None, int]:
    """``(path, its depth record or None, number of composites)`` of an intact zip; :class:`ArchiveError` if damaged."""
    try:
        with zipfile.ZipFile(path) as zf:
            damaged = damaged_member(zf)
            if damaged is not None:
                raise ArchiveError(
                    f"{path}: member {damaged} is damaged (it fails its CRC); write the zip again "
                    "(python generate.py ... overwrite=true) and label it"
                )
            n = sum(1 for info in zf.infolist() if _is_image(info, FG_BG))
            return path, _read_manifest(zf).get("settings", {}).get("depth"), n
    except zipfile.BadZipFile as error:
        raise ArchiveError(f"{path}: not a readable zip ({error})") from error


def _read_manifest(zf: zipfile.ZipFile) -> dict:
    # The seed's own zips have no manifest; they are labelled all the same.
    return json.loads(zf.read(MANIFEST)) if MANIFEST in zf.NameToInfo else {}


def _write_depth(
    path: Path,
    source: zipfile.ZipFile,
    composites: list[SampleId],
    teacher: Teacher,
    pool: ThreadPoolExecutor,
    ahead: int,
    writer: BatchWriter,
    quality: int,
    progress: Callable[[int], None],
) -> None:
    """Append the depth maps of ``composites`` in their order: decode, model and encode overlap.

    ``ahead`` bounds the batches decoded ahead of the model and the encoded ones waiting to be written.
    """
    read_lock = threading.Lock()  # one ZipFile handle is not safe to read from several threads at once
    pin = teacher.device.type == "cuda"

    def decode(chunk: list[SampleId]) -> torch.Tensor:
        images = torch.empty((len(chunk), BG_SIZE, BG_SIZE, 3), dtype=torch.uint8, pin_memory=pin)
        array = images.numpy()
        for i, sample in enumerate(chunk):
            member = composite_member(FG_BG, sample)
            with read_lock:
                data = source.read(member)
            image = simplejpeg.decode_jpeg(data, colorspace="RGB")
            if image.shape != array.shape[1:]:
                h, w = image.shape[:2]
                raise ArchiveError(f"{path}: {member} is {w}x{h}, composites are {BG_SIZE}x{BG_SIZE}")
            array[i] = image
        return images

    def encode(depth: np.ndarray) -> list[bytes]:
        return [encode_jpeg(d, quality) for d in depth]

    chunks = [composites[i : i + teacher.batch_size] for i in range(0, len(composites), teacher.batch_size)]
    encoded: deque[tuple[list[SampleId], Future]] = deque()

    def write_oldest() -> None:
        chunk, future = encoded.popleft()
        for sample, data in zip(chunk, future.result()):
            writer.write_bytes(composite_member(DEPTH, sample), data)
        progress(len(chunk))

    for chunk, depth in zip(chunks, teacher.predict_batches(_in_order(pool, decode, chunks, ahead))):
        encoded.append((chunk, pool.submit(encode, depth)))
        while encoded and (encoded[0][1].done() or len(encoded) > ahead):
            write_oldest()
    while encoded:
        write_oldest()


def _in_order(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, ahead: int) -> Iterator:
    """``fn(item)`` for each item, run on ``pool`` with up to ``ahead`` in flight, yielded in order."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

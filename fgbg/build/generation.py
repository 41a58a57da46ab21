"""Building the batch zips: every foreground and its flip, on every background, at seeded placements.

One zip per ``FG_PER_ZIP`` foregrounds; zips are independent, so they are written by separate
processes here and can be split across Hydra launcher jobs (``batch=N``) with identical bytes.
Scene depth is painted with the composites; a depth model (:class:`~fgbg.build.depth.Teacher`) labels the
finished zips afterwards, in the depth stage (:mod:`fgbg.build.label`).

A run holds the write lock of every zip it may write (:func:`~fgbg.format.archive.sole_writer`) from before it
decides what to skip until it ends: a second run of the same zips refuses at once (or waits), while jobs
writing different ``batch=N`` zips of one folder run side by side. Its worker processes die with it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from fgbg.build.compose import flip_horizontal, mask_on_black, paste, placements
from fgbg.build.depth import SceneDepth, Teacher
from fgbg.build.label import label_locked_zips
from fgbg.build.sources import Scenes, SourceError
from fgbg.errors import check_int
from fgbg.format.archive import (
    ArchiveError,
    as_json,
    atomic_zip,
    damaged_member,
    die_with_parent,
    finished_zip,
    sole_writer_of_each,
)
from fgbg.format.names import (
    BG,
    BG_SIZE,
    DEPTH,
    FG,
    FG_BG,
    MASK,
    MASK_BLACK,
    OFFSET_RANGE,
    SampleId,
    composite_member,
    fg_ids_of_batch,
    n_batches,
    source_member,
    zip_name,
)

log = logging.getLogger(__name__)
PROGRESS_EVERY = 500
MAX_SEED = 2**32 - 1  # numpy's seed range


@dataclass(frozen=True)
class Settings:
    """What decides a dataset's bytes (with the source and the depth labeller)."""

    n_bg: int = 100
    n_fg: int = 100
    placements: int = 20
    seed: int = 0
    jpeg_quality: int = 95

    def check(self) -> None:
        """:class:`~fgbg.errors.ConfigError` naming the first setting of the wrong type or out of range."""
        check_int("n_bg", self.n_bg, 1)
        check_int("n_fg", self.n_fg, 1)
        check_int("placements", self.placements, 1, OFFSET_RANGE)  # offsets drawn without repetition
        check_int("seed", self.seed, 0, MAX_SEED)
        check_int("jpeg_quality", self.jpeg_quality, 1, 100)

    def composites_per_batch(self, batch: int) -> int:
        return len(fg_ids_of_batch(batch, self.n_fg)) * 2 * self.n_bg * self.placements


def _fg_background(rgba: np.ndarray) -> np.ndarray:
    """The foreground as a JPEG can hold it: RGB, transparent pixels white."""
    return np.where(rgba[..., 3:] > 0, rgba[..., :3], 255).astype(np.uint8)


def write_batch(
    batch: int,
    scenes: Scenes,
    depth: SceneDepth | None,
    settings: Settings,
    out_dir: Path,
    manifest_extra: dict,
    progress: Callable[[int], None] = lambda n: None,
) -> Path:
    """Write ``batch<batch>_images.zip`` into ``out_dir`` atomically and return its path."""
    path = out_dir / zip_name(batch)
    fg_ids = list(fg_ids_of_batch(batch, settings.n_fg))
    bg_ids = range(1, settings.n_bg + 1)
    bg_depth_u8 = [depth.encode(d) for d in scenes.bg_depth] if depth else None
    done = 0
    with atomic_zip(path, settings.jpeg_quality) as writer:
        for fg in fg_ids:
            writer.write_image(source_member(FG, fg), _fg_background(scenes.fg_rgba[fg - 1]))
            writer.write_image(source_member(MASK, fg), scenes.fg_rgba[fg - 1][..., 3])
        for bg in bg_ids:
            writer.write_image(source_member(BG, bg), scenes.bg_rgb[bg - 1])
        for fg in fg_ids:
            for bg in bg_ids:
                for flip in (0, 1):
                    rgba = scenes.fg_rgba[fg - 1]
                    relief = scenes.fg_relief[fg - 1] if depth else None
                    if flip:
                        rgba = flip_horizontal(rgba)
                        relief = flip_horizontal(relief) if depth else None
                    mask, rgb = rgba[..., 3] > 0, rgba[..., :3]
                    size = mask.shape[0]
                    offsets = placements(settings.seed, fg, bg, flip, settings.placements)
                    for k, (x, y) in enumerate(offsets, start=1):
                        sample = SampleId(fg, bg, flip, k)
                        writer.write_image(composite_member(FG_BG, sample), paste(scenes.bg_rgb[bg - 1], rgb, mask, x, y))
                        writer.write_image(composite_member(MASK_BLACK, sample), mask_on_black(mask, x, y, BG_SIZE))
                        if depth:
                            under = scenes.bg_depth[bg - 1][y : y + size, x : x + size]
                            fg_u8 = depth.encode(depth.foreground_depth(under, relief, mask))
                            writer.write_image(composite_member(DEPTH, sample), paste(bg_depth_u8[bg - 1], fg_u8, mask, x, y))
                    done += len(offsets)
                    if done >= PROGRESS_EVERY:
                        progress(done)
                        done = 0
        progress(done)
        n = len(fg_ids) * 2 * settings.n_bg * settings.placements
        counts = {FG: len(fg_ids), MASK: len(fg_ids), BG: settings.n_bg, FG_BG: n, MASK_BLACK: n, DEPTH: n if depth else 0}
        writer.write_manifest({"batch": batch, "fg_ids": fg_ids, "counts": counts, **manifest_extra})
    return path


def _manifest_extra(scenes: Scenes, depth: SceneDepth | None, settings: Settings) -> dict:
    return {
        "settings": {**asdict(settings), "source": scenes.origin, "depth": depth.describe() if depth else None},
        "versions": {pkg: version(pkg) for pkg in ("fgbg", "numpy", "simplejpeg")},
    }


def _pending(batches: list[int], out_dir: Path, settings_record: dict, overwrite: bool, any_depth: bool) -> list[int]:
    """Batches still to write: finished, intact zips made with the same settings are kept.

    ``any_depth``: the depth stage labels the zips afterwards, so their composites are what must match.
    """
    expected = as_json(settings_record)  # as the manifest gives it back: a folder source's int ids become strings
    todo = []
    for batch in batches:
        path = out_dir / zip_name(batch)
        if path.exists() and not overwrite:
            with finished_zip(path) as (zf, manifest):
                found = manifest.get("settings")
                # With a teacher, a finished zip may already carry its labels: compare the composites' settings.
                if found is not None and any_depth:
                    found = {**found, "depth": None}
                if found != expected:
                    raise ArchiveError(
                        f"{path} exists and was made with other settings ({found}); "
                        "choose another out_dir or pass overwrite=true"
                    )
                damaged = damaged_member(zf)
            if damaged is None:
                continue
            log.warning("%s: member %s is damaged (its bytes fail their CRC): writing the zip again", path, damaged)
        todo.append(batch)
    return todo


_worker_state: dict = {}


def _init_worker(parent_pid, scenes, depth, settings, out_dir, extra, progress_queue) -> None:
    die_with_parent(parent_pid)
    _worker_state.update(scenes=scenes, depth=depth, settings=settings, out_dir=out_dir, extra=extra, queue=progress_queue)


def _run_worker(batch: int) -> Path:
    s = _worker_state
    return write_batch(batch, s["scenes"], s["depth"], s["settings"], s["out_dir"], s["extra"], s["queue"].put)


def generate(
    source,
    depth: SceneDepth | Teacher | None,
    out_dir: str | Path,
    settings: Settings = Settings(),
    batch: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    wait_for_lock: bool = False,
) -> list[Path]:
    """Write the dataset's batch zips (all of them, or only ``batch``); return the paths of the zips written.

    Everything is validated (settings, every input image, a teacher's weights) before the first byte is
    written; finished zips with the same settings are skipped, so an interrupted run picks up where it
    stopped. With a :class:`Teacher` the composites are written without depth, then labelled. Another run
    writing the same zips makes this one stop with :class:`ArchiveError`, or wait with ``wait_for_lock``.
    """
    settings.check()
    total_batches = n_batches(settings.n_fg)
    if batch is not None:
        check_int("batch", batch, 1, total_batches)
    if workers is not None:
        check_int("workers", workers, 1)
    scenes = source.load(settings.n_bg, settings.n_fg)
    teacher = depth.load() if isinstance(depth, Teacher) else None
    depth = None if teacher else depth  # a teacher labels the finished zips: composites come without depth
    if depth is not None and not scenes.has_depth:
        raise SourceError(
            f"depth={type(depth).__name__} needs scenes that carry their depth (source=sample); "
            "for your own images label with a depth model (depth=depth_anything_v2_small), or use depth=none"
        )
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ArchiveError(f"{out_dir}: cannot create the output folder ({error.strerror})") from error
    extra = _manifest_extra(scenes, depth, settings)
    wanted = [batch] if batch is not None else list(range(1, total_batches + 1))
    paths = [out_dir / zip_name(b) for b in wanted]
    with sole_writer_of_each(paths, wait_for_lock):
        todo = _pending(wanted, out_dir, extra["settings"], overwrite, any_depth=teacher is not None)
        total = sum(settings.composites_per_batch(b) for b in todo)
        bar = tqdm(total=total, unit="composite", disable=not show_progress, smoothing=0.1)
        bar.set_description(f"{len(todo)} of {len(wanted)} zips to write")
        written = _write_batches(todo, scenes, depth, settings, out_dir, extra, workers, bar)
        bar.close()
        if teacher:
            # Every zip just written has no depth yet, so the zips labelled include them.
            written = label_locked_zips(paths, teacher, settings.jpeg_quality, workers, overwrite, show_progress)
    return written


def _write_batches(
    todo: list[int],
    scenes: Scenes,
    depth: SceneDepth | None,
    settings: Settings,
    out_dir: Path,
    extra: dict,
    workers: int | None,
    bar: tqdm,
) -> list[Path]:
    """Write the zips of ``todo``, one process each on up to ``workers`` processes; return their paths."""
    processes = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    written = []
    if processes == 1:
        for b in todo:
            written.append(write_batch(b, scenes, depth, settings, out_dir, extra, bar.update))
    else:
        context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        progress_queue = context.Queue()
        init_args = (os.getpid(), scenes, depth, settings, out_dir, extra, progress_queue)
        with ProcessPoolExecutor(processes, mp_context=context, initializer=_init_worker, initargs=init_args) as pool:
            futures = [pool.submit(_run_worker, b) for b in todo]
            while not all(f.done() for f in futures):
                try:
                    bar.update(progress_queue.get(timeout=0.2))
                except queue.Empty:
                    pass
            written = [f.result() for f in futures]
        bar.update(bar.total - bar.n)  # the last progress messages may still be in the queue's pipe
    return written

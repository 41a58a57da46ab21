"""Building the batch zips: every foreground and its flip, on every background, at seeded placements.

One zip per ``FG_PER_ZIP`` foregrounds; zips are independent, so they are written by separate
processes here and can be split across Hydra launcher jobs (``batch=N``) with identical bytes.
Scene depth is painted with the composites; a depth model (:class:`~fgbg.build.teacher.Teacher`) labels the
finished zips afterwards, in the depth stage (:mod:`fgbg.build.label`).

A run holds the write lock of every zip it may write (:func:`~fgbg.format.locks.sole_writer`) from before it
decides what to skip until it ends: a second run of the same zips refuses at once (or waits), while jobs
writing different ``batch=N`` zips of one folder run side by side. Its worker processes die with it.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

from fgbg.build.batch_zip import Job, Settings, write_batch
from fgbg.build.label import label_locked_zips
from fgbg.build.scene_depth import SceneDepth
from fgbg.build.sources import SourceError
from fgbg.build.teacher import Teacher
from fgbg.errors import check_int
from fgbg.format.locks import sole_writer_of_each
from fgbg.format.manifest import as_json, damaged_member, finished_zip
from fgbg.format.names import n_batches, zip_name
from fgbg.format.zips import ArchiveError
from fgbg.processes import die_with_parent
from fgbg.progress import Progress, progress

log = logging.getLogger(__name__)


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
    wanted = _wanted(settings, batch, workers)
    job, teacher = _prepare(source, depth, settings, Path(out_dir))
    paths = [job.out_dir / zip_name(b) for b in wanted]
    with sole_writer_of_each(paths, wait_for_lock):
        todo = _pending(wanted, job.out_dir, job.record["settings"], overwrite, any_depth=teacher is not None)
        written = _write_batches(todo, job, workers, show_progress, len(wanted))
        if teacher:
            # Every zip just written has no depth yet, so the zips labelled include them.
            written = label_locked_zips(paths, teacher, settings.jpeg_quality, workers, overwrite, show_progress)
    return written


def _wanted(settings: Settings, batch: int | None, workers: int | None) -> list[int]:
    """The batches a run asks for, once its settings, ``batch`` and ``workers`` are checked."""
    settings.check()
    total = n_batches(settings.n_fg)
    wanted = list(range(1, total + 1)) if batch is None else [check_int("batch", batch, 1, total)]
    if workers is not None:
        check_int("workers", workers, 1)
    return wanted


def _prepare(source, depth, settings: Settings, out_dir: Path) -> tuple[Job, Teacher | None]:
    """The run's :class:`Job` and its teacher (None for scene depth or none), every input loaded and checked."""
    scenes = source.load(settings.n_bg, settings.n_fg)
    teacher = depth.load() if isinstance(depth, Teacher) else None
    depth = None if teacher else depth  # a teacher labels the finished zips: composites come without depth
    if depth is not None and not scenes.has_depth:
        raise SourceError(
            f"depth={type(depth).__name__} needs scenes that carry their depth (source=sample); "
            "for your own images label with a depth model (depth=depth_anything_v2_small), or use depth=none"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ArchiveError(f"{out_dir}: cannot create the output folder ({error.strerror})") from error
    record = {
        "settings": {**asdict(settings), "source": scenes.origin, "depth": depth.describe() if depth else None},
        "versions": {pkg: version(pkg) for pkg in ("fgbg", "numpy", "simplejpeg")},
    }
    return Job(scenes, depth, settings, out_dir, record), teacher


def _pending(batches: list[int], out_dir: Path, settings_record: dict, overwrite: bool, any_depth: bool) -> list[int]:
    """Batches still to write: finished, intact zips made with the same settings are kept.

    ``any_depth``: the depth stage labels the zips afterwards, so their composites are what must match.
    """
    expected = as_json(settings_record)  # as the manifest gives it back: a folder source's int ids become strings
    todo = []
    for batch in batches:
        path = out_dir / zip_name(batch)
        if path.exists() and not overwrite:
            with finished_zip(path) as (zf, found):
                found = found.get("settings")
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


def _write_batches(todo: list[int], job: Job, workers: int | None, show_progress: bool, wanted: int) -> list[Path]:
    """Write the zips of ``todo``, one process each on up to ``workers`` processes; return their paths."""
    total = sum(job.settings.composites_per_batch(b) for b in todo)
    desc = f"{len(todo)} of {wanted} zips to write"
    with progress(total=total, desc=desc, unit="composite", enabled=show_progress) as bar:
        processes = max(1, min(workers or os.cpu_count() or 1, len(todo)))
        if processes == 1:
            return [write_batch(b, job, bar.update) for b in todo]
        return _write_in_pool(todo, job, processes, bar)


def _write_in_pool(todo: list[int], job: Job, processes: int, bar: Progress) -> list[Path]:
    """:func:`_write_batches` on ``processes`` worker processes, which report their progress through a queue."""
    context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
    progress_queue = context.Queue()
    init_args = (os.getpid(), job, progress_queue)
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_init_worker, initargs=init_args) as pool:
        futures = [pool.submit(_run_worker, b) for b in todo]
        _follow(futures, progress_queue, bar)
        written = [f.result() for f in futures]
    bar.update(bar.total - bar.n)  # the last progress messages may still be in the queue's pipe
    return written


def _follow(futures: list[Future], progress_queue, bar: Progress) -> None:
    """Count the progress that arrives on ``progress_queue`` into ``bar`` until every future is done.

    Each future puts a ``None`` on the queue as it finishes (with a result or an error), so the wait ends the
    moment the last one does: polling with a timeout would idle up to that timeout after the work is done.
    """
    for future in futures:
        future.add_done_callback(lambda _: progress_queue.put(None))
    running = len(futures)
    while running:
        done = progress_queue.get()
        if done is None:
            running -= 1
        else:
            bar.update(done)


_worker_state: dict = {}


def _init_worker(parent_pid: int, job: Job, progress_queue) -> None:
    die_with_parent(parent_pid)
    # What the worker inherits stays alive: kept out of the collector, a zip's ~10^5 new members do not make it
    # walk the parent's objects (a quarter of a second per full collection beside torch's) or copy their pages.
    gc.freeze()
    _worker_state.update(job=job, queue=progress_queue)


def _run_worker(batch: int) -> Path:
    return write_batch(batch, _worker_state["job"], _worker_state["queue"].put)


"""One writer per zip (or cache folder), and the partial files of killed writers cleaned up.

A writer holds an exclusive ``flock`` on the lock file (``.<zip>.lock`` beside it) for its whole run,
so two runs never write one zip, while runs (Hydra launcher jobs) writing different zips of one folder go on
in parallel. The kernel releases the lock when its holder dies, so a killed run leaves no stale lock; the
lock file holds the holder's pid, host, start time and command line for the refusal message. Locks are as
good as the file system's ``flock``: local disks, and NFS where the server supports it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shlex
import shutil
import socket
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from fgbg.format.writer import PARTIAL_SUFFIX
from fgbg.format.zips import ArchiveError

log = logging.getLogger(__name__)


def lock_path(path: Path) -> Path:
    """The lock file of ``path``: ``.<name>.lock`` beside it."""
    return path.with_name(f".{path.name}.lock")


@contextmanager
def sole_writer(path: Path, wait: bool = False) -> Iterator[None]:
    """Be the only writer of ``path`` (a zip, a cache folder) for the block, by an exclusive ``flock`` on
    :func:`lock_path`; another holder gives :class:`ArchiveError` naming it, unless ``wait`` (then this waits).

    Partials of ``path`` left by killed writers are removed once the lock is held: their writers are gone.
    """
    lock = lock_path(path)
    fd = _acquire(lock, blocking=False)
    if fd is None and not wait:
        raise ArchiveError(
            f"{path} is being written by another run ({_holder(lock)}; lock file {lock}): "
            "wait for it to finish, or pass wait_for_lock=true to wait for it"
        )
    if fd is None:
        log.info("%s is being written by another run (%s): waiting for it to finish", path, _holder(lock))
        fd = _acquire(lock, blocking=True)
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": shlex.join(sys.argv)}
        os.write(fd, json.dumps(record).encode())
        _remove_leftovers(path)
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held: the file under this name is this holder's own
        os.close(fd)


@contextmanager
def sole_writer_of_each(paths: Iterable[Path], wait: bool = False) -> Iterator[None]:
    """:func:`sole_writer` of every path, taken in sorted order so that runs waiting for each other cannot deadlock."""
    with ExitStack() as stack:
        for path in sorted(paths):
            stack.enter_context(sole_writer(path, wait))
        yield


def _acquire(lock: Path, blocking: bool) -> int | None:
    """A descriptor of ``lock`` (created if missing) holding its exclusive flock, or None if another holds it."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # The previous holder removes the file as it lets go: a lock on a removed file guards nothing, so retry.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                os.ftruncate(fd, 0)
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _holder(lock: Path) -> str:
    try:
        record = json.loads(lock.read_text())
        return f"pid {record['pid']} on {record['host']}, started {record['started']}: {record['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder not recorded yet"


def _remove_leftovers(path: Path) -> None:
    for leftover in path.parent.glob(f"{path.name}{PARTIAL_SUFFIX}*"):
        log.info("removing %s, left by a run that was killed", leftover)
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)

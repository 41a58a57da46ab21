"""Batch zips on disk: written under a temporary name, renamed only when complete, byte-reproducible."""

from __future__ import annotations

import json
import os
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import simplejpeg

from .names import MANIFEST

# Fixed member timestamps: the same inputs give the same zip bytes on every run.
_EPOCH = (1980, 1, 1, 0, 0, 0)
PARTIAL_SUFFIX = ".partial"


class ArchiveError(RuntimeError):
    """A batch zip that cannot be written or is not what it claims to be; the message names it."""


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """``(H, W, 3)`` RGB or ``(H, W)`` gray uint8 -> JPEG bytes (4:2:0 for colour)."""
    if image.ndim == 2:
        return simplejpeg.encode_jpeg(np.ascontiguousarray(image)[..., None], quality=quality, colorspace="GRAY")
    return simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=quality, colorspace="RGB", colorsubsampling="420")


class BatchWriter:
    """Appends members to an open zip with fixed metadata; JPEG data is stored, not deflated."""

    def __init__(self, zf: zipfile.ZipFile, quality: int):
        self.zf, self.quality = zf, quality

    def write_bytes(self, member: str, data: bytes) -> None:
        info = zipfile.ZipInfo(member, date_time=_EPOCH)
        info.external_attr = 0o644 << 16
        self.zf.writestr(info, data, compress_type=zipfile.ZIP_STORED)

    def write_image(self, member: str, image: np.ndarray) -> None:
        self.write_bytes(member, encode_jpeg(image, self.quality))

    def write_manifest(self, manifest: dict) -> None:
        self.write_bytes(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())


@contextmanager
def atomic_zip(path: Path, quality: int) -> Iterator[BatchWriter]:
    """Write ``path`` as ``path.partial`` and rename it into place only when the block completes.

    An exception (or a kill) leaves no file under the final name; a leftover ``.partial`` is
    overwritten by the next attempt.
    """
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    try:
        with open(partial, "wb") as handle:
            with zipfile.ZipFile(handle, "w") as zf:
                yield BatchWriter(zf, quality)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise ArchiveError(f"{path}: cannot write ({error.strerror or error})") from error
        raise


def read_manifest(path: Path) -> dict:
    """The manifest of a finished batch zip; :class:`ArchiveError` if it has none or is not a zip."""
    try:
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read(MANIFEST))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
        raise ArchiveError(f"{path}: not a complete batch zip ({error})") from error

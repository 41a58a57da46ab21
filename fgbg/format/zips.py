"""Batch zips as files in a folder: the error that names one, and finding them (the one way everybody does)."""

from __future__ import annotations

from pathlib import Path

from fgbg.errors import FgbgError
from fgbg.format.names import BadNameError, parse_zip_name, zip_name


class ArchiveError(FgbgError, RuntimeError):
    """A batch zip that cannot be written or is not what it claims to be; the message names it."""


class NoZipsError(ArchiveError, FileNotFoundError):
    """A folder without the batch zips asked for."""


def batch_zips(folder: str | Path, batch: int | None = None) -> dict[int, Path]:
    """``{batch: path}`` of the ``batch<N>_images.zip`` files in ``folder`` in batch order (other files left
    out), only ``batch``'s when given; :class:`NoZipsError` naming the folder when there are none."""
    folder = Path(folder)
    found = {}
    for path in folder.glob("batch*_images.zip"):
        try:
            found[parse_zip_name(path.name)] = path
        except BadNameError:
            continue  # e.g. batch01_images.zip: not one of the dataset's names
    if batch is not None:
        found = {batch: found[batch]} if batch in found else {}
    if not found:
        wanted = zip_name(batch) if batch is not None else "batch<N>_images.zip files"
        raise NoZipsError(f"{folder}: no {wanted} (make them with `python generate.py out_dir={folder}`)")
    return dict(sorted(found.items()))

"""Reading a batch zip's manifest, the settings record compared with it, and checking members against their CRCs."""

from __future__ import annotations

import json
import mmap
import struct
import zipfile
import zlib
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from fgbg.format.names import MANIFEST
from fgbg.format.writer import BUFFER
from fgbg.format.zips import ArchiveError

# A member's local header: signature, 22 bytes up to the lengths, file name length, extra field length.
_LOCAL_HEADER = struct.Struct("<4s22xHH")


def decode_manifest(data: bytes) -> dict:
    """A manifest's bytes -> its record; ``ValueError`` when they are not a JSON object (or not UTF-8)."""
    manifest = json.loads(data)
    if not isinstance(manifest, dict):
        raise ValueError(f"{MANIFEST} is not a JSON object")
    return manifest


def manifest_of(zf: zipfile.ZipFile) -> dict:
    """The manifest of an open zip; ``{}`` for one without (the seed's own zips, labelled all the same)."""
    return decode_manifest(zf.read(MANIFEST)) if MANIFEST in zf.NameToInfo else {}


@contextmanager
def finished_zip(path: Path) -> Iterator[tuple[zipfile.ZipFile, dict]]:
    """``(open zip, its manifest)`` of a finished batch zip; :class:`ArchiveError` if it has none or is not a zip."""
    with ExitStack() as stack:
        try:
            zf = stack.enter_context(zipfile.ZipFile(path))
            manifest = decode_manifest(zf.read(MANIFEST))
        except (OSError, zipfile.BadZipFile, KeyError, ValueError) as error:
            raise ArchiveError(f"{path}: not a complete batch zip ({error}); delete it or pass overwrite=true") from error
        yield zf, manifest


def read_manifest(path: Path) -> dict:
    """The manifest of a finished batch zip; :class:`ArchiveError` if it has none or is not a zip."""
    with finished_zip(path) as (_, manifest):
        return manifest


def as_json(record: dict) -> dict:
    """``record`` as a manifest gives it back (int keys become strings, tuples lists), to compare with one."""
    return json.loads(json.dumps(record))


def damaged_member(zf: zipfile.ZipFile) -> str | None:
    """The first member of ``zf`` (opened from a path) whose local header does not match the central directory
    or whose data fails its CRC; None when every member is intact.

    ``ZipFile.testzip`` checks the same through ``open`` and ``read``: 1.0 s for a 40,000-composite zip
    (447 MB, 120,000 members, from the page cache); stored members are checked here from a memory map in
    0.3 s, on top of the 0.4 s that opening the zip costs.
    """
    with open(zf.filename, "rb") as raw, mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ) as data:
        with memoryview(data) as view:
            for info in zf.infolist():
                stored = info.compress_type == zipfile.ZIP_STORED
                if not (_stored_intact(view, info) if stored else _read_intact(zf, info)):
                    return info.filename
    return None


def _stored_intact(view: memoryview, info: zipfile.ZipInfo) -> bool:
    try:
        signature, name_length, extra_length = _LOCAL_HEADER.unpack_from(view, info.header_offset)
    except struct.error:  # the header lies past the end of the file
        return False
    name_start = info.header_offset + _LOCAL_HEADER.size
    data_start = name_start + name_length + extra_length
    data = view[data_start : data_start + info.compress_size]
    name = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
    return (
        signature == zipfile.stringFileHeader
        and view[name_start : name_start + name_length] == name
        and len(data) == info.file_size
        and zlib.crc32(data) == info.CRC
    )


def _read_intact(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    # Compressed members (the seed's zips may hold some): zipfile checks the CRC as it reads to the end.
    try:
        with zf.open(info) as member:
            while member.read(BUFFER):
                pass
    except (zipfile.BadZipFile, zlib.error, EOFError):
        return False
    return True

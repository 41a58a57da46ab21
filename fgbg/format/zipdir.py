"""A zip's central directory read straight into numpy arrays: every member's name and where its data lies.

``zipfile.ZipFile`` builds a ``ZipInfo`` object per member when it opens a zip: for a batch zip of the full
dataset (120,130 members) that is most of a second and tens of MB of Python objects, in every process that
opens it. Training needs of each member only its location (offset, size, CRC, compression), so the index
reads the directory once, parses its fixed-size records as one numpy structured array, and keeps plain
arrays that loader workers share with their parent (a forked worker touches no reference counts in them,
so their pages are never copied).

Zips this reader does not handle itself (zip64 fields inside member records, a zip inside a larger file,
a member name that contains the directory's record signature) are read through ``zipfile`` instead, with
the same result.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

# Where a member's data lies: its local header's offset (the data follows that header), stored size, CRC-32
# and compression method (0 stored, 8 deflated).
MEMBER = np.dtype([("header_offset", "<u8"), ("size", "<u8"), ("crc", "<u4"), ("method", "<u2")])

# A central directory record's fixed part (APPNOTE 4.3.12); 46 bytes, packed.
_RECORD = np.dtype(
    [
        ("signature", "<u4"),
        ("version_made", "<u2"),
        ("version_needed", "<u2"),
        ("flags", "<u2"),
        ("method", "<u2"),
        ("time", "<u2"),
        ("date", "<u2"),
        ("crc", "<u4"),
        ("size", "<u4"),
        ("file_size", "<u4"),
        ("name_length", "<u2"),
        ("extra_length", "<u2"),
        ("comment_length", "<u2"),
        ("disk", "<u2"),
        ("internal_attr", "<u2"),
        ("external_attr", "<u4"),
        ("header_offset", "<u4"),
    ]
)
_RECORD_SIGNATURE = 0x02014B50
_END = struct.Struct("<4s4H2LH")  # end of central directory record
_END64_LOCATOR = struct.Struct("<4sLQL")
_END64 = struct.Struct("<4sQ2H2L4Q")
_ZIP64_MARK = 0xFFFFFFFF


class _NotSimple(Exception):
    """A zip that is valid but outside what the fast path reads; ``zipfile`` reads it instead."""


def read_directory(path: Path) -> tuple[list[str], np.ndarray]:
    """Member names (directory order) and their :data:`MEMBER` records ``(N,)``.

    Raises ``zipfile.BadZipFile`` (or ``OSError``) for a file that is not a readable zip.
    """
    try:
        return _fast(Path(path))
    except _NotSimple:
        return _through_zipfile(Path(path))


def _through_zipfile(path: Path) -> tuple[list[str], np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    members = np.array([(i.header_offset, i.compress_size, i.CRC, i.compress_type) for i in infos], MEMBER)
    return [i.filename for i in infos], members


def _directory_bytes(path: Path) -> bytes:
    """The central directory of the zip at ``path``, located through its end records."""
    with open(path, "rb") as f:
        file_size = f.seek(0, 2)
        tail_size = min(file_size, _END.size + 0xFFFF)  # the end record, then a comment of at most 64 kB
        f.seek(file_size - tail_size)
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + _END.size > len(tail):
            raise zipfile.BadZipFile("File is not a zip file")
        _, disk, _, _, entries, dir_size, dir_offset, _ = _END.unpack_from(tail, at)
        end_offset = file_size - tail_size + at
        if _ZIP64_MARK in (dir_size, dir_offset) or entries == 0xFFFF:  # more than 65,535 members or 4 GB
            if at < _END64_LOCATOR.size:
                raise _NotSimple
            signature, _, end64_offset, _ = _END64_LOCATOR.unpack_from(tail, at - _END64_LOCATOR.size)
            f.seek(end64_offset)
            end64 = f.read(_END64.size)
            if signature != b"PK\x06\x07" or len(end64) != _END64.size or end64[:4] != b"PK\x06\x06":
                raise _NotSimple
            _, _, _, _, disk, _, _, entries, dir_size, dir_offset = _END64.unpack(end64)
            end_offset = end64_offset
        if disk != 0 or dir_offset + dir_size != end_offset:  # multi-disk, or data before the zip
            raise _NotSimple
        f.seek(dir_offset)
        directory = f.read(dir_size)
    if len(directory) != dir_size:
        raise zipfile.BadZipFile("truncated central directory")
    return directory


def _record_starts(directory: bytes) -> np.ndarray:
    """Offsets of the directory's records ``(N,)``, found all at once.

    Every record starts with the signature ``PK\\x01\\x02``, and each ends where the next begins: the
    signature's positions are the records' starts when that chain holds from the first to the end.
    """
    raw = np.frombuffer(directory, np.uint8)
    if len(raw) < _RECORD.itemsize:
        return np.zeros(0, np.int64)
    starts = np.flatnonzero((raw[:-3] == 0x50) & (raw[1:-2] == 0x4B) & (raw[2:-1] == 1) & (raw[3:] == 2))
    starts = starts[starts <= len(raw) - _RECORD.itemsize]
    if not len(starts) or starts[0] != 0:
        raise _NotSimple
    return starts


def _fast(path: Path) -> tuple[list[str], np.ndarray]:
    directory = _directory_bytes(path)
    if not directory:
        return [], np.zeros(0, MEMBER)
    starts = _record_starts(directory)
    raw = np.frombuffer(directory, np.uint8)
    records = np.lib.stride_tricks.sliding_window_view(raw, _RECORD.itemsize)[starts].view(_RECORD)[:, 0]
    name_starts = starts + _RECORD.itemsize
    ends = name_starts + records["name_length"] + records["extra_length"] + records["comment_length"]
    if not (np.array_equal(ends[:-1], starts[1:]) and ends[-1] == len(directory)):
        raise _NotSimple  # a signature inside a name or extra field: not every hit is a record
    if (records["size"] == _ZIP64_MARK).any() or (records["header_offset"] == _ZIP64_MARK).any():
        raise _NotSimple  # sizes or offsets in zip64 extra fields
    try:  # names are ASCII in this dataset; others take zipfile's path (UTF-8 flag, cp437)
        name_ends = name_starts + records["name_length"]
        names = [directory[a:b].decode("ascii") for a, b in zip(name_starts.tolist(), name_ends.tolist())]
    except UnicodeDecodeError:
        raise _NotSimple from None
    members = np.empty(len(records), MEMBER)
    for field in MEMBER.names:
        members[field] = records[field]
    return names, members


class MemberReader:
    """One zip's members read by their location (:data:`MEMBER`), with ``os.pread``: no
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

    def read(self, header_offset: int, size: int, crc: int, method: int) -> bytes:
        """The data of the member at ``header_offset`` (a :data:`MEMBER` record's fields)."""
        header = self._pread(self._HEADER.size, header_offset)
        if len(header) != self._HEADER.size or header[:4] != b"PK\x03\x04":
            raise zipfile.BadZipFile("bad local header (the zip is damaged)")
        _, name_length, extra_length = self._HEADER.unpack(header)
        data = self._pread(size, header_offset + self._HEADER.size + name_length + extra_length)
        if len(data) != size:
            raise zipfile.BadZipFile("truncated (the zip is damaged)")
        if method == zipfile.ZIP_DEFLATED:  # a zip tool may have re-packed the zip
            try:
                data = zlib.decompress(data, -zlib.MAX_WBITS)
            except zlib.error as error:
                raise zipfile.BadZipFile(f"cannot inflate ({error})") from error
        elif method != zipfile.ZIP_STORED:
            raise zipfile.BadZipFile(f"compression method {method} is not read here; store or deflate it")
        if zlib.crc32(data) != crc:
            raise zipfile.BadZipFile("bad CRC-32 (the zip is damaged)")
        return data

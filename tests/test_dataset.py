import zipfile

import pytest

from fgbg.data.dataset import _Members


def test_members_read_as_zipfile_reads_them(small_dataset, tmp_path):
    src = small_dataset / "batch1_images.zip"
    deflated = tmp_path / "deflated.zip"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zout:
        names = [n for n in zin.namelist() if n.endswith(".jpg")][:50]
        for name in names:
            zout.writestr(name, zin.read(name))
        expected = {name: zin.read(name) for name in names}
    for path in (src, deflated):
        members = _Members(path)
        assert {name: members.read(name) for name in names} == expected


def test_corrupt_bytes_fail_the_crc(small_dataset, tmp_path):
    src = small_dataset / "batch1_images.zip"
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo("fg_bg_jpg/fg_bg_1_1_0_1.jpg")
    data = bytearray(src.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + 100] ^= 0xFF
    corrupt = tmp_path / "batch1_images.zip"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(zipfile.BadZipFile, match="fg_bg_1_1_0_1"):
        _Members(corrupt).read(info.filename)

"""The central-directory reader: the same names and locations as zipfile, for every kind of zip it meets."""

import zipfile

import pytest

from fgbg.format import zipdir
from fgbg.format.zipdir import MEMBER, read_directory


def _zipfile_view(path):
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    return [i.filename for i in infos], [(i.header_offset, i.compress_size, i.CRC, i.compress_type) for i in infos]


def _assert_same_as_zipfile(path):
    names, members = read_directory(path)
    expected_names, expected_members = _zipfile_view(path)
    assert names == expected_names
    assert members.dtype == MEMBER and members.tolist() == expected_members


def test_reads_a_batch_zip_like_zipfile(small_dataset, monkeypatch):
    monkeypatch.setattr(zipdir, "_through_zipfile", None)  # read by the fast path, not handed on
    _assert_same_as_zipfile(small_dataset / "batch1_images.zip")


def test_more_than_65535_members_use_the_zip64_end_record(tmp_path, monkeypatch):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(65_600):
            zf.writestr(f"fg_bg_jpg/fg_bg_1_1_0_{i + 1}.jpg", b"")
    monkeypatch.setattr(zipdir, "_through_zipfile", None)  # the fast path must read it itself
    _assert_same_as_zipfile(path)


@pytest.mark.parametrize(
    "name",
    ["weird PK\x01\x02 name.jpg", "caf\u00e9.jpg"],  # a record signature inside a name; a non-ASCII name
)
def test_unusual_zips_take_zipfiles_path_with_the_same_result(tmp_path, name):
    path = tmp_path / "odd.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("bg_jpg/bg_img_1.jpg", b"abc")
        zf.writestr(name, b"defg")
    _assert_same_as_zipfile(path)


def test_deflated_members_and_a_comment(tmp_path):
    path = tmp_path / "deflated.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("fg_jpg/fg_img_1.jpg", b"x" * 1000)
        zf.comment = b"made by another zip tool"
    _assert_same_as_zipfile(path)


def test_empty_zip_and_not_a_zip(tmp_path):
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    assert read_directory(empty)[0] == [] and len(read_directory(empty)[1]) == 0
    (tmp_path / "junk.zip").write_bytes(b"PK not really")
    with pytest.raises(zipfile.BadZipFile):
        read_directory(tmp_path / "junk.zip")

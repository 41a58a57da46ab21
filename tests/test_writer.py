import zipfile

import pytest

from fgbg.format.writer import EPOCH, atomic_zip
from fgbg.format.zips import NoZipsError, batch_zips


def test_members_are_written_as_zipfile_writestr_would(tmp_path):
    members = {"bg_jpg/bg_img_1.jpg": b"\xff\xd8" + bytes(range(256)) * 40, "manifest.json": b"{}", "empty.jpg": b""}
    with atomic_zip(tmp_path / "fast.zip", 90) as writer:
        for name, data in members.items():
            writer.write_bytes(name, data)
    with zipfile.ZipFile(tmp_path / "reference.zip", "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, data, compress_type=zipfile.ZIP_STORED)
    assert (tmp_path / "fast.zip").read_bytes() == (tmp_path / "reference.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "fast.zip") as zf:
        assert zf.testzip() is None and {n: zf.read(n) for n in zf.namelist()} == members


def test_batch_zips_by_number_and_only_the_datasets_names(tmp_path):
    for name in ("batch10_images.zip", "batch2_images.zip", "batch01_images.zip", "other.zip", "batch3_images.zip.partial"):
        (tmp_path / name).write_bytes(b"")
    assert batch_zips(tmp_path) == {2: tmp_path / "batch2_images.zip", 10: tmp_path / "batch10_images.zip"}
    assert list(batch_zips(tmp_path)) == [2, 10]


def test_batch_zips_of_one_batch_and_none_found(tmp_path):
    (tmp_path / "batch2_images.zip").write_bytes(b"")
    assert batch_zips(tmp_path, batch=2) == {2: tmp_path / "batch2_images.zip"}
    with pytest.raises(NoZipsError, match="no batch3_images.zip .make them with `python generate.py out_dir="):
        batch_zips(tmp_path, batch=3)
    with pytest.raises(FileNotFoundError, match="no batch<N>_images.zip files"):
        batch_zips(tmp_path / "empty")

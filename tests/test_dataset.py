import zipfile

import pytest

from fgbg.data.dataset import ZipSampleDataset
from fgbg.data.index import sample_id, select
from fgbg.data.transforms import Preprocessing
from fgbg.format.names import SampleId
from fgbg.format.zipdir import MemberReader, read_directory


def _located(path):
    names, members = read_directory(path)
    return dict(zip(names, members))


def test_members_read_as_zipfile_reads_them(small_dataset, tmp_path):
    src = small_dataset / "batch1_images.zip"
    deflated = tmp_path / "deflated.zip"  # as a zip tool that re-packs the dataset may leave it
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zout:
        names = [n for n in zin.namelist() if n.endswith(".jpg")][:50]
        for name in names:
            zout.writestr(name, zin.read(name))
        expected = {name: zin.read(name) for name in names}
    for path in (src, deflated):
        located, reader = _located(path), MemberReader(path)
        assert {name: reader.read(*located[name].item()) for name in names} == expected


def test_corrupt_bytes_fail_the_crc(small_dataset, tmp_path):
    src = small_dataset / "batch1_images.zip"
    member = "fg_bg_jpg/fg_bg_1_1_0_1.jpg"
    location = _located(src)[member]
    data = bytearray(src.read_bytes())
    data[int(location["header_offset"]) + 30 + len(member) + 100] ^= 0xFF
    corrupt = tmp_path / "batch1_images.zip"
    corrupt.write_bytes(bytes(data))
    zips, samples = select(tmp_path, "all", {"all": {"batches": [1], "n_bg": None}})[:2]
    dataset = ZipSampleDataset(zips, samples, Preprocessing(image_size=64, grayscale=True, stats=None))
    index = [sample_id(s) for s in samples].index(SampleId(1, 1, 0, 1))
    with pytest.raises(zipfile.BadZipFile, match=f"{member}: bad CRC-32"):
        dataset[index]

import shutil

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException

from fgbg.data import cache
from fgbg.data.batch import COMPOSITE
from fgbg.data.dataset import ZipSampleDataset
from fgbg.errors import ConfigError
from fgbg.format.locks import sole_writer
from tests.helpers.configs import datamodule


@pytest.fixture
def data_dir(small_dataset, tmp_path):
    """The small dataset's zips seen from a folder of the test's own, where the cache may be written."""
    for zip_path in small_dataset.glob("*.zip"):
        (tmp_path / zip_path.name).symlink_to(zip_path)
    return tmp_path


def assert_same_items(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("overrides", [[], ["data.grayscale=false", "data.normalize=true", "data.image_size=96"]])
def test_cached_items_equal_the_decoded_ones(data_dir, overrides):
    decoded, cached = datamodule(data_dir, *overrides), datamodule(data_dir, "data.cache=true", *overrides)
    for part in ("train", "val", "test"):
        assert np.array_equal(cached.parts[part].samples, decoded.parts[part].samples)
        for i in (0, 7, len(decoded.parts[part]) - 1):
            assert_same_items(cached.parts[part][i], decoded.parts[part][i])
    # The training loaders' first batches: both seeded alike, so the same samples.
    batch_a, batch_b = next(iter(decoded.train_dataloader())), next(iter(cached.train_dataloader()))
    assert_same_items(batch_a, batch_b)


@pytest.mark.parametrize("overrides", [[], ["data.grayscale=false", "data.normalize=true"]])
def test_the_cache_on_a_device_gives_the_batches_of_the_cache(data_dir, overrides):
    cached = datamodule(data_dir, "data.cache=true", *overrides)
    part = cached.parts["val"]
    # The device path, on the CPU here: the same code as on a GPU.
    on_device = cache.DeviceCachedDataset(part.folder, part.samples, part.preprocessing, part.has_depth, "cpu")
    indices = [5, 0, 5, len(part) - 1]
    assert_same_items(on_device.__getitems__(indices), part.__getitems__(indices))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.cache_device=cuda"], "data.cache_device=cuda: needs data.cache=true"),
        (["data.cache=true", "data.cache_device=cuda", "data.num_workers=2"], "set data.num_workers=0 or auto"),
        (["data.cache=true", "data.cache_device=gpu"], "data.cache_device='gpu': expected cpu or a torch device"),
    ],
)
def test_bad_cache_devices_name_the_key(data_dir, overrides, message):
    with pytest.raises(InstantiationException) as error:
        datamodule(data_dir, *overrides)
    assert isinstance(error.value.__cause__, ConfigError) and message in str(error.value.__cause__)


def test_a_batch_is_its_items(data_dir):
    dataset = datamodule(data_dir).parts["train"]
    assert isinstance(dataset, ZipSampleDataset)
    batch = dataset.__getitems__([3, 0, 3])
    for i, alone in enumerate((dataset[3], dataset[0], dataset[3])):
        assert_same_items({key: value[i] for key, value in batch.items()}, alone)


def test_cache_is_built_once_per_preprocessing(data_dir):
    datamodule(data_dir, "data.cache=true")
    folders = sorted((data_dir / "cache").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("40k_64_gray_")
    stamps = {p.name: p.stat().st_mtime_ns for p in folders[0].iterdir()}
    datamodule(data_dir, "data.cache=true", "data.normalize=true")  # normalisation is applied after the cache
    assert {p.name: p.stat().st_mtime_ns for p in folders[0].iterdir()} == stamps
    datamodule(data_dir, "data.cache=true", "data.image_size=32")
    assert len(list((data_dir / "cache").iterdir())) == 2


def test_interrupted_build_leaves_nothing(data_dir, monkeypatch):
    def fail(self, indices):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ZipSampleDataset, "stacked_pixels", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        datamodule(data_dir, "data.cache=true")
    assert list((data_dir / "cache").iterdir()) == []


def test_cache_is_memory_mapped_uint8(data_dir):
    dm = datamodule(data_dir, "data.cache=true")
    folder = dm.parts["train"].folder
    array = np.load(folder / f"{COMPOSITE}.npy", mmap_mode="r")  # one array per key of the batch contract
    assert array.dtype == np.uint8 and array.shape[1:] == (64, 64)
    assert np.load(folder / cache.SAMPLES).shape == (array.shape[0], 6)


def test_a_build_removes_the_partials_of_killed_builds_only(data_dir):
    root = data_dir / "cache"
    folder = datamodule(data_dir, "data.cache=true").parts["train"].folder
    shutil.rmtree(folder)
    other = root / "4k_64_gray_ba9876543210"
    with sole_writer(other):  # a build of another cache, still going on
        building = other.with_name(f"{other.name}.partial-4000002")
        killed = [root / f"{folder.name}.partial-4000000", root / "16k_64_gray_0123456789ab.partial-4000001"]
        for partial in (*killed, building):
            partial.mkdir()
            (partial / cache.SAMPLES).write_bytes(b"half an array")
        assert datamodule(data_dir, "data.cache=true").parts["train"].folder == folder
        assert sorted(p.name for p in root.iterdir()) == sorted([folder.name, building.name, ".4k_64_gray_ba9876543210.lock"])

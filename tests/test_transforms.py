import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fgbg.data.batch import BACKGROUND, COMPOSITE, DEPTH, MASK
from fgbg.data.transforms import Preprocessing, resize
from fgbg.errors import ConfigError
from fgbg.format.names import BG, FG_BG

STATS = {BG: {"mean": 0.5, "std": 0.25}, FG_BG: {"mean": 0.4, "std": 0.2}}


@pytest.mark.parametrize(
    "image_size, shown", [(0, "0"), (7, "7"), (161, "161"), ("abc", "'abc'"), (32.5, "32.5"), (True, "True")]
)
def test_image_size_out_of_range_or_not_a_whole_number_is_refused(image_size, shown):
    with pytest.raises(ConfigError, match=rf"^data.image_size={shown}: expected a whole number 8\.\.160$"):
        Preprocessing(image_size, True, None)


@pytest.mark.parametrize("image_size", [8, 64, 160])
def test_image_sizes_the_decoder_and_resize_serve_are_kept(image_size):
    assert Preprocessing(image_size, True, None).image_size == image_size


@pytest.mark.parametrize("grayscale", ["yes", 1, None])
def test_grayscale_must_be_a_bool(grayscale):
    with pytest.raises(ConfigError, match=rf"^data.grayscale={grayscale!r}: expected true or false$"):
        Preprocessing(64, grayscale, None)


@pytest.mark.parametrize("normalize, stats", [(True, STATS), (False, None)])
def test_from_data_keeps_the_stats_only_when_normalising_and_round_trips_through_a_checkpoint_entry(normalize, stats):
    data = OmegaConf.create({"image_size": 32, "grayscale": False, "normalize": normalize, "stats": STATS})
    preprocessing = Preprocessing.from_data(data)
    assert preprocessing == Preprocessing(32, False, stats)
    entry = preprocessing.to_config()
    assert entry == {"image_size": 32, "grayscale": False, "stats": stats}
    assert type(entry["stats"]) in (dict, type(None))  # plain containers, as torch.load(weights_only=True) reads them
    assert Preprocessing(**entry) == preprocessing


def test_a_plane_resizes_the_same_whatever_is_stacked_beside_it():
    planes = np.random.default_rng(0).integers(0, 256, (2, 80, 80, 8), dtype=np.uint8)
    together = resize(planes, 64)
    assert together.shape == (2, 64, 64, 8)
    for count in (1, 2, 3, 5, 6):
        assert np.array_equal(resize(planes[..., :count], 64), together[..., :count])


def test_differences_name_each_field_that_differs():
    trained = Preprocessing(32, True, None)
    assert trained.differences(Preprocessing(32, True, None)) == {}
    assert trained.differences(Preprocessing(64, True, STATS)) == {"image_size": (32, 64), "stats": (None, STATS)}


def test_tensors_of_mask_only_pixels_have_no_depth():
    rng = np.random.default_rng(0)
    pixels = {key: rng.integers(0, 256, (2, 16, 16), dtype=np.uint8) for key in (BACKGROUND, COMPOSITE, MASK)}
    preprocessing = Preprocessing(16, True, None)
    tensors = preprocessing.tensors(pixels)
    assert set(tensors) == {BACKGROUND, COMPOSITE, MASK} and tensors[MASK].shape == (2, 1, 16, 16)
    with_depth = preprocessing.tensors({**pixels, DEPTH: pixels[MASK]})
    assert torch.equal(with_depth[DEPTH], torch.from_numpy(pixels[MASK] / np.float32(255))[:, None])
    assert all(torch.equal(with_depth[key], tensors[key]) for key in tensors)

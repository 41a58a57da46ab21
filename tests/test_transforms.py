import pytest

from fgbg.data.transforms import SampleTransform
from fgbg.errors import ConfigError


@pytest.mark.parametrize(
    "image_size, shown", [(0, "0"), (7, "7"), (161, "161"), ("abc", "'abc'"), (32.5, "32.5"), (True, "True")]
)
def test_image_size_out_of_range_or_not_a_whole_number_is_refused(image_size, shown):
    with pytest.raises(ConfigError, match=rf"^data.image_size={shown}: expected a whole number 8\.\.160$"):
        SampleTransform(image_size)


@pytest.mark.parametrize("image_size", [8, 64, 160])
def test_image_sizes_the_decoder_and_resize_serve_are_kept(image_size):
    assert SampleTransform(image_size).size == image_size


@pytest.mark.parametrize("grayscale", ["yes", 1, None])
def test_grayscale_must_be_a_bool(grayscale):
    with pytest.raises(ConfigError, match=rf"^data.grayscale={grayscale!r}: expected true or false$"):
        SampleTransform(64, grayscale)

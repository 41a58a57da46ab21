import numpy as np
import pytest

from fgbg.build.compose import flip_horizontal, mask_on_black, paste, placements
from fgbg.format.names import OFFSET_RANGE


def test_placements_unique_per_axis_in_range_and_seeded():
    offsets = placements(seed=0, fg=3, bg=7, flip=1, count=20)
    assert offsets.shape == (20, 2)
    for axis in (0, 1):
        assert len(set(offsets[:, axis])) == 20
        assert offsets[:, axis].min() >= 0 and offsets[:, axis].max() < OFFSET_RANGE
    assert np.array_equal(offsets, placements(seed=0, fg=3, bg=7, flip=1, count=20))
    assert not np.array_equal(offsets, placements(seed=1, fg=3, bg=7, flip=1, count=20))
    assert not np.array_equal(offsets, placements(seed=0, fg=3, bg=7, flip=0, count=20))


def test_all_offsets_fit_and_too_many_is_refused():
    assert sorted(placements(0, 1, 1, 0, OFFSET_RANGE)[:, 0]) == list(range(OFFSET_RANGE))
    with pytest.raises(ValueError, match="placements=81"):
        placements(0, 1, 1, 0, 81)


def test_flip_is_a_mirror():
    image = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    flipped = flip_horizontal(image)
    assert np.array_equal(flipped[:, 0], image[:, 2]) and np.array_equal(flipped[:, 2], image[:, 0])
    assert flipped.flags.c_contiguous


def test_paste_and_mask_on_black_agree():
    bg = np.zeros((6, 6, 3), np.uint8)
    patch = np.full((2, 2, 3), 200, np.uint8)
    mask = np.array([[True, False], [True, True]])
    out = paste(bg, patch, mask, x=3, y=1)
    black = mask_on_black(mask, x=3, y=1, size=6)
    assert np.array_equal(out[..., 0] == 200, black == 255)
    assert black[1, 3] == 255 and black[1, 4] == 0 and black[2, 4] == 255
    assert bg.sum() == 0  # the background is not modified in place

import zipfile

import pytest

from fgbg.data.index import DatasetError, index_zip, select, split
from fgbg.names import SampleId
from tests.conftest import SMALL

STRATEGIES = {
    "small": {"batches": [1], "n_bg": 5},
    "all": {"batches": [1, 2], "n_bg": None},
    "16k": {"batches": [1], "n_bg": 40},
    "missing": {"batches": [3], "n_bg": None},
}


def test_index_groups_every_sample(small_dataset):
    contents = index_zip(small_dataset / "batch1_images.zip")
    assert contents.fg_ids == set(range(1, 11)) and contents.bg_ids == set(range(1, 13))
    assert len(contents.samples) == 10 * 12 * 2 * SMALL.placements
    assert SampleId(10, 12, 1, 2) in contents.samples


@pytest.mark.parametrize(
    "strategy, expected", [("small", 10 * 5 * 2 * SMALL.placements), ("all", 12 * 12 * 2 * SMALL.placements)]
)
def test_strategy_counts_and_first_backgrounds(small_dataset, strategy, expected):
    zips, samples = select(small_dataset, strategy, STRATEGIES)
    assert len(samples) == expected
    assert len(set(samples)) == expected
    if strategy == "small":
        assert {s.id.bg for s in samples} == set(range(1, 6)) and set(zips) == {1}


def test_strategy_asking_for_more_than_the_zips_hold(small_dataset):
    with pytest.raises(DatasetError, match="needs 40 backgrounds in .*batch1_images.zip, which holds 12"):
        select(small_dataset, "16k", STRATEGIES)
    with pytest.raises(DatasetError, match="batch3_images.zip, which does not exist"):
        select(small_dataset, "missing", STRATEGIES)
    with pytest.raises(DatasetError, match="unknown strategy 'nope'"):
        select(small_dataset, "nope", STRATEGIES)


def test_split_holds_out_backgrounds_and_foregrounds(small_dataset):
    _, samples = select(small_dataset, "small", STRATEGIES)
    parts, description = split(samples, seed=3)
    bgs = {name: {s.id.bg for s in part} for name, part in parts.items()}
    fgs = {name: {s.id.fg for s in part} for name, part in parts.items()}
    for held_out in ("val", "test"):
        assert parts[held_out]
        assert not bgs[held_out] & bgs["train"] and not fgs[held_out] & fgs["train"]
    assert not bgs["val"] & bgs["test"]
    assert description["counts"] == {n: len(p) for n, p in parts.items()}
    assert split(samples, seed=3)[0] == parts  # seeded
    assert split(samples, seed=4)[0] != parts


def test_split_keeps_foregrounds_when_too_few(small_dataset):
    _, samples = select(small_dataset, "all", STRATEGIES)
    two_fg = [s for s in samples if s.id.fg in (1, 2)]
    parts, description = split(two_fg)
    assert not description["foregrounds_held_out"]
    assert {s.id.fg for s in parts["val"]} == {1, 2}


def _copy_with(src, dst, drop=(), add=()):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename not in drop:
                zout.writestr(info, zin.read(info))
        for name, data in add:
            zout.writestr(name, data)
    return dst


@pytest.mark.parametrize(
    "drop, add, message",
    [
        (["depth_fg_bg_jpg/depth_fg_bg_3_4_1_2.jpg"], [], "'fg_bg_jpg/fg_bg_3_4_1_2.jpg' has no partner 'depth_fg_bg_jpg/depth_fg_bg_3_4_1_2.jpg'"),
        (["fg_bg_jpg/fg_bg_3_4_1_2.jpg"], [], "'depth_fg_bg_jpg/depth_fg_bg_3_4_1_2.jpg' has no partner 'fg_bg_jpg/fg_bg_3_4_1_2.jpg'"),
        ([], [("notes.txt", b"hi")], "foreign member .*notes.txt"),
        ([], [("../evil.jpg", b"x")], r"foreign member .*\.\./evil.jpg"),
        ([], [("/abs/fg_jpg/fg_img_1.jpg", b"x")], "foreign member .*/abs/fg_jpg"),
        ([], [("fg_bg_jpg/fg_bg_1_1_0_1.jpg", b"x")], "duplicate member 'fg_bg_jpg/fg_bg_1_1_0_1.jpg'"),
        (["bg_jpg/bg_img_4.jpg"], [], "background 4 but no bg_jpg/bg_img_4.jpg"),
    ],
)
def test_broken_zip_is_reported_by_member(small_dataset, tmp_path, drop, add, message):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we add on purpose
        path = _copy_with(small_dataset / "batch1_images.zip", tmp_path / "batch1_images.zip", drop, add)
    with pytest.raises(DatasetError, match=message):
        index_zip(path)


def test_not_a_zip(tmp_path):
    (tmp_path / "batch1_images.zip").write_bytes(b"PK garbage")
    with pytest.raises(DatasetError, match="batch1_images.zip: not a readable zip"):
        index_zip(tmp_path / "batch1_images.zip")

import re

import pytest

from fgbg.format import names
from fgbg.format.names import BadNameError, SampleId


def test_seed_document_names():
    sample = SampleId(fg=1, bg=4, flip=0, k=15)
    assert names.composite_member(names.FG_BG, sample) == "fg_bg_jpg/fg_bg_1_4_0_15.jpg"
    assert names.composite_member(names.MASK_BLACK, sample) == "mask_black_jpg/bg_mask_1_4_0_15.jpg"
    assert names.composite_member(names.DEPTH, sample) == "depth_fg_bg_jpg/depth_fg_bg_1_4_0_15.jpg"
    assert names.source_member(names.FG, 91) == "fg_jpg/fg_img_91.jpg"
    assert names.source_member(names.BG, 5) == "bg_jpg/bg_img_5.jpg"
    assert names.source_member(names.MASK, 5) == "mask_jpg/mask_img_5.jpg"
    assert [names.zip_name(b) for b in (1, 10)] == ["batch1_images.zip", "batch10_images.zip"]
    assert (names.BG_SIZE, names.FG_SIZE, names.OFFSET_RANGE) == (160, 80, 80)


@pytest.mark.parametrize("category", names.COMPOSITE_CATEGORIES)
def test_composite_round_trip(category):
    sample = SampleId(fg=100, bg=37, flip=1, k=20)
    assert names.parse_member(names.composite_member(category, sample)) == (category, sample)


@pytest.mark.parametrize("category", [names.BG, names.FG, names.MASK])
def test_source_round_trip(category):
    assert names.parse_member(names.source_member(category, 42)) == (category, 42)


@pytest.mark.parametrize(
    "member",
    [
        "fg_bg_jpg/fg_bg_1_4_2_15.jpg",  # flip must be 0 or 1
        "fg_bg_jpg/fg_bg_0_4_0_15.jpg",  # ids start at 1
        "fg_bg_jpg/fg_bg_1_4_0.jpg",  # missing k
        "fg_bg_jpg/bg_mask_1_4_0_15.jpg",  # prefix of another folder
        "mask_black_jpg/fg_bg_1_4_0_15.jpg",
        "depth_fg_bg_jpg/fg_bg_1_4_0_15.jpg",
        "fg_bg_jpg/fg_bg_1_4_0_15.png",
        "fg_jpg/bg_img_3.jpg",
        "other_jpg/fg_img_3.jpg",
        "fg_img_3.jpg",
        "/fg_jpg/fg_img_3.jpg",
        "../fg_jpg/fg_img_3.jpg",
        "fg_jpg/sub/fg_img_3.jpg",
    ],
)
def test_bad_names_are_rejected(member):
    with pytest.raises(BadNameError, match="expected|unknown folder"):
        names.parse_member(member)
    good = [names.source_member(names.BG, 1), names.composite_member(names.FG_BG, SampleId(1, 1, 0, 1))]
    with pytest.raises(BadNameError, match=re.escape(repr(member))):  # the bulk parser names the same member
        names.parse_members([*good, member])


@pytest.mark.parametrize("member", ["bg_jpg/bg_img_1234567890.jpg", "fg_bg_jpg/fg_bg_1_4_0_15.jpg\n", "bg_jpg/bg_img_\u0663.jpg"])
def test_ids_are_at_most_9_ascii_digits_and_names_one_line(member):
    for parse in (names.parse_member, lambda m: names.parse_members([m])):
        with pytest.raises(BadNameError):
            parse(member)


def test_bulk_parser_agrees_with_the_one_name_parser():
    samples = [SampleId(fg, bg, flip, k) for fg in (1, 9, 10, 123) for bg in (1, 100, 999_999_999) for flip in (0, 1) for k in (1, 20)]
    members = [names.composite_member(c, s) for s in samples for c in names.COMPOSITE_CATEGORIES]
    members += [names.source_member(c, i) for c in (names.BG, names.FG, names.MASK) for i in (1, 7, 80)]
    categories, ids = names.parse_members(members)
    for member, category, row in zip(members, categories.tolist(), ids.tolist()):
        expected_category, expected_id = names.parse_member(member)
        assert names.CATEGORIES[category] == expected_category
        assert row == ([expected_id.fg, expected_id.bg, expected_id.flip, expected_id.k]
                       if isinstance(expected_id, SampleId) else [expected_id, 0, 0, 0])
    assert names.parse_members([])[1].shape == (0, 4)


def test_zip_names_and_batches():
    assert names.parse_zip_name("batch7_images.zip") == 7
    with pytest.raises(BadNameError):
        names.parse_zip_name("batch0_images.zip")
    assert [names.batch_of_fg(i) for i in (1, 10, 11, 100)] == [1, 1, 2, 10]
    assert list(names.fg_ids_of_batch(2, 12)) == [11, 12]
    assert names.n_batches(100) == 10 and names.n_batches(12) == 2


def test_one_rule_for_image_members():
    members = [names.MANIFEST, "fg_bg_jpg/", "fg_bg_jpg/fg_bg_1_2_0_3.jpg", "bg_jpg/bg_img_2.jpg", "notes.txt"]
    assert [m for m in members if names.is_image(m)] == members[2:]  # a foreign image is still an image
    found = names.images_by_category(members)
    assert list(found) == list(names.CATEGORIES)
    assert found[names.FG_BG] == ["fg_bg_jpg/fg_bg_1_2_0_3.jpg"] and found[names.BG] == ["bg_jpg/bg_img_2.jpg"]
    assert sum(map(len, found.values())) == 2

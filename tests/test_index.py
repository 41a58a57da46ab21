import dataclasses
import gc
import inspect
import json
import logging
import re
import shutil
import tracemalloc
import zipfile

import numpy as np
import pytest

from fgbg.data.index import SAMPLE, DatasetError, index_zip, sample_id, select, split
from fgbg.errors import ConfigError
from fgbg.format.names import BG, COMPOSITE_CATEGORIES, DEPTH, MANIFEST, SampleId, composite_member, source_member
from tests.helpers.configs import compose_config
from tests.helpers.data import SMALL, copy_zip, make_dataset

STRATEGIES = {
    "small": {"batches": [1], "n_bg": 5},
    "all": {"batches": [1, 2], "n_bg": None},
    "16k": {"batches": [1], "n_bg": 40},
    "missing": {"batches": [3], "n_bg": None},
    "held": {"batches": [1], "n_bg": None, "held_out_batches": [2]},
    "held_missing": {"batches": [1], "n_bg": None, "held_out_batches": [3]},
    "held_twice": {"batches": [1, 2], "n_bg": None, "held_out_batches": [2]},
}


def test_index_groups_every_sample(small_dataset):
    contents = index_zip(small_dataset / "batch1_images.zip")
    assert contents.fg_ids == set(range(1, 11)) and contents.bg_ids == set(range(1, 13))
    assert len(contents.samples) == 10 * 12 * 2 * SMALL.placements
    assert SampleId(10, 12, 1, 2) in {sample_id(s) for s in contents.samples}


@pytest.mark.parametrize(
    "strategy, expected", [("small", 10 * 5 * 2 * SMALL.placements), ("all", 12 * 12 * 2 * SMALL.placements)]
)
def test_strategy_counts_and_first_backgrounds(small_dataset, strategy, expected):
    zips, samples, has_depth, _, held_out_fg = select(small_dataset, strategy, STRATEGIES)
    assert has_depth and held_out_fg is None
    assert len(samples) == expected
    assert len({sample_id(s) for s in samples}) == expected
    if strategy == "small":
        assert set(samples["bg"].tolist()) == set(range(1, 6)) and set(zips) == {1}


def test_strategy_asking_for_more_than_the_zips_hold(small_dataset):
    with pytest.raises(DatasetError, match="needs 40 backgrounds in .*batch1_images.zip, which holds 12"):
        select(small_dataset, "16k", STRATEGIES)
    with pytest.raises(DatasetError, match="batch3_images.zip, which does not exist"):
        select(small_dataset, "missing", STRATEGIES)
    with pytest.raises(DatasetError, match="unknown strategy 'nope'"):
        select(small_dataset, "nope", STRATEGIES)


def test_split_holds_out_backgrounds_and_foregrounds(small_dataset):
    samples = select(small_dataset, "small", STRATEGIES).samples
    parts, description = split(samples, seed=3)
    bgs = {name: set(part["bg"].tolist()) for name, part in parts.items()}
    fgs = {name: set(part["fg"].tolist()) for name, part in parts.items()}
    for held_out in ("val", "test"):
        assert len(parts[held_out])
        assert not bgs[held_out] & bgs["train"] and not fgs[held_out] & fgs["train"]
    assert not bgs["val"] & bgs["test"]
    assert description["counts"] == {n: len(p) for n, p in parts.items()}
    assert all(np.array_equal(split(samples, seed=3)[0][n], parts[n]) for n in parts)  # seeded
    assert not all(np.array_equal(split(samples, seed=4)[0][n], parts[n]) for n in parts)


def test_split_keeps_foregrounds_when_too_few(small_dataset):
    samples = select(small_dataset, "all", STRATEGIES).samples
    two_fg = samples[np.isin(samples["fg"], [1, 2])]
    parts, description = split(two_fg)
    assert not description["foregrounds_held_out"]
    assert set(parts["val"]["fg"].tolist()) == {1, 2}


def test_held_out_batches_give_the_val_and_test_foregrounds(small_dataset):
    selection = select(small_dataset, "held", STRATEGIES)
    assert set(selection.zips) == {1, 2} and selection.held_out_fg == [11, 12]
    parts, description = split(selection.samples, seed=3, held_out_fg=selection.held_out_fg)
    assert description["foregrounds_held_out"] and description["train_fg"] == list(range(1, 11))
    assert sorted(description["val_fg"] + description["test_fg"]) == [11, 12]  # one each
    batches = {name: set(part["batch"].tolist()) for name, part in parts.items()}
    assert batches == {"train": {1}, "val": {2}, "test": {2}}
    bgs = {name: set(part["bg"].tolist()) for name, part in parts.items()}
    assert not bgs["val"] & bgs["train"] and not bgs["test"] & bgs["train"] and not bgs["val"] & bgs["test"]
    # 12 backgrounds: 8 train, 2 val, 2 test; x 2 flips x 2 placements per (fg, bg).
    assert description["counts"] == {"train": 10 * 8 * 4, "val": 1 * 2 * 4, "test": 1 * 2 * 4}
    assert description.keys() == split(select(small_dataset, "all", STRATEGIES).samples)[1].keys()
    again = split(selection.samples, seed=3, held_out_fg=selection.held_out_fg)[0]
    assert all(np.array_equal(again[name], parts[name]) for name in parts)


def _grid(fgs, bgs) -> np.ndarray:
    """One :data:`SAMPLE` row per (fg, bg)."""
    samples = np.zeros(len(fgs) * len(bgs), SAMPLE)
    samples["fg"], samples["bg"] = np.repeat(fgs, len(bgs)), np.tile(bgs, len(fgs))
    return samples


@pytest.mark.parametrize("val_fg, test_fg, n_val", [(0.1, 0.1, 5), (0.1, 0.4, 2), (0.0, 0.5, 1), (0.5, 0.0, 9)])
def test_held_out_foregrounds_are_shared_as_val_fg_to_test_fg(val_fg, test_fg, n_val):
    samples, held_out = _grid(range(1, 21), range(1, 11)), list(range(11, 21))
    fractions = {"val_fg": val_fg, "test_fg": test_fg, "min_fg_to_split": 100}  # min_fg_to_split does not apply
    _, description = split(samples, **fractions, held_out_fg=held_out)
    assert description["train_fg"] == list(range(1, 11))
    assert len(description["val_fg"]) == n_val and len(description["test_fg"]) == 10 - n_val
    assert sorted(description["val_fg"] + description["test_fg"]) == held_out
    drawn = {tuple(split(samples, seed=seed, **fractions, held_out_fg=held_out)[1]["val_fg"]) for seed in range(5)}
    assert len(drawn) > 1  # seeded: other seeds, other foregrounds


def test_held_out_zips_need_two_foregrounds():
    with pytest.raises(DatasetError, match=r"held_out_batches hold 1 foreground\(s\) \[11\]: validation and test"):
        split(_grid(range(1, 12), range(1, 11)), held_out_fg=[11])


def test_held_out_zip_missing_or_trained_on_is_refused(small_dataset):
    with pytest.raises(DatasetError, match=r"strategy 'held_missing' holds out the foregrounds of .*batch3_images.zip, "
                                           r"which does not exist \(`make sample` makes it"):
        select(small_dataset, "held_missing", STRATEGIES)
    with pytest.raises(ConfigError, match=r"^data.strategies.held_twice: batches \[2\] are in both batches and"):
        select(small_dataset, "held_twice", STRATEGIES)


@pytest.mark.parametrize("strategy, n_bg", [("4k", 10), ("16k", 40)])
def test_the_sample_strategies_validate_and_test_on_five_foregrounds_each(tmp_path, strategy, n_bg):
    # `make sample`'s layout (40 backgrounds, zip 1: foregrounds 1-10, zip 2: 11-20), one placement.
    for batch in (1, 2):
        _names_only_zip(tmp_path / f"batch{batch}_images.zip", n_bg=40, placements=1, first_fg=10 * batch - 9)
    data = compose_config("train").data
    selection = select(tmp_path, strategy, data.strategies)
    parts, description = split(selection.samples, **data.split, held_out_fg=selection.held_out_fg)
    assert description["train_fg"] == list(range(1, 11))
    assert len(description["val_fg"]) == len(description["test_fg"]) == 5
    n_train_bg, n_held_out_bg = round(0.6 * n_bg), round(0.2 * n_bg)  # x 2 flips, one placement
    assert description["counts"] == {"train": 20 * n_train_bg, "val": 10 * n_held_out_bg, "test": 10 * n_held_out_bg}


@pytest.mark.parametrize(
    "drop, add, message",
    [
        (["depth_fg_bg_jpg/depth_fg_bg_3_4_1_2.jpg"], [], "'fg_bg_jpg/fg_bg_3_4_1_2.jpg' has no partner 'depth_fg_bg_jpg/depth_fg_bg_3_4_1_2.jpg'"),
        (["fg_bg_jpg/fg_bg_3_4_1_2.jpg"], [], "'depth_fg_bg_jpg/depth_fg_bg_3_4_1_2.jpg' has no partner 'fg_bg_jpg/fg_bg_3_4_1_2.jpg'"),
        ([], [("notes.txt", b"hi")], "foreign member .*notes.txt"),
        ([], [("../evil.jpg", b"x")], r"foreign member .*\.\./evil.jpg"),
        ([], [("/abs/fg_jpg/fg_img_1.jpg", b"x")], "foreign member .*/abs/fg_jpg"),
        ([], [("fg_bg_jpg/fg_bg_1_1_0_1.jpg", b"x")], "duplicate member 'fg_bg_jpg/fg_bg_1_1_0_1.jpg'"),
        ([MANIFEST], [(MANIFEST, b"{not json")], "batch1_images.zip: manifest.json is unreadable"),
        (["bg_jpg/bg_img_4.jpg"], [], "background 4 but no bg_jpg/bg_img_4.jpg"),
    ],
)
def test_broken_zip_is_reported_by_member(small_dataset, tmp_path, drop, add, message):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we add on purpose
        path = copy_zip(small_dataset / "batch1_images.zip", tmp_path / "batch1_images.zip", drop, add)
    with pytest.raises(DatasetError, match=message):
        index_zip(path)


def test_not_a_zip(tmp_path):
    (tmp_path / "batch1_images.zip").write_bytes(b"PK garbage")
    with pytest.raises(DatasetError, match="batch1_images.zip: not a readable zip"):
        index_zip(tmp_path / "batch1_images.zip")


def _names_only_zip(path, n_bg, n_fg=10, placements=20, first_fg=1):
    """A batch zip with every member of ``n_bg`` x ``n_fg`` composites (foregrounds from ``first_fg``), all
    empty: the index reads no image."""
    with zipfile.ZipFile(path, "w") as zf:
        for bg in range(1, n_bg + 1):
            zf.writestr(source_member(BG, bg), b"")
        for fg in range(first_fg, first_fg + n_fg):
            for bg in range(1, n_bg + 1):
                for flip in (0, 1):
                    for k in range(1, placements + 1):
                        for category in COMPOSITE_CATEGORIES:
                            zf.writestr(composite_member(category, SampleId(fg, bg, flip, k)), b"")
    return path


def test_index_memory_is_arrays_not_python_objects(tmp_path):
    # The 400k strategy must not hold a Python object per sample: those grow with the dataset and are
    # copied into every loader worker as it touches their reference counts.
    _names_only_zip(tmp_path / "batch1_images.zip", n_bg=20)
    strategies = {"all": {"batches": [1], "n_bg": None}}
    gc.collect()
    objects_before = len(gc.get_objects())
    tracemalloc.start()
    samples = select(tmp_path, "all", strategies).samples
    parts, _ = split(samples)
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gc.collect()
    assert len(samples) == 20 * 10 * 2 * 20
    assert len(gc.get_objects()) - objects_before < 100
    assert held / len(samples) < 2.5 * SAMPLE.itemsize  # the samples, and the split's copies of them
    assert SAMPLE.itemsize <= 110


def _copies(small_dataset, folder, names):
    """``{name in folder: name in small_dataset}`` copied into ``folder``; returns ``folder``."""
    folder.mkdir(exist_ok=True)
    for target, source in names.items():
        shutil.copyfile(small_dataset / source, folder / target)
    return folder


def test_copied_zip_is_refused_naming_both(small_dataset, tmp_path):
    # batch1 copied to batch2 would give every sample twice.
    _copies(small_dataset, tmp_path, {name: "batch1_images.zip" for name in ("batch1_images.zip", "batch2_images.zip")})
    both = f"{tmp_path / 'batch2_images.zip'} holds foreground 1, which belongs in {tmp_path / 'batch1_images.zip'} "
    with pytest.raises(DatasetError, match=re.escape(both + "(batch2_images.zip holds foregrounds 11..20)")):
        select(tmp_path, "all", STRATEGIES)


def test_foreign_foreground_in_a_zip_is_refused(small_dataset, tmp_path):
    foreign = [("fg_jpg/fg_img_11.jpg", b"x")]
    path = copy_zip(small_dataset / "batch1_images.zip", tmp_path / "batch1_images.zip", add=foreign)
    message = f"{path} holds foreground 11, which belongs in {tmp_path / 'batch2_images.zip'}"
    with pytest.raises(DatasetError, match=re.escape(message)):
        select(tmp_path, "small", STRATEGIES)


@pytest.mark.parametrize("setting, value", [("seed", 1), ("placements", 3)])
def test_zips_of_other_datasets_are_refused_naming_the_setting(small_dataset, tmp_path, setting, value):
    # batch 2 of a dataset made with another seed (or size) beside the SMALL dataset's batch 1.
    make_dataset(tmp_path, dataclasses.replace(SMALL, **{setting: value}), batch=2, workers=1)
    _copies(small_dataset, tmp_path, {"batch1_images.zip": "batch1_images.zip"})
    expected = getattr(SMALL, setting)
    with pytest.raises(DatasetError, match=f"batch2_images.zip was made with {setting}={value}, "
                                           f".*batch1_images.zip with {setting}={expected}: zips of one dataset share"):
        select(tmp_path, "all", STRATEGIES)


def test_first_difference_inside_a_setting_is_named(small_dataset, tmp_path):
    # Settings that are records (the depth labeller; a folder source, every file name): the message names the
    # entry that differs, not the whole record.
    _copies(small_dataset, tmp_path, {"batch1_images.zip": "batch1_images.zip"})
    with zipfile.ZipFile(small_dataset / "batch2_images.zip") as zf:
        manifest = json.loads(zf.read(MANIFEST))
    manifest["settings"]["depth"]["z_far"] = 20.0
    copy_zip(small_dataset / "batch2_images.zip", tmp_path / "batch2_images.zip", drop=[MANIFEST],
               add=[(MANIFEST, json.dumps(manifest))])
    with pytest.raises(DatasetError, match=r"batch2_images.zip was made with depth.z_far=20.0, .* depth.z_far=10.0:"):
        select(tmp_path, "all", STRATEGIES)


def test_zip_without_manifest_is_used_with_one_warning(small_dataset, tmp_path, caplog):
    _copies(small_dataset, tmp_path, {"batch1_images.zip": "batch1_images.zip"})
    copy_zip(small_dataset / "batch2_images.zip", tmp_path / "batch2_images.zip", drop=[MANIFEST])
    with caplog.at_level(logging.WARNING, logger="fgbg.data.checks"):
        samples = select(tmp_path, "all", STRATEGIES).samples
    assert len(samples) == 12 * 12 * 2 * SMALL.placements
    warnings = [r.getMessage() for r in caplog.records if r.name == "fgbg.data.checks"]
    assert len(warnings) == 1 and f"{tmp_path / 'batch2_images.zip'}: no manifest.json" in warnings[0]


def test_manifests_are_read_without_parsing_the_directory_again(small_dataset, monkeypatch):
    # zipfile would build an object per member of every zip: seconds for the 400k strategy's ten zips.
    monkeypatch.setattr(zipfile, "ZipFile", None)
    samples = select(small_dataset, "all", STRATEGIES).samples
    assert len(samples) == 12 * 12 * 2 * SMALL.placements


def test_zips_without_depth_maps_beside_zips_with_them_are_told_how_to_label_them(small_dataset, tmp_path):
    src = small_dataset / "batch1_images.zip"
    with zipfile.ZipFile(src) as zf:
        depths = [name for name in zf.namelist() if name.startswith(f"{DEPTH}/")]
    path = copy_zip(src, tmp_path / "batch1_images.zip", drop=depths)
    assert not index_zip(path).has_depth  # alone, it is mask-only data
    _copies(small_dataset, tmp_path, {"batch2_images.zip": "batch2_images.zip"})
    with pytest.raises(DatasetError) as caught:
        select(tmp_path, "all", STRATEGIES)
    message = str(caught.value)
    assert message.startswith("strategy 'all' mixes zips with depth maps and zips without (batch1_images.zip); ")
    assert f"{path}: holds no depth maps" in message
    assert f"`python generate.py stage=depth depth=depth_anything_v2_small out_dir={tmp_path}`" in message
    # The manifest says these are sample scenes: remade with the same settings, they get their exact depth.
    assert (f"`python generate.py depth=scene n_bg=12 n_fg=12 placements=2 seed=0 jpeg_quality=90 "
            f"out_dir={tmp_path} overwrite=true`") in message


def test_empty_training_part_is_refused_with_the_counts(small_dataset):
    samples = select(small_dataset, "all", STRATEGIES).samples
    with pytest.raises(DatasetError, match=r"leaves no train samples: the selection has 576 samples, 12 backgrounds "
                                           r"and 12 foregrounds, and the split holds out val_bg=0.5, test_bg=0.5, "
                                           r"val_fg=0.1, test_fg=0.1; use a larger data.strategy"):
        split(samples, val_bg=0.5, test_bg=0.5)


def test_conf_data_split_states_the_code_defaults():
    # held_out_fg (keyword-only) comes from the strategy, not from data.split.
    parameters = inspect.signature(split).parameters.items()
    defaults = {name: p.default for name, p in parameters if p.default is not p.empty and p.kind is not p.KEYWORD_ONLY}
    assert dict(compose_config("train").data.split) == defaults

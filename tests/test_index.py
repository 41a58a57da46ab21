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
from fgbg.format.names import BG, COMPOSITE_CATEGORIES, DEPTH, MANIFEST, SampleId, composite_member, source_member
from tests.helpers.configs import compose_config
from tests.helpers.data import SMALL, make_dataset

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
    assert SampleId(10, 12, 1, 2) in {sample_id(s) for s in contents.samples}


@pytest.mark.parametrize(
    "strategy, expected", [("small", 10 * 5 * 2 * SMALL.placements), ("all", 12 * 12 * 2 * SMALL.placements)]
)
def test_strategy_counts_and_first_backgrounds(small_dataset, strategy, expected):
    zips, samples = select(small_dataset, strategy, STRATEGIES)
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
    _, samples = select(small_dataset, "small", STRATEGIES)
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
    _, samples = select(small_dataset, "all", STRATEGIES)
    two_fg = samples[np.isin(samples["fg"], [1, 2])]
    parts, description = split(two_fg)
    assert not description["foregrounds_held_out"]
    assert set(parts["val"]["fg"].tolist()) == {1, 2}


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
        ([MANIFEST], [(MANIFEST, b"{not json")], "batch1_images.zip: manifest.json is unreadable"),
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


def _names_only_zip(path, n_bg, n_fg=10, placements=20):
    """A batch zip with every member of ``n_bg`` x ``n_fg`` composites, all empty: the index reads no image."""
    with zipfile.ZipFile(path, "w") as zf:
        for bg in range(1, n_bg + 1):
            zf.writestr(source_member(BG, bg), b"")
        for fg in range(1, n_fg + 1):
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
    _, samples = select(tmp_path, "all", strategies)
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
    path = _copy_with(small_dataset / "batch1_images.zip", tmp_path / "batch1_images.zip", add=foreign)
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
    _copy_with(small_dataset / "batch2_images.zip", tmp_path / "batch2_images.zip", drop=[MANIFEST],
               add=[(MANIFEST, json.dumps(manifest))])
    with pytest.raises(DatasetError, match=r"batch2_images.zip was made with depth.z_far=20.0, .* depth.z_far=10.0:"):
        select(tmp_path, "all", STRATEGIES)


def test_zip_without_manifest_is_used_with_one_warning(small_dataset, tmp_path, caplog):
    _copies(small_dataset, tmp_path, {"batch1_images.zip": "batch1_images.zip"})
    _copy_with(small_dataset / "batch2_images.zip", tmp_path / "batch2_images.zip", drop=[MANIFEST])
    with caplog.at_level(logging.WARNING, logger="fgbg.data.checks"):
        _, samples = select(tmp_path, "all", STRATEGIES)
    assert len(samples) == 12 * 12 * 2 * SMALL.placements
    warnings = [r.getMessage() for r in caplog.records if r.name == "fgbg.data.checks"]
    assert len(warnings) == 1 and f"{tmp_path / 'batch2_images.zip'}: no manifest.json" in warnings[0]


def test_manifests_are_read_without_parsing_the_directory_again(small_dataset, monkeypatch):
    # zipfile would build an object per member of every zip: seconds for the 400k strategy's ten zips.
    monkeypatch.setattr(zipfile, "ZipFile", None)
    _, samples = select(small_dataset, "all", STRATEGIES)
    assert len(samples) == 12 * 12 * 2 * SMALL.placements


def test_zip_without_depth_maps_says_how_to_label_them(small_dataset, tmp_path):
    src = small_dataset / "batch1_images.zip"
    with zipfile.ZipFile(src) as zf:
        depths = [name for name in zf.namelist() if name.startswith(f"{DEPTH}/")]
    path = _copy_with(src, tmp_path / "batch1_images.zip", drop=depths)
    with pytest.raises(DatasetError) as caught:
        index_zip(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: holds no depth maps")
    assert f"`python generate.py stage=depth depth=depth_anything_v2_small out_dir={tmp_path}`" in message
    # The manifest says these are sample scenes: remade with the same settings, they get their exact depth.
    assert (f"`python generate.py depth=scene n_bg=12 n_fg=12 placements=2 seed=0 jpeg_quality=90 "
            f"out_dir={tmp_path} overwrite=true`") in message


def test_empty_training_part_is_refused_with_the_counts(small_dataset):
    _, samples = select(small_dataset, "all", STRATEGIES)
    with pytest.raises(DatasetError, match=r"leaves no train samples: the selection has 576 samples, 12 backgrounds "
                                           r"and 12 foregrounds, and the split holds out val_bg=0.5, test_bg=0.5, "
                                           r"val_fg=0.1, test_fg=0.1; use a larger data.strategy"):
        split(samples, val_bg=0.5, test_bg=0.5)


def test_conf_data_split_states_the_code_defaults():
    defaults = {name: p.default for name, p in inspect.signature(split).parameters.items() if p.default is not p.empty}
    assert dict(compose_config("train").data.split) == defaults

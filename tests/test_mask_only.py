"""Mask-only data (zips made with depth=none): indexed, selected, read and cached without depth; trained, evaluated
and predicted with the mask alone."""

import json
import zipfile

import pytest
import torch

from fgbg.data import cache
from fgbg.data.batch import DEPTH, INPUTS, MASK
from fgbg.data.dataset import ZipSampleDataset
from fgbg.data.index import DatasetError, index_zip, sample_id, select
from fgbg.format.names import BG, FG_BG, MANIFEST, SampleId, composite_member, source_member
from fgbg.format.names import DEPTH as DEPTH_MEMBERS
from fgbg.run_dirs import METRICS_FILE
from fgbg.tasks.evaluate import evaluate
from fgbg.tasks.predict import predict
from fgbg.tasks.train import train
from tests.helpers.configs import compose_config, datamodule, train_config
from tests.helpers.data import copy_zip, make_mask_only_dataset

ALL = {"all": {"batches": [1, 2], "n_bg": None}}
ZIPS = ("batch1_images.zip", "batch2_images.zip")


@pytest.fixture(scope="module")
def mask_only(tmp_path_factory):
    """The SMALL dataset made with depth=none (read-only for tests)."""
    out = tmp_path_factory.mktemp("mask_only")
    make_mask_only_dataset(out, workers=1)
    return out


@pytest.fixture
def data_dir(mask_only, tmp_path):
    """The mask-only zips seen from a folder of the test's own, where the cache may be written."""
    for name in ZIPS:
        (tmp_path / name).symlink_to(mask_only / name)
    return tmp_path


def test_mask_only_zips_hold_the_same_samples_without_depth(mask_only, small_dataset):
    for name in ZIPS:
        with zipfile.ZipFile(mask_only / name) as zf:
            assert not any(member.startswith(f"{DEPTH_MEMBERS}/") for member in zf.namelist())
        found, with_depth = index_zip(mask_only / name), index_zip(small_dataset / name)
        assert not found.has_depth and with_depth.has_depth
        assert [sample_id(s) for s in found.samples] == [sample_id(s) for s in with_depth.samples]
        # SAMPLE_IMAGES' depth column: located for the depth data, left blank here.
        assert (with_depth.samples["members"][:, 3]["size"] > 0).all()
        assert (found.samples["members"][:, 3]["size"] == 0).all()


def test_selection_says_whether_it_has_depth_and_how_it_was_made(mask_only, small_dataset):
    selection = select(mask_only, "all", ALL)
    assert not selection.has_depth and selection.depth_record is None
    with zipfile.ZipFile(small_dataset / ZIPS[0]) as zf:
        record = json.loads(zf.read(MANIFEST))["settings"]["depth"]
    selection = select(small_dataset, "all", ALL)
    assert selection.has_depth and record is not None and selection.depth_record == record


@pytest.mark.parametrize("overrides", [[], ["data.cache=true"]])
def test_items_have_no_depth_and_equal_the_depth_datas_otherwise(data_dir, small_dataset, overrides, monkeypatch):
    read = []  # the SAMPLE_IMAGES index of each image decoded from a zip
    decoded = ZipSampleDataset._decoded
    monkeypatch.setattr(ZipSampleDataset, "_decoded", lambda self, s, i, d: read.append(i) or decoded(self, s, i, d))
    dm = datamodule(data_dir, *overrides)
    assert dm.has_depth is False and dm.depth_record is None
    items = {part: dm.parts[part][0] for part in ("train", "val", "test")}
    batch = next(iter(dm.train_dataloader()))
    assert read and 3 not in read  # no depth member is read
    assert set(batch) == {*INPUTS, MASK} and batch[MASK].shape == (dm.batch_size, 1, 64, 64)
    with_depth = datamodule(small_dataset)
    assert with_depth.has_depth is True
    for part, item in items.items():
        ids = [sample_id(s) for s in dm.parts[part].samples]
        assert ids == [sample_id(s) for s in with_depth.parts[part].samples]
        expected = with_depth.parts[part][0]
        assert set(item) == {*INPUTS, MASK} and DEPTH in expected
        for key in item:  # the same scenes: composites and masks as the depth data's
            assert torch.equal(item[key], expected[key]), key
    if dm.cache:
        folder = dm.parts["train"].folder
        arrays = ["background.npy", "composite.npy", "mask.npy", cache.SAMPLES]
        assert sorted(p.name for p in folder.iterdir()) == sorted(arrays)


def test_a_zip_with_depth_for_some_composites_only_names_the_first_without(mask_only, small_dataset, tmp_path):
    one = composite_member(DEPTH_MEMBERS, SampleId(1, 1, 0, 1))
    with zipfile.ZipFile(small_dataset / ZIPS[0]) as zf:
        data = zf.read(one)
    path = copy_zip(mask_only / ZIPS[0], tmp_path / ZIPS[0], add=[(one, data)])
    first_without = SampleId(1, 1, 0, 2)
    composite, depth = (composite_member(category, first_without) for category in (FG_BG, DEPTH_MEMBERS))
    with pytest.raises(DatasetError, match=f"'{composite}' has no partner '{depth}'"):
        index_zip(path)


def test_mask_only_data_trains_evaluates_and_predicts_the_mask_alone(data_dir, tmp_path):
    run = tmp_path / "run"
    steps = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    metrics = train(train_config(data_dir, run, "model=unet", *steps))
    summary = json.loads((run / METRICS_FILE).read_text())
    assert "test/mask_iou" in summary and "test_perturbed/mask_iou" in summary and "train/loss" in summary
    assert not [key for key in {**summary, **metrics} if "depth" in key]  # no depth loss, no depth metrics

    ckpt = run / "checkpoints" / "last.ckpt"
    given = [f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'eval'}", "trainer.accelerator=cpu"]
    scores = evaluate(compose_config("eval", given), overrides=given)
    assert scores["test/mask_iou"] == pytest.approx(summary["test/mask_iou"])
    assert not [key for key in scores if "depth" in key]

    inputs = tmp_path / "in"
    inputs.mkdir()
    with zipfile.ZipFile(data_dir / ZIPS[0]) as zf:
        (inputs / "bg.jpg").write_bytes(zf.read(source_member(BG, 1)))
        (inputs / "a.jpg").write_bytes(zf.read(composite_member(FG_BG, SampleId(1, 1, 0, 1))))
    written = predict(ckpt, inputs / "bg.jpg", inputs / "a.jpg", tmp_path / "out")
    assert sorted(path.name for path in written) == ["a_mask.png", "a_side_by_side.png"]  # no depth file

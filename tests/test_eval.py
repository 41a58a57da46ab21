import json

import pytest

from fgbg.tasks.evaluate import evaluate, format_table
from fgbg.tasks.train import train
from fgbg.training.module import CheckpointError
from tests.helpers.configs import compose_config, train_config

METRICS = {
    f"test/{name}"
    for name in (
        "loss", "loss_mask", "loss_depth", "mask/bce", "depth/ssim",  # the loss and its terms (conf/loss/seed.yaml)
        "mask_iou", "mask_dice", "depth_rmse", "depth_mae", "depth_abs_rel", "depth_delta1", "depth_ssim",
    )
}


def eval_config(data_dir, out_dir, ckpt_path, *overrides):
    base = [
        f"ckpt_path={ckpt_path}",
        f"data.data_dir={data_dir}",
        "data.strategy=40k",
        "data.num_workers=0",
        "data.batch_size=8",
        "data.image_size=16",
        f"paths.output_dir={out_dir}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
    ]
    return compose_config("eval", overrides=base + list(overrides))


@pytest.fixture(scope="module")
def trained(small_dataset, tmp_path_factory):
    """A one-step training run's folder and the test metrics ``train`` reported for its checkpoint."""
    run = tmp_path_factory.mktemp("run")
    one_step = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
    metrics = train(train_config(small_dataset, run, "model=convgen", "data.image_size=16", *one_step))
    return run, metrics


def test_eval_writes_every_metric_and_repeats_itself(small_dataset, trained, tmp_path, caplog):
    run, trained_metrics = trained
    ckpt = run / "checkpoints" / "last.ckpt"
    first = evaluate(eval_config(small_dataset, tmp_path / "a", ckpt))
    second = evaluate(eval_config(small_dataset, tmp_path / "b", ckpt))
    assert set(first) == METRICS and first == second
    assert "differ" not in caplog.text

    report = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert report["metrics"] == first and report["strategy"] == "40k" and report["test_samples"] > 0
    split = json.loads((run / "split.json").read_text())
    assert report["test_bg"] == split["test_bg"] and report["test_fg"] == split["test_fg"]
    # The same numbers as train.py's own test of that checkpoint (one epoch: the best is the last).
    assert first == pytest.approx({k: v for k, v in trained_metrics.items() if k.startswith("test/")})


def test_eval_refuses_a_split_that_overlaps_training(small_dataset, trained, tmp_path):
    run, _ = trained
    # Seed 2 holds out other backgrounds than seed 0, which the run was trained with.
    cfg = eval_config(small_dataset, tmp_path, run / "checkpoints" / "last.ckpt", "seed=2")
    with pytest.raises(ValueError, match="shares backgrounds"):
        evaluate(cfg)
    assert not (tmp_path / "metrics.json").exists()


def test_eval_warns_when_images_are_prepared_otherwise_than_in_training(small_dataset, trained, tmp_path, caplog):
    run, _ = trained
    evaluate(eval_config(small_dataset, tmp_path, run / "checkpoints" / "last.ckpt", "data.image_size=24"))
    assert "'image_size': (16, 24)" in caplog.text


def test_eval_names_a_checkpoint_it_cannot_read(tmp_path):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.ckpt: not a checkpoint of train\.py"):
        evaluate(eval_config(tmp_path, tmp_path / "out", tmp_path / "empty.ckpt"))
    assert not (tmp_path / "out").exists()


def test_format_table_aligns_names():
    assert format_table({"test/loss": 0.5, "test/mask_iou": 1 / 3}).splitlines() == [
        "test/loss      0.5000",
        "test/mask_iou  0.3333",
    ]

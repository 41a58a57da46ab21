import json
import logging
import shutil
import subprocess
import sys

import pytest

from fgbg.tasks.evaluate import evaluate, format_table
from fgbg.tasks.train import train
from fgbg.training.module import CheckpointError
from tests.helpers.configs import compose_config, train_config
from tests.helpers.paths import ROOT

METRICS = {
    f"{stage}/{name}"
    for stage in ("test", "test_perturbed")  # the test split as it is, and with its plates perturbed (seeded)
    for name in (
        "loss", "loss_mask", "loss_depth", "mask/bce", "depth/ssim",  # the loss and its terms (conf/loss/document.yaml)
        "mask_iou", "mask_dice", "mask_iou_per_image", "mask_boundary_iou", "mask_boundary_f",
        "depth_rmse", "depth_mae", "depth_ssim", "depth_spread",
        "depth_abs_rel", "depth_delta1", "depth_rmse_m",  # in metres: the sample scenes' depth
    )
}


def run_eval(data_dir, out_dir, ckpt_path, *overrides):
    """``python eval.py`` with these overrides, in-process: the overrides are also what Hydra would record."""
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
    given = [*base, *overrides]
    return evaluate(compose_config("eval", overrides=given), overrides=given)


def eval_only_ckpt(out_dir, ckpt_path, *overrides):
    """``python eval.py ckpt_path=...`` (and ``overrides``): in-process, the run folder is the only other one."""
    given = [f"ckpt_path={ckpt_path}", *overrides]
    base = [f"paths.output_dir={out_dir}", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false"]
    return evaluate(compose_config("eval", overrides=[*base, *given]), overrides=given)


@pytest.fixture(scope="module")
def trained(small_dataset, tmp_path_factory):
    """A one-step training run's folder and the test metrics ``train`` reported for its checkpoint."""
    run = tmp_path_factory.mktemp("run")
    one_step = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
    cfg = train_config(small_dataset, run, "model=convgen", "data.image_size=16", *one_step)
    metrics = train(cfg)  # it saves its config in the run folder, as eval reads it
    return run, metrics


def test_eval_writes_every_metric_and_repeats_itself(small_dataset, trained, tmp_path, caplog):
    run, trained_metrics = trained
    ckpt = run / "checkpoints" / "last.ckpt"
    first = run_eval(small_dataset, tmp_path / "a", ckpt)
    second = run_eval(small_dataset, tmp_path / "b", ckpt)
    assert set(first) == METRICS and first == second
    assert "differ" not in caplog.text

    report = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert report["metrics"] == first and report["strategy"] == "40k" and report["test_samples"] > 0
    split = json.loads((run / "split.json").read_text())
    assert report["test_bg"] == split["test_bg"] and report["test_fg"] == split["test_fg"]
    # The same numbers as train.py's own test of that checkpoint (one epoch: the best is the last).
    assert first == pytest.approx({k: v for k, v in trained_metrics.items() if k.startswith("test")})


def test_eval_refuses_a_split_that_overlaps_training(small_dataset, trained, tmp_path):
    run, _ = trained
    # Seed 2 holds out other backgrounds than seed 0, which the run was trained with.
    with pytest.raises(ValueError, match="shares backgrounds"):
        run_eval(small_dataset, tmp_path, run / "checkpoints" / "last.ckpt", "seed=2")
    assert not (tmp_path / "metrics.json").exists()


def test_eval_warns_when_images_are_prepared_otherwise_than_in_training(small_dataset, trained, tmp_path, caplog):
    run, _ = trained
    run_eval(small_dataset, tmp_path, run / "checkpoints" / "last.ckpt", "data.image_size=24")
    assert "'image_size': (16, 24)" in caplog.text


def test_eval_names_a_checkpoint_it_cannot_read(tmp_path):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.ckpt: not a checkpoint of train\.py"):
        run_eval(tmp_path, tmp_path / "out", tmp_path / "empty.ckpt")
    assert not (tmp_path / "out").exists()


def test_eval_needs_only_the_checkpoint_path(trained, tmp_path, caplog):
    run, trained_metrics = trained
    caplog.set_level(logging.INFO, logger="fgbg")
    metrics = eval_only_ckpt(tmp_path, run / "checkpoints" / "last.ckpt")
    # The run's data (its folder, strategy 40k, 16 pixels), seed and split: train.py's own test numbers.
    assert metrics == pytest.approx({k: v for k, v in trained_metrics.items() if k.startswith("test")})
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["strategy"] == "40k" and report["test_bg"] == json.loads((run / "split.json").read_text())["test_bg"]
    assert f"data, seed of {run / '.hydra' / 'config.yaml'}" in caplog.text and "differ" not in caplog.text


def test_eval_applies_and_shows_an_override_given_anyway(trained, tmp_path, caplog):
    run, _ = trained
    caplog.set_level(logging.INFO, logger="fgbg")
    eval_only_ckpt(tmp_path, run / "checkpoints" / "last.ckpt", "data.image_size=24")
    assert "given here: ckpt_path=" in caplog.text and "data.image_size=24" in caplog.text
    assert "'image_size': (16, 24)" in caplog.text


def test_eval_of_a_checkpoint_outside_its_run_uses_the_command_line(small_dataset, trained, tmp_path, caplog):
    run, _ = trained
    moved = tmp_path / "elsewhere" / "checkpoints" / "last.ckpt"
    moved.parent.mkdir(parents=True)
    shutil.copy(run / "checkpoints" / "last.ckpt", moved)
    run_eval(small_dataset, tmp_path / "out", moved, "data.image_size=24")
    assert f"no {tmp_path / 'elsewhere' / '.hydra' / 'config.yaml'}: using this command's config alone" in caplog.text
    assert "'image_size': (16, 24)" in caplog.text  # the command line's data, not the run's


@pytest.mark.slow
def test_eval_py_after_train_py_needs_only_the_checkpoint_path(small_dataset, tmp_path):
    train_py = [
        sys.executable, "train.py", f"data.data_dir={small_dataset}", "data.strategy=40k", "data.num_workers=0",
        "data.image_size=16", "data.batch_size=8", "model=net", "logger=none", "trainer.accelerator=cpu",
        "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    subprocess.run(train_py, cwd=ROOT, check=True, capture_output=True, timeout=300)
    eval_py = [sys.executable, "eval.py", f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}",
               "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'eval'}"]
    done = subprocess.run(eval_py, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    trained = json.loads((tmp_path / "run" / "metrics.json").read_text())
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["data_dir"] == str(small_dataset) and report["strategy"] == "40k"
    assert report["metrics"] == pytest.approx({k: v for k, v in trained.items() if k.startswith("test")})


def test_format_table_aligns_names():
    assert format_table({"test/loss": 0.5, "test/mask_iou": 1 / 3}).splitlines() == [
        "test/loss      0.5000",
        "test/mask_iou  0.3333",
    ]

"""The run folder as later commands read it: overrides given anyway win, older runs' configs are upgraded, and
the data are found from any folder."""

import pytest
from omegaconf import OmegaConf

from fgbg.run_dirs import CONFIG_FILE, override_key, save_config, with_run_config
from fgbg.tasks.evaluate import evaluate
from fgbg.tasks.train import train
from fgbg.upgrade import UNET_FIRST_LAYOUT
from tests.helpers.configs import compose_config, train_config


@pytest.mark.parametrize(
    ("override", "key"),
    [("data.image_size=24", "data.image_size"), ("+data.x=1", "data.x"), ("~data.x", "data.x"),
     ("++data.x=1", "data.x"), ("data/stats=mine", "data.stats"), ("model=unet", "model")],
)
def test_override_key(override, key):
    assert override_key(override) == key


def _run_with_config(tmp_path, saved: dict):
    run = tmp_path / "run"
    save_config(OmegaConf.create(saved), run)
    return run / "checkpoints" / "last.ckpt"


def test_a_group_override_given_anyway_wins_over_the_run(tmp_path):
    ckpt = _run_with_config(tmp_path, {"seed": 0, "data": {"stats": {"bg_jpg": 0.1}, "image_size": 32}})
    cfg = OmegaConf.create({"seed": 0, "data": {"stats": {"bg_jpg": 0.9}, "image_size": 64}})
    merged = with_run_config(cfg, ckpt, ("data",), ["data/stats=mine"])
    assert merged.data.stats.bg_jpg == 0.9 and merged.data.image_size == 32


def test_the_config_of_a_run_made_before_the_layout_change_is_upgraded(tmp_path):
    unet = {"_target_": "fgbg.models.unet.UNet", "encoder_name": "resnet18"}
    ckpt = _run_with_config(tmp_path, {
        "seed": 3,
        "data": {"image_size": 32},  # no training-order seed: that setting came later
        "model": unet,
        "loss": {"_target_": "fgbg.losses.MaskDepthLoss"},
        "callbacks": {"grid": {"_target_": "fgbg.callbacks.PredictionGrid"}},
        "logger": {"wandb": {"_target_": "fgbg.loggers.wandb_logger"}},
    })
    merged = with_run_config(OmegaConf.create({"seed": 0}), ckpt, None, [])
    assert merged.loss._target_ == "fgbg.training.losses.MaskDepthLoss"
    assert merged.callbacks.grid._target_ == "fgbg.training.callbacks.PredictionGrid"
    assert merged.logger.wandb._target_ == "fgbg.training.loggers.wandb_logger"
    assert merged.data.seed == 3  # ${seed}: the run's
    assert OmegaConf.to_container(merged.model) == {**UNET_FIRST_LAYOUT, **unet}


def test_eval_started_in_another_folder_finds_the_runs_data(small_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(small_dataset.parent)  # the data given relative to the folder train starts in
    run = tmp_path / "run"
    one_step = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false"]
    train(train_config(small_dataset.name, run, "data.image_size=16", *one_step))
    assert OmegaConf.load(run / CONFIG_FILE).data.data_dir == str(small_dataset.resolve())

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    given = [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]
    base = [f"paths.output_dir={tmp_path / 'eval'}", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]
    metrics = evaluate(compose_config("eval", [*base, *given]), overrides=given)
    assert metrics["test/mask_iou"] >= 0

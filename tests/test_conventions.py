"""lightning-hydra-template's conventions: debug= presets, logger=tensorboard, hparams_search= (Optuna), tags,
early stopping and learning-rate callbacks, a run's results table and loss curves, a sweep's table; and a
strategy that asks for more foregrounds than its zips hold says so."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from PIL import Image

import train as train_script
from fgbg.data.index import select
from fgbg.errors import ConfigError
from fgbg.run_dirs import METRICS_FILE
from fgbg.tasks.train import train
from fgbg.tools.curves import CURVES_FILE, RESULTS_FILE, SweepResults, epoch_table, sweep_table
from fgbg.training.callbacks import Curves, LearningRates
from tests.helpers.configs import compose_config, train_config
from tests.helpers.data import SMALL, make_dataset
from tests.helpers.paths import CONF_DIR, ROOT

TINY = ["model=net", "data.image_size=16", "data.batch_size=8"]
ONE_STEP = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, one_torch_thread):
    monkeypatch.setenv("WANDB_MODE", "disabled")


PRESETS = [p.stem for p in sorted((CONF_DIR / "debug").glob("*.yaml"))]


@pytest.mark.parametrize("preset", PRESETS)
def test_each_debug_preset_runs_a_fast_dev_run(small_dataset, tmp_path, preset):
    cfg = train_config(small_dataset, tmp_path, f"debug={preset}", *TINY, "trainer.fast_dev_run=true")
    assert cfg.task_name == "debug" and cfg.callbacks is None and cfg.logger is None
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.detect_anomaly and cfg.data.num_workers == 0
    expected = {"fdr": ("fast_dev_run", True), "overfit": ("overfit_batches", 3), "profiler": ("profiler", "simple"),
                "limit": ("limit_train_batches", 0.01), "default": ("max_epochs", 1)}[preset]
    compose = compose_config("train", [f"debug={preset}"])
    assert compose.trainer[expected[0]] == expected[1]
    metrics = train(cfg, overrides=[])
    # Lightning validates nothing while overfitting batches (limit_val_batches becomes 0).
    assert np.isfinite(metrics["train/loss" if preset == "overfit" else "val/loss"]) and "test/loss" in metrics


def test_logger_tensorboard_writes_event_files(small_dataset, tmp_path):
    train(train_config(small_dataset, tmp_path, "logger=tensorboard", *TINY, *ONE_STEP), overrides=[])
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_a_run_writes_its_table_its_curves_and_its_learning_rate(small_dataset, tmp_path):
    cfg = train_config(small_dataset, tmp_path, *TINY, *ONE_STEP, "trainer.max_epochs=2", "test=true")
    train(cfg, overrides=[])
    table = (tmp_path / RESULTS_FILE).read_text().splitlines()
    assert table[0].startswith("| epoch | train/loss | val/loss | val/mask_iou |")
    assert [row.split(" | ")[0] for row in table[2:]] == ["| 0", "| 1", "| test"]
    assert "n/a" not in table[3]  # epoch 1 has every column
    with Image.open(tmp_path / CURVES_FILE) as png:
        assert png.size == (1000, 400)
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "lr-SGD" in header  # LearningRates, with the CSV logger


def test_without_a_logger_the_learning_rate_monitor_stands_aside(small_dataset, tmp_path):
    cfg = train_config(small_dataset, tmp_path, "logger=none", *TINY, *ONE_STEP)
    assert {"early_stopping", "learning_rate_monitor", "curves"} <= set(cfg.callbacks)
    train(cfg, overrides=[])  # Lightning's own LearningRateMonitor raises here
    assert (tmp_path / RESULTS_FILE).exists()


def test_early_stopping_watches_val_loss_and_does_not_stop_the_quickstart():
    cfg = compose_config("train", ["experiment=quickstart"])
    stopping = cfg.callbacks.early_stopping
    assert (stopping.monitor, stopping.mode) == ("val/loss", "min") and stopping.patience >= cfg.trainer.max_epochs
    assert compose_config("train").callbacks.early_stopping.patience >= compose_config("train").trainer.max_epochs


def test_the_run_s_table_shows_test_counterparts_and_marks_missing_values():
    history = {0: {"train/loss": 1.5, "val/loss": 2.0}, 1: {"train/loss": 0.123456, "val/loss": 1.0, "val/mask_iou": 0.5}}
    table = epoch_table(history, ["train/loss", "val/loss", "val/mask_iou", "val/depth_delta1"], {"test/mask_iou": 0.75})
    assert table.splitlines() == [
        "| epoch | train/loss | val/loss | val/mask_iou |",
        "|---|---|---|---|",
        "| 0 | 1.5 | 2 | n/a |",
        "| 1 | 0.1235 | 1 | 0.5 |",
        "| test | n/a | n/a | 0.75 |",
    ]


def test_the_history_survives_a_checkpoint():
    curves = Curves("run", ["train/loss"])
    curves.history = {0: {"train/loss": 1.0}, 3: {"train/loss": 0.5}}
    resumed = Curves("run", ["train/loss"])
    resumed.load_state_dict(curves.state_dict())
    assert resumed.history == curves.history and all(isinstance(k, str) for k in curves.state_dict()["history"])


def _job(sweep: Path, number: int, overrides: list[str], metrics: dict | None) -> None:
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (job / METRICS_FILE).write_text(json.dumps(metrics))


def test_a_multirun_writes_one_row_per_job(tmp_path):
    for number in (0, 2, 10):
        overrides = [f"optimizer.lr={number / 300}", "model=unet", "data.strategy=4k"]
        _job(tmp_path, number, overrides, {"test/mask_iou": number / 20, "fit_seconds": 3})
    _job(tmp_path, 1, ["model=net"], None)  # a failed job: no metrics.json, no row
    SweepResults(["test/mask_iou", "test/depth_delta1", "fit_seconds"]).on_multirun_end(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    )
    assert (tmp_path / RESULTS_FILE).read_text().splitlines() == [
        "| job | overrides | test/mask_iou | fit_seconds |",
        "|---|---|---|---|",
        "| 0 | optimizer.lr=0 | 0 | 3 |",
        "| 2 | optimizer.lr=0.006667 | 0.1 | 3 |",
        "| 10 | optimizer.lr=0.03333 | 0.5 | 3 |",
        "",
        "Every job: model=unet data.strategy=4k",
    ]


def test_a_sweep_without_metrics_writes_no_table(tmp_path):
    _job(tmp_path, 0, ["batch=1"], None)  # generate.py -m batch=...
    SweepResults(["test/mask_iou"]).on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert not (tmp_path / RESULTS_FILE).exists()
    assert sweep_table([{"job": "0", "overrides": [], "metrics": {"a|b": 1}}], ["a|b"]).endswith("| 0 | (none) | 1 |")


def test_the_optimized_metric_is_returned_and_a_wrong_name_is_one_line():
    assert train_script.optimized({"val/mask_iou": 0.5}, "val/mask_iou") == 0.5
    assert train_script.optimized({"val/mask_iou": 0.5}, None) is None
    with pytest.raises(ConfigError, match=r"optimized_metric='val/iou' was not logged; logged: val/mask_iou"):
        train_script.optimized({"val/mask_iou": 0.5, "train/loss": 1.0}, "val/iou")


def test_tags_reach_wandb_and_the_search_composes():
    cfg = compose_config("train", ["tags=[mine,unet]"])
    assert list(cfg.logger.wandb.tags) == ["mine", "unet"] and cfg.optimized_metric is None
    search = compose_config("train", ["hparams_search=unet_optuna"], return_hydra_config=True)
    assert search.optimized_metric == "val/mask_iou" and search.model._target_ == "fgbg.models.unet.UNet"
    assert search.hydra.sweeper.direction == "maximize" and "optimizer.lr" in search.hydra.sweeper.params
    assert "results" in search.hydra.callbacks


def test_a_strategy_on_fewer_foregrounds_than_a_full_zip_says_so(tmp_path, caplog):
    make_dataset(tmp_path, SMALL.__class__(n_bg=3, n_fg=6, placements=1), depth=False, workers=1)
    strategies = OmegaConf.to_container(compose_config("train").data.strategies)
    with caplog.at_level(logging.WARNING, logger="fgbg.data.index"):
        selection = select(tmp_path, "40k", strategies)
    assert len(selection.samples) == 6 * 3 * 2
    assert [r.getMessage() for r in caplog.records] == [
        f"strategy '40k': {tmp_path / 'batch1_images.zip'} holds 6 foregrounds, not the 10 of a full zip: "
        "using those 6 (36 samples from it, not 60)"
    ]


def test_learning_rates_keep_lightning_s_arguments():
    assert LearningRates(logging_interval="epoch").logging_interval == "epoch"


@pytest.mark.slow
def test_a_two_trial_optuna_search_runs_and_writes_the_sweep_table(small_dataset, tmp_path):
    command = [
        sys.executable, "train.py", "-m", "hparams_search=unet_optuna", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1", f"hydra.sweep.dir={tmp_path}", f"data.data_dir={small_dataset}",
        "data.strategy=40k", "data.image_size=32", "data.batch_size=4", "data.num_workers=0", "trainer.accelerator=cpu",
        "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=none",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert 0 <= best["best_value"] <= 1 and set(best["best_params"]) == {
        "optimizer.lr", "loss.mask_terms.bce", "loss.depth_terms.ssim"}
    rows = (tmp_path / RESULTS_FILE).read_text().split("\n\n")[0].splitlines()
    assert rows[0].startswith("| job | overrides | val/mask_iou |") and len(rows) == 2 + 2
    assert all("optimizer.lr=" in row for row in rows[2:])

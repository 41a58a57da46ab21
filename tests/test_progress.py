"""Readable progress (a bar on a terminal, log lines elsewhere) and quiet entry points (fgbg/progress.py, fgbg/cli.py,
fgbg/training/callbacks/progress.py)."""

import logging
import os
import re
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest
from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm import tqdm

import fgbg.cli
import fgbg.progress
import fgbg.training.callbacks.progress
from fgbg.cli import quiet_libraries
from fgbg.progress import LogProgress, format_duration, progress
from fgbg.training.callbacks import TrainingProgress
from tests.helpers.paths import ROOT


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0s"), (59.6, "1m00s"), (185, "3m05s"), (7620, "2h07m")])
def test_durations_read_as_hours_minutes_seconds(seconds, text):
    assert format_duration(seconds) == text


def test_log_progress_logs_a_first_line_one_per_interval_and_a_last_one(caplog):
    caplog.set_level(logging.INFO, logger="fgbg.progress")
    with LogProgress(total=4, desc="writing", unit="composite", every_s=0) as bar:
        bar.update(1)
        bar.update(3)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "writing: 4 composites"
    assert re.fullmatch(r"writing: 1/4 composites \(25%\), [\d.,]+/s, \d+s left", lines[1]), lines
    assert lines[2].startswith("writing: 4/4 composites (100%), ")
    assert re.fullmatch(r"writing: 4/4 composites \(100%\), in \d+s", lines[3]) and len(lines) == 4


def test_log_progress_wraps_an_iterable_and_a_disabled_one_is_silent(caplog):
    caplog.set_level(logging.INFO, logger="fgbg.progress")
    assert list(LogProgress(range(3), desc="reading", every_s=3600)) == [0, 1, 2]
    assert [r.getMessage() for r in caplog.records][-1].startswith("reading: 3/3 its (100%), in ")
    caplog.clear()
    silent = LogProgress(total=2, desc="quiet", disable=True, every_s=0)
    silent.update(2)
    silent.close()
    assert silent.n == 2 and not caplog.records


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_is_a_bar_on_a_terminal_and_log_lines_elsewhere(monkeypatch, terminal):
    monkeypatch.setattr(fgbg.progress, "is_terminal", lambda: terminal)
    bar = progress(total=2, desc="x", enabled=False)
    assert isinstance(bar, tqdm if terminal else LogProgress)
    bar.close()


def _trainer(**kw):
    state, bar = SimpleNamespace(fn="fit"), TQDMProgressBar()
    return SimpleNamespace(progress_bar_callback=bar, callback_metrics={}, state=state, callbacks=[], **kw)


def _progress(line=()) -> TrainingProgress:
    return TrainingProgress(bar={"loss": "train/loss", "val_iou": "val/mask_iou"}, epoch_line=list(line), every_s=10)


@pytest.mark.parametrize("terminal", [True, False])
def test_the_bar_shows_the_configured_items_or_is_off_away_from_a_terminal(monkeypatch, terminal):
    monkeypatch.setattr(fgbg.training.callbacks.progress, "is_terminal", lambda: terminal)
    trainer, callback = _trainer(), _progress()
    trainer.callback_metrics = {"train/loss": 0.5, "val/mask_iou": 0.25, "val/loss": 1.0}
    callback.setup(trainer, None, "fit")
    bar = trainer.progress_bar_callback
    assert bar.is_disabled != terminal and callback.lines != terminal
    if terminal:  # no v_num, only what conf/callbacks/default.yaml names
        assert bar.get_metrics(trainer, None) == {"loss": 0.5, "val_iou": 0.25}


def test_the_epoch_line_shows_the_logged_metrics_and_the_first_logged_alternative():
    callback = _progress(line=["val/mask_iou", "val_perturbed/mask_iou", "val/depth_rmse_m|val/depth_rmse"])
    text = callback.metrics_text({"val/mask_iou": 0.81234, "val/depth_rmse": 0.1})
    assert text == "val/mask_iou 0.8123  val/depth_rmse 0.1000"
    both = callback.metrics_text({"val/depth_rmse_m": 2.5, "val/depth_rmse": 0.1})
    assert both == "val/depth_rmse_m 2.5000"


def test_time_left_follows_the_pace_of_the_steps_so_far(monkeypatch):
    callback, now = _progress(), [100.0]
    monkeypatch.setattr(fgbg.training.callbacks.progress.time, "monotonic", lambda: now[0])
    trainer = _trainer(global_step=10, estimated_stepping_batches=50)
    callback.on_train_start(trainer, None)  # resumed at step 10
    assert callback.time_left(trainer) is None
    trainer.global_step, now[0] = 20, 120.0  # 10 steps in 20 s, 30 to go
    assert callback.time_left(trainer) == pytest.approx(60.0)


@pytest.fixture
def lightning_lines(caplog):
    """The records of Lightning's info loggers (which do not propagate to the root logger); their filters removed
    afterwards."""
    loggers = [logging.getLogger(name) for name in fgbg.cli.LIGHTNING_LOGGERS]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)
        logger.removeFilter(fgbg.cli._HARMLESS_LINES)


def test_quiet_libraries_filters_the_listed_warnings_and_lines_only(lightning_lines):
    with warnings.catch_warnings(record=True) as shown:  # the filters are undone on leaving
        warnings.simplefilter("always")
        quiet_libraries()
        warnings.warn("The number of training batches (2) is smaller than the logging interval Trainer(...)")
        warnings.warn("something else")
    assert [str(w.message) for w in shown] == ["something else"]
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    for line in ["💡 Tip: For seamless cloud logging", "GPU available: False, used: False", "Epoch 3 done"]:
        rank_zero.info(line)
    logging.getLogger("lightning.fabric.utilities.seed").info("Seed set to 0")
    assert {r.getMessage() for r in lightning_lines.records} == {"Epoch 3 done"}  # maybe twice: root's handler too


# Entry points as a user runs them with output to a file (nohup, SLURM): pipes, not a terminal.


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "false"}
    done = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


TRAIN = ["data.strategy=40k", "data.num_workers=0", "data.image_size=16", "trainer.accelerator=cpu", "test=false"]

# What an ordinary run printed before, each harmless (fgbg/cli.py says why).
LISTED = [
    "💡 Tip",  # litlogger / litmodels
    "was configured so 100%",
    "The anonymous setting has no effect",
    "LeafSpec",
    "Total FLOPs: 0",
    "smaller than the logging interval",
    "Seed set to",
    "GPU available: False",
    "TPU available: False",
]


@pytest.fixture(scope="module")
def two_epochs(small_dataset, tmp_path_factory) -> str:
    """Everything a two-epoch run (about 7 training batches each, fewer than log_every_n_steps) printed, with
    wandb and the model summary on, and a training line per batch (every_s=0)."""
    out = tmp_path_factory.mktemp("two_epochs")
    return _run("train.py", f"data.data_dir={small_dataset}", *TRAIN, "data.batch_size=64", "trainer.max_epochs=2",
                "trainer.limit_val_batches=1", "logger=many", "callbacks.progress.every_s=0", f"hydra.run.dir={out}")


@pytest.mark.slow
def test_training_to_a_file_prints_lines_not_a_bar(two_epochs):
    assert "\r" not in two_epochs
    epochs = re.findall(r"epoch (\d)/1, step \d+: .*val/mask_iou \d\.\d{4} .*\(\d+s left\)", two_epochs)
    assert epochs == ["0", "1"], two_epochs[-3000:]
    assert re.search(r"epoch 0/1, step 1, batch 1/\d+: loss \d+\.\d{4}", two_epochs)


@pytest.mark.slow
@pytest.mark.parametrize("text", LISTED)
def test_a_run_prints_none_of_the_harmless_warnings(two_epochs, text):
    assert text not in two_epochs


@pytest.mark.slow
def test_verbose_brings_them_back(small_dataset, tmp_path):
    printed = _run("train.py", f"data.data_dir={small_dataset}", *TRAIN, "trainer.fast_dev_run=1", "logger=csv",
                   "trainer.enable_model_summary=false", "verbose=true", f"hydra.run.dir={tmp_path}")
    assert "Seed set to 0" in printed and "💡 Tip" in printed


def test_generation_to_a_file_prints_lines_not_a_bar(tmp_path):
    printed = _run("generate.py", "n_bg=2", "n_fg=3", "placements=1", f"out_dir={tmp_path / 'out'}", "workers=1",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert "\r" not in printed
    assert "1 of 1 zips to write: 12 composites" in printed
    assert re.search(r"1 of 1 zips to write: 12/12 composites \(100%\), in \d+s", printed), printed

import csv
import logging
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from fgbg.tasks.train import train
from fgbg.training.module import CheckpointError
from tests.helpers.configs import compose_config, train_config
from tests.helpers.paths import ROOT


@pytest.mark.parametrize("model", ["net", "convgen"])
def test_fast_dev_run_each_model(small_dataset, tmp_path, model):
    cfg = train_config(small_dataset, tmp_path, f"model={model}", "trainer.fast_dev_run=true", "data.image_size=16")
    metrics = train(cfg)
    for key in ("train/loss", "val/loss", "test/loss", "test/loss_mask", "test/loss_depth"):
        assert key in metrics and torch.isfinite(torch.tensor(metrics[key]))
    split = (tmp_path / "split.json").read_text()
    assert '"strategy": "40k"' in split


def _read_metrics(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_loss_goes_down_on_sample_data(small_dataset, tmp_path):
    cfg = train_config(
        small_dataset, tmp_path, "model=convgen", "optimizer=adam", "trainer.max_epochs=5", "test=false",
        "data.image_size=16", "callbacks=none",
    )
    train(cfg)
    rows = [r for r in _read_metrics(tmp_path / "csv" / "metrics.csv") if r.get("train/loss_mask_epoch")]
    first, last = rows[0], rows[-1]
    for key in ("train/loss_mask_epoch", "train/loss_depth_epoch"):
        assert float(last[key]) < 0.8 * float(first[key]), (key, first[key], last[key])


def test_resume_continues_the_step_count(small_dataset, tmp_path):
    common = ["model=convgen", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "test=false"]
    train(train_config(small_dataset, tmp_path / "a", *common, "trainer.max_epochs=1"))
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 3
    given = ["trainer.max_epochs=2", f"ckpt_path={last}"]  # what Hydra records as the command line's
    train(train_config(small_dataset, tmp_path / "b", *common, *given), overrides=given)
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 6 and resumed["epoch"] == 1


def test_resume_needs_only_the_checkpoint_path(small_dataset, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fgbg")
    first = train_config(small_dataset, tmp_path / "a", "model=net", "data.image_size=16", "trainer.max_epochs=1",
                         "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false")
    train(first)  # it saves its config in the run folder, as a resume reads it
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    # The run's data and model (net, not the default convgen, whose weights would not fit), plus what is given.
    given = [f"ckpt_path={last}", f"paths.output_dir={tmp_path / 'b'}", "trainer.max_epochs=2"]
    train(compose_config("train", given), overrides=given)
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 4 and resumed["epoch"] == 1
    assert "given here: ckpt_path=" in caplog.text and "trainer.max_epochs=2" in caplog.text
    saved = OmegaConf.load(tmp_path / "b" / ".hydra" / "config.yaml")  # what a resume from b reads
    assert saved.model._target_.endswith(".Net") and saved.trainer.max_epochs == 2
    assert saved.data.data_dir == str(small_dataset) and saved.ckpt_path == str(last)


def test_wandb_runs_offline_without_an_account(small_dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    # Not fast_dev_run: it swaps every logger for a dummy.
    one_step = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false"]
    cfg = train_config(small_dataset, tmp_path / "run", "model=convgen", "logger=wandb", *one_step)
    train(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


@pytest.mark.slow
def test_two_job_multirun_gets_two_folders(small_dataset, tmp_path):
    sweep = tmp_path / "sweep"
    command = [
        sys.executable, "train.py", "-m", "model=net,convgen", "logger=csv", "test=false", "trainer.max_epochs=1",
        "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
        f"data.data_dir={small_dataset}", "data.strategy=40k", "data.num_workers=0", "data.image_size=16",
        "data.batch_size=4", "trainer.accelerator=cpu", f"hydra.sweep.dir={sweep}",
    ]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    assert "- model=net" in (sweep / "0" / ".hydra" / "overrides.yaml").read_text()
    assert "- model=convgen" in (sweep / "1" / ".hydra" / "overrides.yaml").read_text()
    for job in jobs:
        assert (sweep / job / "csv" / "metrics.csv").exists() and (sweep / job / "split.json").exists()


def test_a_ckpt_path_that_is_not_a_checkpoint_is_refused_before_training(small_dataset, tmp_path):
    empty = tmp_path / "last.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{empty}: not a checkpoint of train.py"):
        train(train_config(small_dataset, tmp_path / "run", f"ckpt_path={empty}"))
    assert not (tmp_path / "run" / "split.json").exists()

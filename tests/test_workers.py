import sys

import pytest
from omegaconf import OmegaConf

import fgbg.data.workers as workers
from fgbg.errors import ConfigError
from fgbg.tasks.train import train
from tests.helpers.configs import datamodule, train_config


@pytest.mark.parametrize(
    ("cores", "gpu", "expected"),
    [(1, False, 0), (2, False, 0), (4, False, 1), (64, False, 1), (2, True, 1), (16, True, 8), (4, True, 3)],
)
def test_auto_workers(cores, gpu, expected):
    assert workers.auto_workers(cores, gpu) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [("many", "data.num_workers='many': expected a whole number >= 0 or auto"), (-1, "data.num_workers=-1")],
)
def test_a_bad_worker_count_names_the_key(value, message):
    with pytest.raises(ConfigError, match=message):
        workers.num_workers(value)


def test_auto_resolves_to_a_number_recorded_in_the_run_config(small_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "available_cores", lambda: 4)
    monkeypatch.setattr(workers.torch.cuda, "is_available", lambda: False)
    cfg = train_config(
        small_dataset, tmp_path, "data.num_workers=auto", "data.image_size=16", "trainer.max_epochs=1",
        "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false", "callbacks=none",
    )
    train(cfg)
    saved = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert saved.data.num_workers == 1
    logged = OmegaConf.load(tmp_path / "csv" / "hparams.yaml")
    assert logged.data.num_workers == 1


@pytest.mark.parametrize("seed_workers", ["0", "1"])
def test_worker_init_shortens_the_switch_interval_and_seeds_as_lightning_would(monkeypatch, seed_workers):
    seeded = []
    monkeypatch.setattr(workers, "pl_worker_init_function", seeded.append)
    monkeypatch.setenv("PL_SEED_WORKERS", seed_workers)
    before = sys.getswitchinterval()
    try:
        workers.worker_init(3)
        assert sys.getswitchinterval() == pytest.approx(workers.HANDOVER_SWITCH_INTERVAL)
    finally:
        sys.setswitchinterval(before)
    assert seeded == ([3] if seed_workers == "1" else [])


def test_the_training_loader_workers_run_worker_init(small_dataset):
    dm = datamodule(small_dataset, "data.num_workers=1", "data.batch_size=4")
    assert dm.train_dataloader().worker_init_fn is workers.worker_init

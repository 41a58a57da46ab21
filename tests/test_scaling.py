"""Past one process: Hydra's joblib launcher for generation, Lightning's DDP for training (on CPU here)."""

import subprocess
import sys

import pytest
from hydra.utils import instantiate

from fgbg.training.module import build_module
from tests.helpers.configs import train_config
from tests.helpers.data import SMALL, make_dataset
from tests.helpers.paths import ROOT


@pytest.mark.slow
def test_joblib_sharded_generation_is_byte_identical(tmp_path):
    out = tmp_path / "sharded"
    command = [
        sys.executable, "generate.py", "-m", "batch=1,2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        f"n_bg={SMALL.n_bg}", f"n_fg={SMALL.n_fg}", f"placements={SMALL.placements}", f"seed={SMALL.seed}",
        f"jpeg_quality={SMALL.jpeg_quality}", f"out_dir={out}", "progress=false", f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    single = make_dataset(tmp_path / "single", workers=1)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single)
    for path in single:
        assert (out / path.name).read_bytes() == path.read_bytes()


@pytest.mark.slow
def test_ddp_spawn_metrics_equal_a_single_process(small_dataset, tmp_path):
    # val: 2 held-out backgrounds x 1 foreground x 2 flips x 2 placements = 8 samples, 2 batches per rank.
    overrides = ["model=convgen", "data.batch_size=2", "data.image_size=16", "logger=none", "callbacks=none"]
    cfg = train_config(small_dataset, tmp_path, *overrides)
    module = build_module(cfg)

    def validate(**trainer_args):
        trainer = instantiate(cfg.trainer, logger=False, **trainer_args)
        return trainer.validate(module, datamodule=instantiate(cfg.data), verbose=False)[0]

    single = validate(devices=1)
    spawned = validate(devices=2, strategy="ddp_spawn")
    assert set(single) == set(spawned)
    for key, value in single.items():
        assert spawned[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_train_py_with_ddp_on_two_processes(small_dataset, tmp_path):
    command = [
        sys.executable, "train.py", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false", "model=convgen",
        f"data.data_dir={small_dataset}", "data.strategy=40k", "data.num_workers=0", "data.image_size=16",
        "data.batch_size=4", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "logger=csv", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert "test/loss" in (tmp_path / "csv" / "metrics.csv").read_text()
